"""Benchmark: the live stream's fan-out through the gateway (issue 14).

    .venv/bin/python -m bench.sse_fanout [--clients 500] [--rate 100] [--seconds 25] [--procs 2]
        [--target gateway|engine] [--keep DIR]

A real ``engine-hub serve`` (embedded store, a temporary data dir) and a real
``admin-gateway serve`` in front of it (SAFE_MODE off), both from this venv's
console scripts. ``--procs`` client processes each sign in once through the
login form (one session each, so the gateway runs with ``--events-per-session``
raised to the clients one process holds) and open their share of ``--clients``
streams on ``GET /api/admin/engine/events`` (aiohttp). Then ``--rate`` jobs a
second are created through the engine's API for ``--seconds`` (each ``POST
/api/jobs`` is one ``job_created`` change). For every ``job_created`` message a
client receives, the latency is its receipt time (wall clock, read once per
chunk the socket gave) minus the job's ``createdAt`` (the engine's record time
of the change, milliseconds). Every client must get every change: the losses
(and duplicates, out-of-order ids, ``reset`` messages, streams that ended) are
counted. The gateway's RSS is read before any client, with one stream (the
relay's fixed cost: its upstream stream to the engine), with all clients idle,
and at its peak under load; its CPU% over the load window from
``/proc/<pid>/stat``. ``--target engine`` measures the engine's own
``GET /api/events`` the same way (no gateway).

Targets: p99 < 250 ms; < 64 KiB of gateway memory per idle client.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import datetime as dt
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

from admin_gateway.auth.users import UserStore
from bench.failover import BIN, TOKEN, Browser, Proc
from bench.load import cpu_seconds
from deploy.local_postgres import free_port
from engine_hub.settings import STORE_URL_ENV, TOKEN_ENV

GATEWAY_PATH: Final = "/api/admin/engine/events"
ENGINE_PATH: Final = "/api/events"
#: Seconds all streams sit idle (no change) while the server's CPU at rest is read, before its RSS:
#: longer than one round of the gateway's session checks (every 5 s by default).
IDLE: Final = 6.0
CREATED: Final = re.compile(rb'"createdAt":\s*"([^"]+)"')


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (Linux /proc)."""
    found = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert found is not None
    return int(found.group(1))


