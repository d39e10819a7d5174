"""Several real ``engine-hub serve`` nodes on one PostgreSQL database, and gateways in front of them.

A :class:`Cluster` is the scale-out product as an operator runs it
(docs/scale-out.md), from the installed wheel: ``nodes`` engine nodes
started with ``ENGINE_STORE_URL`` (never ``--store`` on a command line: it
may hold a password) and fast liveness timing (:data:`HEARTBEAT`,
:data:`LOST_AFTER`), the catalog of :func:`tests.e2e.harness.write_catalog`
plus two types of its own:

- :data:`COUNT_TYPE` appends one line per *process start* to
  ``<markers>/<JOB_ID>`` and then sleeps ``seconds``: a test counts runs by
  counting lines, not answers;
- :data:`FAMILY_TYPE` starts a grandchild, writes its pid to
  ``<markers>/<JOB_ID>.pid`` and sleeps: a cancel must end both.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from tests.e2e.harness import (
    ENGINE_TOKEN,
    EngineApi,
    Panel,
    Service,
    free_port,
    gateway_service,
    poll,
    wait_until,
    write_catalog,
)
from tests.e2e.install import Installation

#: Liveness timing of the test nodes (seconds): the real defaults are 5 and 30.
HEARTBEAT: Final = 0.5
LOST_AFTER: Final = 3.0
COUNT_TYPE: Final = "cluster.count"
FAMILY_TYPE: Final = "cluster.family"

_COUNT = (
    "import os, time\n"
    "with open(os.path.join(os.environ['E2E_MARKER_DIR'], os.environ['JOB_ID']), 'a') as f:\n"
    "    f.write(f'ran {os.getpid()}\\n')\n"
    "time.sleep(int(os.environ['JOB_PARAM_SECONDS']))\n"
)
_FAMILY = (
    "import os, subprocess, sys, time\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "open(os.path.join(os.environ['E2E_MARKER_DIR'], os.environ['JOB_ID'] + '.pid'), 'w').write(str(p.pid))\n"
    "time.sleep(600)\n"
)


def _type(name: str, code: str, markers: Path, *, seconds: bool) -> str:
    lines = [
        "[[types]]",
        f"name = {json.dumps(name)}",
        f'command = [{json.dumps(sys.executable)}, "-c", {json.dumps(code)}]',
        "timeout = 600",
        f"env = {{ E2E_MARKER_DIR = {json.dumps(str(markers))} }}",
    ]
    if seconds:
        lines += ["", "[[types.params]]", 'name = "seconds"', 'type = "int"', "default = 0", "min = 0", "max = 600"]
    return "\n".join(lines) + "\n"


class Cluster:
    """``nodes`` engine nodes on the database at ``store_url``, and gateways added by :meth:`add_gateway`."""

    def __init__(self, root: Path, install: Installation, *, store_url: str, nodes: int) -> None:
        self.root = root
        self.install = install
        self.store_url = store_url
        self.logs = root / "logs"
        self.markers = root / "markers"
        for d in (self.logs, self.markers):
            d.mkdir(parents=True, exist_ok=True)
        catalog = write_catalog(root / "catalog.toml", self.markers)
        with catalog.open("a") as f:
            f.write("\n" + _type(COUNT_TYPE, _COUNT, self.markers, seconds=True))
            f.write("\n" + _type(FAMILY_TYPE, _FAMILY, self.markers, seconds=False))
        self.token_file = root / "engine-token"
        self.token_file.write_text(ENGINE_TOKEN + "\n")
        self.token_file.chmod(0o600)
        self.nodes = [self._node(f"node{i}", catalog) for i in range(nodes)]
        self.gateways: dict[str, Service] = {}

    def _node(self, name: str, catalog: Path) -> Service:
        port = free_port()
        argv = [
            str(self.install.bin / "engine-hub"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--config",
            str(catalog),
            "--data-dir",
            str(self.root / name),
            "--kill-grace",
            "1",
            "--node-heartbeat",
            str(HEARTBEAT),
            "--node-lost-after",
            str(LOST_AFTER),
        ]
        env = {"ENGINE_HUB_TOKEN": ENGINE_TOKEN, "ENGINE_STORE_URL": self.store_url}
        return Service(name, argv, port=port, log_dir=self.logs, env=env, cwd=self.root)

    def start(self) -> Cluster:
        """Start every node."""
        for node in self.nodes:
            node.start()
        return self

    def add_gateway(self, name: str, *, nodes: Sequence[int], safe_mode: bool = False) -> Service:
        """Start a gateway that calls the given nodes, in that failover order."""
        urls = [self.nodes[i].url for i in nodes]
        gateway = gateway_service(
            self.root, self.install, name, engine_urls=urls, token_file=self.token_file, safe_mode=safe_mode
        )
        self.gateways[name] = gateway
        return gateway.start()

    def api(self, node: int) -> EngineApi:
        """An admin client of node ``node``."""
        return EngineApi(self.nodes[node].url, ENGINE_TOKEN)

    def panel(self, gateway: str) -> Panel:
        """A signed-in client of gateway ``gateway``."""
        panel = Panel(self.gateways[gateway].url)
        answer = panel.login()
        assert answer.status == 303, answer
        return panel

    def runs(self, job_id: str) -> int:
        """How many processes of a :data:`COUNT_TYPE` job started (lines in its marker file)."""
        path = self.markers / job_id
        return len(path.read_text().splitlines()) if path.exists() else 0

    def events(self, node: int) -> list[dict[str, Any]]:
        """Every JSON log event node ``node`` printed so far."""
        out = []
        for line in self.nodes[node].log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def wait_event(self, node: int, event: str, *, timeout: float, **fields: Any) -> dict[str, Any]:
        """Wait until node ``node`` logged ``event`` with ``fields``; return it."""

        def found() -> dict[str, Any] | None:
            for e in self.events(node):
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items()):
                    return e
            return None

        return poll(found, lambda e: e is not None, timeout=timeout, what=f"{self.nodes[node].name} logs {event}") or {}

    def log_tails(self) -> str:
        """The last lines of every process's output."""
        services = [*self.nodes, *self.gateways.values()]
        return "\n\n".join(f"--- {s.name} ({s.log_path}) ---\n{s.log_tail()}" for s in services)

    def stop(self) -> None:
        """Stop the gateways, then every node still running (each stops its runs)."""
        for service in [*self.gateways.values(), *self.nodes]:
            if service.proc is not None and service.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(service.pid, signal.SIGCONT)  # a test may leave one frozen
            service.stop()


@contextlib.contextmanager
def running_cluster(root: Path, install: Installation, *, store_url: str, nodes: int) -> Iterator[Cluster]:
    """Start a :class:`Cluster`; stop every process on exit, whatever happened."""
    cluster = Cluster(root, install, store_url=store_url, nodes=nodes)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(pid: int, *, timeout: float) -> float:
    """Wait until ``pid`` is gone; return how long it took (seconds)."""
    started = time.monotonic()
    wait_until(lambda: not pid_alive(pid), timeout=timeout, interval=0.01, what=f"process {pid} gone")
    return time.monotonic() - started
