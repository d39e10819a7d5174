"""What ``make run`` and ``make run-cluster`` start: every Engine Jobs process for local development.

The processes are listed in :func:`processes`, like a Procfile: the engine,
then the admin gateway in front of it. ``--cluster`` (``make run-cluster``)
starts a throwaway PostgreSQL first (:mod:`deploy.local_postgres`, data under
``var/cluster/pg``, deleted when it stops), applies the schema with
``engine-hub db migrate``, then two engine nodes on it (sharing one admin
token file) and one gateway given both nodes' URLs; all its state is under
``var/cluster/``. The store URL holds a password, so it reaches migrate and
the nodes as ``ENGINE_STORE_URL``, never on a command line. Before anything starts:

- ``SAFE_MODE`` (if set) must be a recognised value and every port must be
  free, so a mistake is one clear line, not a crash loop;
- with ``--cluster``, PostgreSQL's server binaries must exist (one line
  naming the Debian package ``postgresql`` otherwise);
- the engine's admin token is generated once into ``var/engine/token``
  (mode 0600), unless ``ENGINE_HUB_TOKEN`` is set; the gateway gets the
  token *file* (``--engine-token-file``), never the token on a command line;
- if the gateway has no user at all, ``admin`` (super_admin) is created
  with a random password, which is printed once.

Each process writes to this terminal (readable console logs on a TTY).
Ctrl-C or SIGTERM stops them all (then PostgreSQL, with ``pg_ctl stop``);
when one exits on its own the others are stopped too, and ``make run``
exits with its status. The panel URL is printed once the gateway answers.

SAFE_MODE stays **on** unless you say otherwise: ``SAFE_MODE=off make run``.
Ports: ``ENGINE_PORT`` (8090), ``ENGINE_PORT_2`` (the second node's, 8091)
and ``GATEWAY_PORT`` (8080); PostgreSQL takes any free one.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final

import attrs

from admin_gateway.auth.users import UserStore
from admin_gateway.settings import SettingsError, parse_safe_mode
from deploy.local_postgres import MISSING, PostgresServer, find_bindir, start_server
from engine_hub.errors import ConfigError
from engine_hub.http.auth import load_or_create_token_file
from engine_hub.settings import STORE_URL_ENV, TOKEN_ENV, TOKEN_FILE
from shared.pg import redact

ROOT: Final = Path(__file__).resolve().parent.parent
#: How long a process gets to stop after SIGTERM before it is killed.
STOP_GRACE: Final = 15.0
#: The database the cluster's nodes share, in the throwaway PostgreSQL.
CLUSTER_DB: Final = "engine"


@attrs.frozen(kw_only=True)
class Process:
    """One process to supervise: its name, argv, and the URL that answers once it is up."""

    name: str
    argv: tuple[str, ...]
    port: int
    health_url: str | None = None


@attrs.frozen(kw_only=True)
class Layout:
    """Where a development run keeps its state and which ports it uses: one engine port, or one per node."""

    var: Path
    engine_ports: tuple[int, ...]
    gateway_port: int

    @property
    def cluster(self) -> bool:
        """Several engine nodes (on PostgreSQL) rather than one engine with its journal."""
        return len(self.engine_ports) > 1

    @property
    def engine_dir(self) -> Path:
        """The engine's data dir (journal, token); in a cluster, the home of the nodes' shared token."""
        return self.var / "engine"

    @property
    def postgres_dir(self) -> Path:
        """The throwaway PostgreSQL's directory (a cluster only)."""
        return self.var / "pg"

    def engines(self) -> list[tuple[str, int, str]]:
        """Each engine's name, port, and the environment variable that sets that port."""
        if not self.cluster:
            return [("engine", self.engine_ports[0], "ENGINE_PORT")]
        return [
            (f"node-{n}", port, "ENGINE_PORT" if n == 1 else f"ENGINE_PORT_{n}")
            for n, port in enumerate(self.engine_ports, 1)
        ]

    def ports(self) -> list[tuple[str, int, str]]:
        """:meth:`engines`, then the gateway's name, port and port variable."""
        return [*self.engines(), ("gateway", self.gateway_port, "GATEWAY_PORT")]

    @property
    def gateway_dir(self) -> Path:
        """The gateway's data dir (users)."""
        return self.var / "gateway"


def processes(layout: Layout, *, token_file: Path | None) -> list[Process]:
    """The processes of a development run, in start order.

    ``token_file`` is handed to every engine and the gateway; ``None`` means
    the token comes from ``ENGINE_HUB_TOKEN`` in the environment. A cluster's
    nodes find their store in the environment too (``ENGINE_STORE_URL``).
    """
    engines: list[Process] = []
    for name, port, _ in layout.engines():
        url = f"http://127.0.0.1:{port}"
        data_dir = layout.engine_dir if name == "engine" else layout.var / name
        argv = [
            sys.executable,
            "-m",
            "engine_hub",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ]
        if token_file is not None:
            argv += ["--token-file", str(token_file)]
        engines.append(Process(name=name, port=port, health_url=f"{url}/healthz", argv=tuple(argv)))
    gateway = [
        sys.executable,
        "-m",
        "admin_gateway",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(layout.gateway_port),
        "--data-dir",
        str(layout.gateway_dir),
    ]
    for _, port, _ in layout.engines():
        gateway += ["--engine-url", f"http://127.0.0.1:{port}"]
    if token_file is not None:
        gateway += ["--engine-token-file", str(token_file)]
    return [
        *engines,
        Process(
            name="gateway",
            port=layout.gateway_port,
            argv=tuple(gateway),
            health_url=f"http://127.0.0.1:{layout.gateway_port}/healthz",
        ),
    ]


