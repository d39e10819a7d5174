"""Benchmark: failure times of a cluster on PostgreSQL (issue 13).

    .venv/bin/python -m bench.failover [--reps 5] [--default-reps 5] [--timings 5:30,0.5:3]
        [--only interrupted|gateway] [--gateway-total-timeout S]

A throwaway PostgreSQL (:mod:`deploy.local_postgres`), migrated as ``make
run-cluster`` does (:func:`deploy.devrun.migrate_store`), then, for each
``heartbeat:lost_after`` pair of ``--timings`` (default: the product's
defaults 5 s / 30 s, then the tests' 0.5 s / 3 s), two real ``engine-hub
serve`` nodes and one ``admin-gateway serve`` given both URLs, all started
from this venv's console scripts:

1. **SIGKILL -> interrupted.** A ``demo.sleep`` job is run on node A (A's own
   API); after a random fraction of a heartbeat, A's process is SIGKILLed;
   node B is polled every 50 ms until the job reads FAILED ``interrupted:
   node lost``. The time is split with the ``nodes`` row of A and the job's
   ``endedAt``: the age of A's last heartbeat at the kill, the wait for the
   threshold, the wait for B's next heartbeat (the sweep follows it), and
   the poll. Target: <= threshold + 2 heartbeats.
2. **Gateway failover.** Signed in as a super_admin through the login form,
   a client lists ``/api/admin/engine/jobs`` every 50 ms; the node the
   gateway currently uses is sent SIGKILL (a dead node) or SIGSTOP (a hung
   one: connections are accepted by the kernel, nothing answers), and a RUN
   of a READY job is sent through the gateway right after, repeated until a
   2xx. Reported: the longest gap between two successful list answers, the
   failed list answers, and the RUN's time to a 2xx. Target < 2 s.

Without PostgreSQL's server binaries it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any, Final

import psycopg

from admin_gateway.auth.users import UserStore
from deploy.devrun import CLUSTER_DB, migrate_store
from deploy.local_postgres import MISSING, PostgresServer, find_bindir, free_port, start_server
from engine_hub.settings import STORE_URL_ENV, TOKEN_ENV
from engine_hub.store.nodes import NODE_LOST_ERROR
from shared.contract import parse_time

TOKEN: Final = "bench-failover-token-0123456789abcdef"
#: How often the clients poll (seconds), as the brief of issue 13 asks.
POLL: Final = 0.05
BIN: Final = Path(sys.executable).parent
LIST_PATH: Final = "/api/admin/engine/jobs?limit=50"
#: How long a client waits for one answer: longer than any gateway timeout, so a gap is the gateway's.
CLIENT_TIMEOUT: Final = 30.0


class Proc:
    """One console-script server on a fixed port; it can be killed and started again on that port."""

    def __init__(self, name: str, argv: Sequence[str], *, port: int, logs: Path, env: dict[str, str]) -> None:
        self.name, self.argv, self.port, self.env = name, list(argv), port, env
        self.url = f"http://127.0.0.1:{port}"
        self.log = logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready: bool = False) -> None:
        """Start the process and wait for ``/healthz`` (and ``/readyz`` if ``ready``) to answer 200."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env
            )
        self.wait_ok("/readyz" if ready else "/healthz")

    def wait_ok(self, path: str, timeout: float = 60.0) -> None:
        """Wait until ``GET path`` answers 200; raise with the log's tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            if request("GET", self.url + path, timeout=1)[0] == 200:
                return
            time.sleep(0.05)
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.name}: {path} not 200 within {timeout:g} s:\n{tail}")

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        """Send ``signum``; after SIGKILL, reap the process."""
        os.kill(self.pid, signum)
        if signum == signal.SIGKILL:
            assert self.proc is not None
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGCONT (it may be frozen), SIGTERM, wait; SIGKILL after 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def request(
    method: str,
    url: str,
    *,
    body: Any = None,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    opener: urllib.request.OpenerDirector | None = None,
    timeout: float = CLIENT_TIMEOUT,
) -> tuple[int, bytes]:
    """Send one request; return (status, body), status 0 when there was no HTTP answer (body: the error)."""
    sent = dict(headers or {})
    data: bytes | None = None
    if body is not None:
        data, sent["Content-Type"] = json.dumps(body).encode(), "application/json"
    elif form is not None:
        data, sent["Content-Type"] = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with (opener or urllib.request.build_opener(_NoRedirect())).open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, repr(exc).encode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def describe(status: int, body: bytes) -> str:
    """``status code`` of a failed answer (the JSON error code when there is one)."""
    if status == 0:
        return f"no answer ({body.decode(errors='replace')[:60]})"
    try:
        code = json.loads(body).get("error", {}).get("code")
    except (ValueError, AttributeError):
        code = None
    return f"{status} {code}" if code else str(status)


class Browser:
    """A super_admin signed in through the gateway's login form (cookie jar, CSRF token), as the panel is."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())
        status, page = self.call("GET", "/login", accept="text/html")
        found = re.search(rb'name="csrf_token" value="([^"]+)"', page)
        if status != 200 or found is None:
            raise RuntimeError(f"no login form: {status}")
        form = {"username": user, "password": password, "csrf_token": found.group(1).decode()}
        status, _ = self.call("POST", "/login", form=form, accept="text/html")
        if status != 303:
            raise RuntimeError(f"login answered {status}")
        self.csrf = json.loads(self.call("GET", "/api/admin/config")[1])["csrfToken"]

    def call(
        self, method: str, path: str, *, body: Any = None, form: dict[str, str] | None = None, accept: str = ""
    ) -> tuple[int, bytes]:
        """Send a request with the session cookie (and the CSRF header on an API POST)."""
        headers = {"Accept": accept or "application/json"}
        if method != "GET" and form is None:
            headers["X-CSRF-Token"] = self.csrf
        return request(method, self.url + path, body=body, form=form, headers=headers, opener=self.opener)