def _pct(values: list[float] | array.array[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


# -- client processes --------------------------------------------------------------------------


class _Tally:
    """What one client process saw, over all its streams."""

    def __init__(self) -> None:
        self.latencies: array.array[float] = array.array("d")
        self.created: list[int] = []  # job_created messages per stream
        self.disorder = 0  # a job_created id not above the stream's previous one (duplicate or out of order)
        self.resets = 0
        self.ended = 0  # streams that ended before the client closed them
        self.refused: list[int] = []  # statuses of streams that did not open
        self.times: dict[bytes, float] = {}  # seq -> createdAt (epoch s), parsed once per process


async def _follow(session: Any, url: str, headers: dict[str, str], slot: int, tally: _Tally, opened: Any) -> None:
    """Read one stream until cancelled: time each job_created message, count the rest."""
    async with session.get(url, headers=headers) as resp:
        if resp.status != 200:
            tally.refused.append(resp.status)
            opened.set()
            return
        buffer, last = b"", -1
        async for chunk in resp.content.iter_any():
            now = time.time()
            buffer += chunk
            *messages, buffer = buffer.split(b"\n\n")
            for message in messages:
                if b"event: ready" in message or b"retry:" in message:
                    opened.set()
                if b"event: reset" in message:
                    tally.resets += 1
                if b"event: job_created\n" not in message:
                    continue
                seq = message.split(b"id: ", 1)[1].split(b"\n", 1)[0]
                created = tally.times.get(seq)
                if created is None:
                    stamp = CREATED.search(message)
                    assert stamp is not None, message
                    created = dt.datetime.fromisoformat(stamp.group(1).decode().replace("Z", "+00:00")).timestamp()
                    tally.times[seq] = created
                tally.latencies.append(now - created)
                tally.created[slot] += 1
                if int(seq) <= last:
                    tally.disorder += 1
                last = int(seq)
    tally.ended += 1


async def _client_main(url: str, headers: dict[str, str], streams: int, ready: Any, stop: Any, out: Any) -> None:
    import aiohttp

    tally = _Tally()
    tally.created = [0] * streams
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as s:
        tasks, events = [], []
        for slot in range(streams):
            opened = asyncio.Event()
            events.append(opened)
            tasks.append(asyncio.create_task(_follow(s, url, headers, slot, tally, opened)))
            if slot % 25 == 24:
                await asyncio.sleep(0.05)  # do not meet the listen backlog all at once
        await asyncio.gather(*(e.wait() for e in events))
        ready.set()
        loop = asyncio.get_running_loop()
        while not await loop.run_in_executor(None, stop.wait, 0.2):
            out.send(("progress", (sum(tally.created), tally.resets)))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    out.send(
        (
            "done",
            {
                "latencies": tally.latencies.tobytes(),
                "created": tally.created,
                "disorder": tally.disorder,
                "resets": tally.resets,
                "ended": tally.ended,
                "refused": tally.refused,
            },
        )
    )


def _client_process(url: str, headers: dict[str, str], streams: int, ready: Any, stop: Any, out: Any) -> None:
    """Entry point of one client process (spawned)."""
    asyncio.run(_client_main(url, headers, streams, ready, stop, out))


# -- the driver --------------------------------------------------------------------------------


async def _drive(engine_url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Create ``rate`` jobs a second for ``seconds`` through the engine's API; count the answers."""
    import aiohttp

    headers = {"Authorization": f"Bearer {TOKEN}"}
    statuses: dict[int, int] = {}
    late = 0.0
    total = int(rate * seconds)

    async def create(session: aiohttp.ClientSession, i: int) -> None:
        body = {"type": "demo.echo", "name": f"fan-out {i}"}
        async with session.post(engine_url + "/api/jobs", json=body, headers=headers) as resp:
            await resp.read()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        started = time.monotonic()
        pending = []
        for i in range(total):
            wait = started + i / rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                late = max(late, -wait)
            pending.append(asyncio.create_task(create(session, i)))
        await asyncio.gather(*pending)
    return {"statuses": statuses, "sent": total, "late": late, "seconds": time.monotonic() - started}


class Servers:
    """The engine (embedded store) and, for ``--target gateway``, the gateway, under ``root``."""

    def __init__(self, root: Path, *, target: str, per_session: int, clients: int) -> None:
        logs = root / "logs"
        logs.mkdir(parents=True)
        token_file = root / "engine-token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, STORE_URL_ENV)}
        port = free_port()
        argv = [str(BIN / "engine-hub"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--data-dir", str(root / "engine"), "--token-file", str(token_file)]
        if target == "engine":  # all streams come from 127.0.0.1
            argv += ["--max-connections-per-address", "0"]
        self.engine = Proc("engine", argv, port=port, logs=logs, env=env)
        self.gateway: Proc | None = None
        self.password = ""
        if target == "gateway":
            self.password = UserStore(root / "gateway").ensure_admin("admin") or ""
            port = free_port()
            argv = [str(BIN / "admin-gateway"), "serve", "--host", "127.0.0.1", "--port", str(port)]
            argv += ["--engine-url", self.engine.url, "--data-dir", str(root / "gateway")]
            argv += ["--engine-token-file", str(token_file), "--events-per-session", str(per_session)]
            # Every client connects from 127.0.0.1: no per-address cap (nginx's limit_conn does that job).
            argv += ["--max-connections-per-address", "0", "--events-max-streams", str(max(1000, clients + 10))]
            self.gateway = Proc("gateway", argv, port=port, logs=logs, env={**env, "SAFE_MODE": "off"})

    def start(self) -> None:
        """Start the engine, then the gateway."""
        self.engine.start()
        if self.gateway is not None:
            self.gateway.start()

    def stop(self) -> None:
        """Stop the gateway, then the engine."""
        for proc in (self.gateway, self.engine):
            if proc is not None:
                proc.stop()


def _stream_headers(servers: Servers) -> dict[str, str]:
    """Headers of one signed-in page (a new session through the login form), or the engine's token."""
    if servers.gateway is None:
        return {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
    browser = Browser(servers.gateway.url, "admin", servers.password)
    return {"Cookie": "; ".join(f"{c.name}={c.value}" for c in browser.jar), "Accept": "text/event-stream"}


class _Worker:
    """One spawned client process holding ``streams`` streams; ``progress`` is what it last reported."""

    def __init__(self, ctx: Any, url: str, headers: dict[str, str], streams: int) -> None:
        self.ready, self.stop = ctx.Event(), ctx.Event()
        self.conn, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_client_process, args=(url, headers, streams, self.ready, self.stop, child))
        self.proc.start()
        child.close()
        self.progress, self.resets, self.result = 0, 0, None

    def poll(self) -> None:
        """Take every message the process sent so far."""
        while self.result is None and self.conn.poll():
            kind, value = self.conn.recv()
            if kind == "progress":
                self.progress, self.resets = value
            else:
                self.result = value

    def finish(self) -> dict[str, Any]:
        """Ask the process to close its streams; return its tally."""
        self.stop.set()
        deadline = time.monotonic() + 120
        while self.result is None and time.monotonic() < deadline:
            if self.conn.poll(0.5):
                self.poll()
        self.proc.join(timeout=30)
        if self.result is None:
            raise RuntimeError("a client process sent no result")
        return self.result

    def kill(self) -> None:
        """End the process if it still runs."""
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)


def _wait(workers: list[_Worker], expected: int, *, quiet: float = 5.0, limit: float = 120.0) -> float:
    """Wait until the workers have ``expected`` job_created messages in all, or none came for ``quiet`` s."""
    started = last_change = time.monotonic()
    seen = -1
    while time.monotonic() - started < limit:
        for worker in workers:
            worker.poll()
        total = sum(w.progress for w in workers)
        if total >= expected:
            break
        if total != seen:
            seen, last_change = total, time.monotonic()
        elif time.monotonic() - last_change > quiet:
            break
        time.sleep(0.1)
    return time.monotonic() - started


def _summary(latencies: array.array[float]) -> dict[str, float]:
    """p50, p99 and max in milliseconds."""
    return {q: _pct(latencies, p) * 1e3 for q, p in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))}


def run(*, clients: int, rate: float, seconds: float, procs: int, target: str, keep: Path | None) -> dict[str, Any]:
    """Start the servers and the clients, drive the changes, and return the figures."""
    root = keep or Path(tempfile.mkdtemp(prefix="bench-sse-fanout-"))
    shares = [(clients - 1) // procs + (1 if i < (clients - 1) % procs else 0) for i in range(procs)]
    servers = Servers(root, target=target, per_session=max(shares), clients=clients)
    ctx = mp.get_context("spawn")
    workers: list[_Worker] = []
    reference: _Worker | None = None
    try:
        servers.start()
        server = servers.gateway or servers.engine
        url = server.url + (GATEWAY_PATH if servers.gateway is not None else ENGINE_PATH)
        asyncio.run(_drive(servers.engine.url, 50, 1))  # warm-up: the engine's and the relay's code paths
        time.sleep(1)
        rss = {"before": rss_kib(server.pid)}
        # One stream first: what the relay costs once (its upstream stream to the engine), not per client.
        workers.append(_Worker(ctx, url, _stream_headers(servers), 1))
        if not workers[0].ready.wait(60):
            raise RuntimeError("the first stream did not open")
        time.sleep(2)
        rss["one"] = rss_kib(server.pid)
        workers += [_Worker(ctx, url, _stream_headers(servers), n) for n in shares]
        for worker in workers:
            if not worker.ready.wait(180):
                raise RuntimeError("a client process did not open its streams")
        # The engine's own stream, one client, beside them: what the gateway adds is the difference.
        engine_headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
        reference = _Worker(ctx, servers.engine.url + ENGINE_PATH, engine_headers, 1) if servers.gateway else None
        if reference is not None and not reference.ready.wait(60):
            raise RuntimeError("the reference stream on the engine did not open")
        idle_cpu, idle_started = cpu_seconds(server.pid), time.monotonic()
        time.sleep(IDLE)
        idle_cpu = (cpu_seconds(server.pid) - idle_cpu) / (time.monotonic() - idle_started) * 100
        rss["idle"] = rss_kib(server.pid)
        pids = {"engine": servers.engine.pid}
        if servers.gateway is not None:
            pids["gateway"] = servers.gateway.pid
        pids |= {f"client {i}": w.proc.pid for i, w in enumerate(workers) if w.proc.pid is not None}
        cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        peak = [rss["idle"]]

        async def drive_and_sample() -> dict[str, Any]:
            async def sample() -> None:
                while True:
                    await asyncio.sleep(0.25)
                    peak.append(rss_kib(server.pid))

            sampler = asyncio.create_task(sample())
            try:
                return await _drive(servers.engine.url, rate, seconds)
            finally:
                sampler.cancel()

        for worker in workers:
            worker.poll()
        resets_before = sum(w.resets for w in workers)  # the relay's first contact with the engine sends one
        started = time.monotonic()
        drive = asyncio.run(drive_and_sample())
        window = time.monotonic() - started
        cpu = {name: (cpu_seconds(pid) - cpu[name]) / window * 100 for name, pid in pids.items()}
        rss["load"] = max(peak)
        created = drive["statuses"].get(201, 0)
        extra = [reference] if reference is not None else []
        drain = _wait(workers + extra, created * (clients + len(extra)))
        results = [w.finish() for w in workers]
        engine_own = array.array("d")
        if reference is not None:
            engine_own.frombytes(reference.finish()["latencies"])
        latencies: array.array[float] = array.array("d")
        for result in results:
            latencies.frombytes(result["latencies"])
        per_stream = [n for result in results for n in result["created"]]
        return {
            "target": target,
            "clients": clients,
            "streams_open": len(per_stream) - sum(len(r["refused"]) for r in results),
            "refused": dict(Counter(s for r in results for s in r["refused"])),
            "drive": drive,
            "created": created,
            "expected": created * clients,
            "received": sum(per_stream),
            "streams_short": sum(1 for n in per_stream if n < created),
            "disorder": sum(r["disorder"] for r in results),
            "resets": sum(r["resets"] for r in results) - resets_before,
            "resets_before": resets_before,
            "ended": sum(r["ended"] for r in results),
            "latency_ms": _summary(latencies),
            "engine_stream_latency_ms": _summary(engine_own) if reference is not None else None,
            "rss_kib": rss,
            "per_idle_client_kib": (rss["idle"] - rss["one"]) / max(1, clients - 1),
            "per_client_from_none_kib": (rss["idle"] - rss["before"]) / clients,
            "cpu_percent": cpu,
            "idle_cpu_percent": idle_cpu,
            "window_s": window,
            "drain_s": drain,
            "load_average": os.getloadavg(),
        }
    finally:
        for worker in workers + ([reference] if reference is not None else []):
            worker.kill()
        servers.stop()
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def report(f: dict[str, Any], *, rate: float, seconds: float, procs: int) -> str:
    """The figures as Markdown lines."""
    lat, rss = f["latency_ms"], f["rss_kib"]
    lost = f["expected"] - f["received"]
    clients = ", ".join(f"{name} {value:.0f}%" for name, value in f["cpu_percent"].items())
    lines = [
        f"{f['clients']} streams on {f['target']} ({f['streams_open']} open, refused: {f['refused'] or 'none'}), "
        f"{procs} client processes plus the first stream's; {f['created']} jobs created at {rate:g}/s over "
        f"{f['drive']['seconds']:.1f} s (answers {f['drive']['statuses']}, driver at most "
        f"{f['drive']['late'] * 1e3:.0f} ms behind its schedule)",
        "",
        "| figure | value |",
        "|---|---|",
        f"| latency p50 / p99 / max (createdAt to receipt) | {lat['p50']:.1f} / {lat['p99']:.1f} / "
        f"{lat['max']:.1f} ms |",
        *(
            [
                f"| beside them, one client on the engine's own stream: p50 / p99 / max | {own['p50']:.1f} / "
                f"{own['p99']:.1f} / {own['max']:.1f} ms |"
            ]
            if (own := f["engine_stream_latency_ms"])
            else []
        ),
        f"| messages received / expected | {f['received']:,} / {f['expected']:,} (lost {lost:,}; "
        f"{f['streams_short']} streams short; out of order or duplicate {f['disorder']}; resets {f['resets']} "
        f"(before the drive: {f['resets_before']}); "
        f"streams ended early {f['ended']}) |",
        f"| server RSS: before any stream / 1 stream / all idle / peak under load | {rss['before']:,} / "
        f"{rss['one']:,} / {rss['idle']:,} / {rss['load']:,} KiB |",
        f"| per idle client (idle - 1 stream) / {f['clients'] - 1} | {f['per_idle_client_kib']:.1f} KiB "
        f"({f['per_client_from_none_kib']:.1f} KiB counting from no stream at all) |",
        f"| CPU over the {f['window_s']:.1f} s load window (100% = one core) | {clients} |",
        f"| server CPU with all streams idle ({IDLE:g} s) | {f['idle_cpu_percent']:.1f}% |",
        f"| all messages in after the drive | {f['drain_s']:.1f} s |",
        "",
        f"Targets: p99 < 250 ms: **{'met' if lat['p99'] < 250 else 'missed'}**; < 64 KiB per idle client: "
        f"**{'met' if f['per_idle_client_kib'] < 64 else 'missed'}**; every client every change: "
        f"**{'yes' if lost == 0 and not f['disorder'] and not f['refused'] else 'no'}**. Load average after: "
        + " ".join(f"{x:.2f}" for x in f["load_average"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark and print its figures (exit status 0 once printed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0, help="jobs created per second")
    parser.add_argument("--seconds", type=float, default=25.0, help="how long the changes are driven")
    parser.add_argument("--procs", type=int, default=2, help="client processes (the first stream has its own)")
    parser.add_argument("--target", choices=("gateway", "engine"), default="gateway")
    parser.add_argument("--keep", type=Path, help="keep the data and the servers' logs in this new directory")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args(argv)
    figures = run(
        clients=args.clients, rate=args.rate, seconds=args.seconds, procs=args.procs, target=args.target, keep=args.keep
    )
    if args.json:
        print(json.dumps(figures, indent=2))
    print(report(figures, rate=args.rate, seconds=args.seconds, procs=args.procs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
