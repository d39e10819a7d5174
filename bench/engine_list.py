"""Benchmark: ``GET /api/jobs?limit=50`` of the real engine against a bare aiohttp handler.

In one run it starts, as separate processes:

- the real engine app (``create_app``: auth, the shared middleware with its
  per-request JSON log line written to a file, metrics) with 1,000, 10,000
  and 100,000 finished jobs replayed from a journal at start-up;
- a bare aiohttp handler that returns the same 50 jobs as precomputed bytes;

and loads each with ``wrk`` (``-t1 -c16 --latency``), alternating servers over
several rounds and keeping the median of each. It reports:

- throughput of the engine with 10,000 jobs relative to the bare handler
  (target >= 0.8x);
- p50 and p99 latency with 100,000 jobs relative to 1,000 jobs (target <= 1.2x).

Usage: ``python -m bench.engine_list [--duration 5] [--rounds 3]``. Needs
``wrk`` on PATH. The figures go to ``docs/performance.md`` with the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.load import Server, listen, serve_product, wrk

TOKEN = "bench-admin-token-0123456789abcdef"
PATH = "/api/jobs?limit=50"
SIZES = (1_000, 10_000, 100_000)


# -- server processes ----------------------------------------------------------------


async def _prefilled_journal(count: int) -> Any:
    """A journal holding ``count`` jobs that each ran and finished, as a real engine would have written."""
    from engine_hub.store.embedded import Action
    from shared.contract import HistoryEntry, Job, JobStatus, new_job_id, utcnow
    from shared.journal.chain import MemoryJournal

    journal = MemoryJournal()
    for i in range(count):
        now = utcnow()
        job = Job(
            id=new_job_id(),
            type="demo.echo",
            name=f"nightly report {i}",
            params={"message": "hello"},
            created_at=now,
            created_by="alice",
            history=(HistoryEntry(status=JobStatus.READY, at=now, by="alice"),),
        )
        await journal.append(
            action=Action.JOB_CREATED, actor="alice", source="127.0.0.1", job_id=job.id, data=job.to_json()
        )
        await journal.append(
            action=Action.RUN_REQUESTED,
            actor="bob",
            source="127.0.0.1",
            job_id=job.id,
            data={"runBy": "bob", "reason": "scheduled maintenance window"},
        )
        await journal.append(
            action=Action.JOB_FINISHED,
            actor="system",
            source="engine",
            job_id=job.id,
            data={"status": "DONE", "exitCode": 0, "error": None},
        )
    return journal


async def _serve_engine(count: int, log_path: Path) -> None:
    from engine_hub.http.app import create_app
    from engine_hub.settings import Settings
    from engine_hub.store.heap import settle_heap
    from shared.log import configure_logging

    with log_path.open("a") as log_file:
        configure_logging(json_output=True, stream=log_file)
        journal = await _prefilled_journal(count)
        settings = Settings(token=TOKEN, ephemeral=True, port=0, data_dir=log_path.parent)
        # settle_heap after start-up, as `engine-hub serve` does.
        await serve_product(
            create_app(settings, journal=journal, environ={}), settings=settings, after_setup=settle_heap
        )


async def _serve_bare(body_path: Path) -> None:
    from aiohttp import web

    body = body_path.read_bytes()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/jobs", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await listen(runner)


# -- load ---------------------------------------------------------------------------------


def _wrk(url: str, *, duration: float, connections: int, pid: int | None = None) -> dict[str, float]:
    return wrk(url, {"Authorization": f"Bearer {TOKEN}"}, duration=duration, connections=connections, pid=pid)


def _fetch(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return bytes(resp.read())


def run(*, duration: float, rounds: int, connections: int) -> dict[str, dict[str, float]]:
    """Start every server, load them in alternating rounds and return the median figures per server."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-engine-list-"))
    servers: dict[str, Server] = {}
    try:
        for size in SIZES:
            started = time.monotonic()
            servers[f"engine {size:,}"] = Server(
                f"engine {size}",
                "bench.engine_list",
                ["--serve-engine", str(size), "--log", str(tmp / f"engine-{size}.log")],
                PATH,
            )
            print(f"engine with {size:,} jobs ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
        page = _fetch(servers["engine 10,000"].url)
        assert len(json.loads(page)) == 50
        (tmp / "page.json").write_bytes(page)
        servers["bare bytes"] = Server("bare", "bench.engine_list", ["--serve-bare", str(tmp / "page.json")], PATH)
        assert _fetch(servers["bare bytes"].url) == page
        for server in servers.values():  # warm up (first requests, allocator, caches)
            _wrk(server.url, duration=1, connections=connections)
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        order = ["bare bytes", "engine 10,000", "engine 1,000", "engine 100,000"]
        for i in range(rounds):
            for name in order if i % 2 == 0 else order[::-1]:
                result = _wrk(servers[name].url, duration=duration, connections=connections, pid=servers[name].proc.pid)
                if result["non2xx"]:
                    raise RuntimeError(f"{name}: {result['non2xx']:.0f} non-2xx answers")
                samples[name].append(result)
                print(
                    f"round {i + 1} {name}: {result['rps']:,.0f} req/s p50 {result['p50'] * 1e3:.2f} ms "
                    f"p99 {result['p99'] * 1e3:.2f} ms cpu {result['cpu_us']:.1f} us/req",
                    file=sys.stderr,
                )
        log_lines = sum(1 for _ in (tmp / "engine-10000.log").open())
        print(f"engine (10,000) wrote {log_lines:,} JSON log lines", file=sys.stderr)
        return {
            name: {k: statistics.median(s[k] for s in runs) for k in ("rps", "p50", "p99", "cpu_us")}
            for name, runs in samples.items()
        }
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def report(figures: dict[str, dict[str, float]], *, duration: float, rounds: int, connections: int) -> str:
    """Return the results as a Markdown table plus the two target checks."""
    lines = [
        f"`wrk -t1 -c{connections} -d{duration:g}s --latency`, median of {rounds} rounds, `GET {PATH}`:",
        "",
        "| server | req/s | p50 | p99 | server CPU per request |",
        "|---|---|---|---|---|",
    ]
    for name in ("bare bytes", "engine 1,000", "engine 10,000", "engine 100,000"):
        f = figures[name]
        lines.append(
            f"| {name} | {f['rps']:,.0f} | {f['p50'] * 1e3:.2f} ms | {f['p99'] * 1e3:.2f} ms | {f['cpu_us']:.1f} µs |"
        )
    ratio = figures["engine 10,000"]["rps"] / figures["bare bytes"]["rps"]
    cpu_ratio = figures["bare bytes"]["cpu_us"] / figures["engine 10,000"]["cpu_us"]
    p50 = figures["engine 100,000"]["p50"] / figures["engine 1,000"]["p50"]
    p99 = figures["engine 100,000"]["p99"] / figures["engine 1,000"]["p99"]
    lines += [
        "",
        f"- throughput, engine with 10,000 jobs / bare handler: **{ratio:.2f}x** (target >= 0.8x: "
        f"{'met' if ratio >= 0.8 else 'MISSED'}); by server CPU per request: {cpu_ratio:.2f}x",
        f"- latency, 100,000 jobs / 1,000 jobs: p50 **{p50:.2f}x**, p99 **{p99:.2f}x** (target <= 1.2x: "
        f"{'met' if max(p50, p99) <= 1.2 else 'MISSED'})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--serve-*``, one of its server processes)."""
    parser = argparse.ArgumentParser(prog="python -m bench.engine_list", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per server (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--serve-engine", type=int, metavar="JOBS", help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", type=Path, metavar="BODY", help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_engine is not None:
        asyncio.run(_serve_engine(args.serve_engine, args.log))
        return 0
    if args.serve_bare is not None:
        asyncio.run(_serve_bare(args.serve_bare))
        return 0
    figures = run(duration=args.duration, rounds=args.rounds, connections=args.connections)
    print(report(figures, duration=args.duration, rounds=args.rounds, connections=args.connections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