def engine_call(node: Proc, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Call a node's API with the admin token; return (status, parsed JSON or None)."""
    status, raw = request(method, node.url + path, body=body, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


class Cluster:
    """Two nodes with the given timing and a gateway calling both (A first), under ``root``."""

    def __init__(
        self, root: Path, store_url: str, *, heartbeat: float, lost_after: float, gateway_args: Sequence[str]
    ) -> None:
        self.heartbeat, self.lost_after = heartbeat, lost_after
        logs = root / "logs"
        logs.mkdir(parents=True)
        token_file = root / "engine-token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        self.nodes = []
        for name in ("A", "B"):
            port = free_port()
            argv = [str(BIN / "engine-hub"), "serve", "--host", "127.0.0.1", "--port", str(port)]
            argv += ["--data-dir", str(root / name), "--token-file", str(token_file), "--kill-grace", "1"]
            argv += ["--node-heartbeat", f"{heartbeat:g}", "--node-lost-after", f"{lost_after:g}"]
            self.nodes.append(Proc(name, argv, port=port, logs=logs, env={**env, STORE_URL_ENV: store_url}))
        gateway_dir = root / "gateway"
        self.password = UserStore(gateway_dir).ensure_admin("admin") or ""
        port = free_port()
        argv = [str(BIN / "admin-gateway"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        for node in self.nodes:
            argv += ["--engine-url", node.url]
        argv += ["--data-dir", str(gateway_dir), "--engine-token-file", str(token_file), *gateway_args]
        self.gateway = Proc("gateway", argv, port=port, logs=logs, env={**env, "SAFE_MODE": "off"})

    def start(self) -> None:
        """Start both nodes (ready to claim), then the gateway."""
        for node in self.nodes:
            node.start(ready=True)
        self.gateway.start()

    def stop(self) -> None:
        """Stop the gateway, then the nodes."""
        for proc in [self.gateway, *self.nodes]:
            proc.stop()

    def gateway_current(self) -> Proc:
        """The node the gateway sends to first: the first URL, or where its last ``engine_failover`` went."""
        current = self.nodes[0]
        for line in self.gateway.log.read_text(errors="replace").splitlines():
            if '"engine_failover"' in line:
                to_url = json.loads(line)["to_url"]
                current = next(n for n in self.nodes if to_url.rstrip("/") == n.url)
        return current


@contextlib.contextmanager
def running(root: Path, store_url: str, **kwargs: Any) -> Iterator[Cluster]:
    """A started :class:`Cluster`, stopped on exit whatever happened."""
    cluster = Cluster(root, store_url, **kwargs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# -- 1. SIGKILL -> interrupted ----------------------------------------------------------


def interrupted_once(cluster: Cluster, server: PostgresServer, db: str) -> dict[str, float]:
    """Kill node A under a running job; return the seconds to FAILED interrupted on B, and its parts."""
    a, b = cluster.nodes
    status, job = engine_call(a, "POST", "/api/jobs", {"type": "demo.sleep", "params": {"seconds": 3600}})
    assert status == 201, (status, job)
    status, answer = engine_call(a, "POST", f"/api/jobs/{job['id']}/run", {})
    assert status == 202, (status, answer)
    time.sleep(random.uniform(0, cluster.heartbeat))  # any phase of A's heartbeat
    killed_wall, killed = time.time(), time.monotonic()
    a.signal(signal.SIGKILL)
    deadline = killed + cluster.lost_after + 4 * cluster.heartbeat + 10
    while True:
        status, seen = engine_call(b, "GET", f"/api/jobs/{job['id']}")
        if status == 200 and seen["status"] == "FAILED" and seen["error"] == NODE_LOST_ERROR:
            detected, detected_wall = time.monotonic(), time.time()
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"job not interrupted after {deadline - killed:.0f} s: {status} {seen}")
        time.sleep(POLL)
    with psycopg.connect(server.url(db), autocommit=True) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM heartbeat_at), extract(epoch FROM lost_at) FROM nodes "
            "WHERE pid = %s ORDER BY started_at DESC LIMIT 1",
            (a.pid,),
        ).fetchone()
    assert row is not None
    beat, lost = float(row[0]), float(row[1])
    ended_at = parse_time(seen["endedAt"])
    assert ended_at is not None
    ended = ended_at.timestamp()
    a.start(ready=True)
    return {
        "total": detected - killed,
        "beat_age": killed_wall - beat,
        "to_threshold": beat + cluster.lost_after - killed_wall,
        "sweep_wait": lost - (beat + cluster.lost_after),
        "poll": detected_wall - ended,
    }


# -- 2. gateway failover ----------------------------------------------------------------


class ListPoller(threading.Thread):
    """Lists jobs through the gateway every :data:`POLL` seconds; keeps (answered at, status, body) of each."""

    def __init__(self, browser: Browser) -> None:
        super().__init__(daemon=True)
        self.browser = browser
        self.answers: list[tuple[float, int, bytes]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            status, body = self.browser.call("GET", LIST_PATH)
            self.answers.append((time.monotonic(), status, b"" if status == 200 else body))
            self.done.wait(POLL)

    def successes_after(self, moment: float) -> int:
        """How many lists succeeded after ``moment`` (monotonic)."""
        return sum(1 for at, status, _ in self.answers if status == 200 and at > moment)


def failover_once(cluster: Cluster, browser: Browser, lister: Browser, signum: int) -> dict[str, Any]:
    """Send ``signum`` to the gateway's current node while listing; RUN right after; restore the node."""
    victim = cluster.gateway_current()
    status, raw = browser.call("POST", "/api/admin/engine/jobs", body={"type": "demo.echo", "params": {}})
    assert status == 201, (status, raw)
    job_id = json.loads(raw)["id"]
    poller = ListPoller(lister)
    poller.start()
    time.sleep(1.0)
    killed = time.monotonic()
    victim.signal(signum)
    run_failures: list[str] = []
    while True:
        status, raw = browser.call("POST", f"/api/admin/engine/jobs/{job_id}/run", body={})
        if 200 <= status < 300:
            break
        run_failures.append(describe(status, raw))
        if time.monotonic() - killed > 60:
            raise RuntimeError(f"no 2xx to the RUN within 60 s: {run_failures}")
    run_time = time.monotonic() - killed
    deadline = time.monotonic() + 60
    while poller.successes_after(killed) < 3 or time.monotonic() < killed + 3:
        if time.monotonic() > deadline:
            raise RuntimeError("the list did not come back within 60 s")
        time.sleep(POLL)
    poller.done.set()
    poller.join()
    answered = [at for at, status, _ in poller.answers if status == 200]
    gap = max(later - earlier for earlier, later in itertools.pairwise(answered))
    list_failures = [describe(status, body) for _, status, body in poller.answers if status != 200]
    if signum == signal.SIGKILL:
        victim.start(ready=True)
    else:
        victim.signal(signal.SIGCONT)
        victim.wait_ok("/readyz")
    return {
        "victim": victim.name,
        "gap": gap,
        "run": run_time,
        "list_failed": list_failures,
        "run_failed": run_failures,
    }


# -- report ------------------------------------------------------------------------------


def _spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def interrupted_table(cluster: Cluster, runs: list[dict[str, float]]) -> str:
    """Markdown rows of the SIGKILL -> interrupted figures (seconds, min / median / max)."""
    target = cluster.lost_after + 2 * cluster.heartbeat
    worst = max(r["total"] for r in runs)
    parts = [
        ("**SIGKILL -> FAILED interrupted, seen on B**", "total"),
        ("A's last heartbeat was this old at the kill", "beat_age"),
        ("kill -> threshold passed (threshold - that age)", "to_threshold"),
        ("threshold passed -> B's sweep (`lost_at`): B's heartbeat phase", "sweep_wait"),
        ("sweep (`endedAt`) -> seen by the 50 ms poll", "poll"),
    ]
    lines = [
        f"heartbeat {cluster.heartbeat:g} s, lost after {cluster.lost_after:g} s, {len(runs)} runs",
        "",
        "| seconds | min / median / max |",
        "|---|---|",
        *(f"| {label} | {_spread([r[key] for r in runs])} |" for label, key in parts),
        "",
        f"Target <= threshold + 2 heartbeats = {target:g} s: **{'met' if worst <= target else 'missed'}** "
        f"(worst {worst:.2f} s).",
    ]
    return "\n".join(lines)


def failover_table(cluster: Cluster, runs: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown rows of the gateway failover figures per signal."""
    argv = cluster.gateway.argv
    timeouts = " ".join(argv[argv.index("--total-timeout") :]) if "--total-timeout" in argv else "default timeouts"
    lines = [
        f"heartbeat {cluster.heartbeat:g} s, lost after {cluster.lost_after:g} s; gateway: {timeouts}",
        "",
        "| node | runs | longest gap between list answers (s) | failed list answers "
        "| RUN right after: to a 2xx (s) | RUN's failed answers | target < 2 s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in runs.items():
        gaps, times = [r["gap"] for r in rows], [r["run"] for r in rows]
        listed = Counter(f for r in rows for f in r["list_failed"])
        ran = Counter(f for r in rows for f in r["run_failed"])
        met = "met" if max(max(gaps), max(times)) < 2 else "**missed**"
        cells = [name, str(len(rows)), _spread(gaps), _counts(listed), _spread(times), _counts(ran), met]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{n} x {what}" for what, n in counter.most_common()) or "none"


def _timings(text: str) -> list[tuple[float, float]]:
    pairs = []
    for item in text.split(","):
        heartbeat, lost_after = item.split(":")
        pairs.append((float(heartbeat), float(lost_after)))
    return pairs


# -- 3. a cancel sent to node B for node A's run ------------------------------------------


def cancel_once(cluster: Cluster) -> float:
    """Run a long job on A, cancel it through B; return the seconds from B's 202 to FAILED as seen on B.

    FAILED is recorded by A after the process group is gone, so this bounds the kill's delay from above.
    """
    a, b = cluster.nodes
    status, job = engine_call(a, "POST", "/api/jobs", {"type": "demo.sleep", "params": {"seconds": 3600}})
    assert status == 201, (status, job)
    status, answer = engine_call(a, "POST", f"/api/jobs/{job['id']}/run", {})
    assert status == 202, (status, answer)
    time.sleep(0.3)  # the process has started
    status, answer = engine_call(b, "POST", f"/api/jobs/{job['id']}/cancel", {})
    assert status == 202, (status, answer)
    asked = time.monotonic()
    while True:
        status, seen = engine_call(b, "GET", f"/api/jobs/{job['id']}")
        if status == 200 and seen["status"] == "FAILED":
            return time.monotonic() - asked
        if time.monotonic() - asked > 30:
            raise RuntimeError(f"cancel not done after 30 s: {status} {seen}")
        time.sleep(0.005)


def cancel_table(seconds: list[float]) -> str:
    """The cancel delays: count, p50, p99, max."""
    ordered = sorted(seconds)
    p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        "| cancel sent to node B, run on node A | runs | p50 | p99 | max |\n|---|---|---|---|---|\n"
        f"| B's 202 to FAILED (cancelled) read on B | {len(ordered)} | {p50 * 1000:.0f} ms | "
        f"{p99 * 1000:.0f} ms | {ordered[-1] * 1000:.0f} ms |"
    )


def measure(server: PostgresServer, store_url: str, root: Path, args: argparse.Namespace) -> None:
    """Run the chosen measurements for each timing pair, printing each table as it is done."""
    gateway_args = [] if args.gateway_total_timeout is None else ["--total-timeout", f"{args.gateway_total_timeout:g}"]
    for index, (heartbeat, lost_after) in enumerate(_timings(args.timings)):
        reps = args.default_reps if (heartbeat, lost_after) == (5.0, 30.0) else args.reps
        kwargs = {"heartbeat": heartbeat, "lost_after": lost_after, "gateway_args": gateway_args}
        with running(root / f"cluster-{index}", store_url, **kwargs) as cluster:
            started = time.monotonic()
            if args.only in (None, "interrupted"):
                # B sweeps only one threshold after it registered; a kill this late is swept on time.
                time.sleep(max(0.0, started + 2 * heartbeat - time.monotonic()))
                done = [interrupted_once(cluster, server, CLUSTER_DB) for _ in range(reps)]
                print(interrupted_table(cluster, done) + "\n", flush=True)
            if args.only in (None, "gateway"):
                browser = Browser(cluster.gateway.url, "admin", cluster.password)
                lister = Browser(cluster.gateway.url, "admin", cluster.password)
                runs = {
                    name: [failover_once(cluster, browser, lister, signum) for _ in range(args.reps)]
                    for name, signum in (("SIGKILL", signal.SIGKILL), ("SIGSTOP", signal.SIGSTOP))
                }
                print(failover_table(cluster, runs) + "\n", flush=True)
            if args.only in (None, "cancel"):
                print(cancel_table([cancel_once(cluster) for _ in range(args.cancel_reps)]) + "\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Measure node-loss and gateway-failover times on a throwaway cluster; 0 (skipped) without PostgreSQL."""
    parser = argparse.ArgumentParser(prog="bench.failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each measurement (default 5)")
    parser.add_argument(
        "--default-reps", type=int, default=5, help="repetitions of SIGKILL -> interrupted at 5:30 (default 5)"
    )
    parser.add_argument("--timings", default="5:30,0.5:3", help="heartbeat:lost_after pairs (default 5:30,0.5:3)")
    parser.add_argument("--only", choices=("interrupted", "gateway", "cancel"), default=None)
    parser.add_argument("--cancel-reps", type=int, default=50, help="cancels across nodes to time (default 50)")
    parser.add_argument("--gateway-total-timeout", type=float, default=None, help="the gateway's --total-timeout")
    parser.add_argument("--keep", type=Path, default=None, help="keep the processes' logs in this new directory")
    args = parser.parse_args(argv)
    bindir = find_bindir()
    if bindir is None:
        print(f"bench.failover: skipped: {MISSING}")
        return 0
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.2f} at the start, Python {sys.version.split()[0]}")
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-failover-"))
    server = start_server(bindir)
    try:
        env = dict(os.environ)
        migrate_store(server, env)
        measure(server, env[STORE_URL_ENV], root, args)
    finally:
        server.stop(mode="fast")
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