def migrate_store(server: PostgresServer, env: dict[str, str]) -> None:
    """Create the nodes' database, set ``ENGINE_STORE_URL`` in ``env``, and apply the schema with it.

    The URL travels in the environment, never on a command line: it holds the password.
    Raises ``RuntimeError`` with ``engine-hub db migrate``'s own one-line error when it fails.
    """
    env[STORE_URL_ENV] = server.create_database(name=CLUSTER_DB)
    done = subprocess.run(
        [sys.executable, "-m", "engine_hub", "db", "migrate"],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or f"engine-hub db migrate exited with status {done.returncode}")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def _stop(running: dict[str, subprocess.Popen[bytes]]) -> None:
    # Stop in reverse start order: the gateway before the engine it talks to.
    for proc in reversed(running.values()):
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for proc in running.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _banner(
    layout: Layout, *, password: str | None, safe_mode: bool, token_file: Path | None, store: PostgresServer | None
) -> str:
    panel = f"http://127.0.0.1:{layout.gateway_port}/admin/engine/jobs"
    command = "make run-cluster" if layout.cluster else "make run"
    lines = ["", "=" * 76, f"  panel:   {panel}"]
    if password is not None:
        lines += [
            f"  login:   admin / {password}   (shown only this once)",
            "           a one-time password: the panel has you choose your own at the first sign-in",
        ]
    lines += [
        "  SAFE_MODE: "
        + (
            f"ON: no job can be started (SAFE_MODE=off {command} allows runs)"
            if safe_mode
            else "OFF: super admins can start READY jobs"
        ),
        ("  engines: " if layout.cluster else "  engine:  ")
        + ", ".join(f"http://127.0.0.1:{port}" for port in layout.engine_ports)
        + "   (demo job types: demo.sleep, demo.echo, demo.fail)",
    ]
    if store is not None:
        lines += [
            f"  store:   {redact(store.url(CLUSTER_DB))}   (throwaway: deleted at Ctrl-C)",
            f"           psql -h {store.socket_dir} -p {store.port} -U postgres {CLUSTER_DB}",
        ]
    if token_file is not None:
        lines.append(f"  token:   {token_file}   export {TOKEN_ENV}=$(cat {token_file})")
    lines += ["  stop:    Ctrl-C", "=" * 76, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Check, prepare, start every process, print where to reach them, and supervise them."""
    parser = argparse.ArgumentParser(prog="make run", description="Run the engine and the admin gateway.")
    parser.add_argument("--var", type=Path, default=ROOT / "var", help="state directory (default ./var)")
    parser.add_argument("--engine-port", type=int, default=int(os.environ.get("ENGINE_PORT", "8090")))
    parser.add_argument("--gateway-port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8080")))
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="two engine nodes on a throwaway PostgreSQL, state under <var>/cluster (make run-cluster)",
    )
    parser.add_argument(
        "--engine-port-2",
        type=int,
        default=None,
        help="the second node's port with --cluster (default $ENGINE_PORT_2, else the first node's + 1)",
    )
    args = parser.parse_args(argv)
    if args.cluster:
        second = args.engine_port_2 or int(os.environ.get("ENGINE_PORT_2") or args.engine_port + 1)
        layout = Layout(
            var=args.var / "cluster", engine_ports=(args.engine_port, second), gateway_port=args.gateway_port
        )
    else:
        layout = Layout(var=args.var, engine_ports=(args.engine_port,), gateway_port=args.gateway_port)

    try:
        safe_mode = parse_safe_mode(os.environ["SAFE_MODE"]) if "SAFE_MODE" in os.environ else True
    except SettingsError as exc:
        print(f"devrun: error: {exc}", file=sys.stderr)
        return 2
    bindir: Path | None = None
    if layout.cluster:
        bindir = find_bindir()
        if bindir is None:
            print(f"devrun: error: {MISSING}", file=sys.stderr)
            return 2
    env = dict(os.environ)
    token_file: Path | None = None
    if not env.get(TOKEN_ENV):
        token_file = layout.engine_dir / TOKEN_FILE
        try:
            load_or_create_token_file(token_file)  # the engine reads this same file
        except ConfigError as exc:
            print(f"devrun: error: {exc}", file=sys.stderr)
            return 2
    for name, port, port_env in layout.ports():
        if not _port_free(port):
            print(
                f"devrun: error: port {port} for the {name} is in use (set {port_env} to use another)", file=sys.stderr
            )
            return 2
    password = UserStore(layout.gateway_dir).ensure_admin("admin")

    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # children get the terminal's Ctrl-C themselves
    running: dict[str, subprocess.Popen[bytes]] = {}
    store: PostgresServer | None = None
    try:
        if bindir is not None:
            try:
                store = start_server(bindir, root=layout.postgres_dir)
                migrate_store(store, env)
            except RuntimeError as exc:
                if stopping:
                    return 0
                print(f"devrun: error: PostgreSQL: {exc}", file=sys.stderr)
                return 1
        for spec in processes(layout, token_file=token_file):
            running[spec.name] = subprocess.Popen(spec.argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
            if spec.health_url is not None and not _wait_healthy(spec.health_url, running[spec.name]):
                if stopping:
                    return 0
                print(f"devrun: error: {spec.name} did not become healthy at {spec.health_url}", file=sys.stderr)
                return 1
        print(_banner(layout, password=password, safe_mode=safe_mode, token_file=token_file, store=store), flush=True)
        while not stopping:
            for name, proc in running.items():
                if proc.poll() is not None:
                    print(f"devrun: {name} exited with status {proc.returncode}; stopping the others", file=sys.stderr)
                    return proc.returncode or 1
            time.sleep(0.2)
        return 0
    finally:
        _stop(running)
        if store is not None:
            # After the nodes: they get to finish with the database before it goes.
            store.stop(mode="fast")


if __name__ == "__main__":
    raise SystemExit(main())
