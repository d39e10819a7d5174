"""Benchmark: the PostgreSQL job store (issue 13) against a bare psycopg handler and the embedded engine.

    .venv/bin/python -m bench.pg_store [--jobs 1000000] [--embedded-jobs N] [--duration 5] [--rounds 3]

In one run, on a throwaway PostgreSQL started here (``deploy/local_postgres``,
durable server defaults: ``fsync``, ``synchronous_commit`` and
``full_page_writes`` on), migrated and filled by ``COPY`` with ``--jobs``
finished jobs (one in ten FAILED):

1. **List**: ``GET /api/jobs?limit=50`` (and ``&status=FAILED``, and the second
   page via ``before=``) with ``wrk -t1 -c16`` after a 1 s warm-up, rounds in
   alternating order, medians, on (a) a real node (``engine-hub serve`` with
   ``ENGINE_STORE_URL``), (b) a bare aiohttp handler replaying the very
   statements the store runs for that query (recorded from
   :class:`engine_hub.store.postgres.PostgresBackend`) through a pool of the
   same size, rows out with ``json.dumps``, (c) the embedded engine
   (``engine-hub serve``, durable) holding ``--embedded-jobs`` finished jobs
   restored from a snapshot. Plus the server CPU per request (the engine
   process's, and PostgreSQL's) and ``EXPLAIN ANALYZE`` of each page statement.
2. **Writes**: create and RUN requests/s (32 aiohttp clients, the catalog and
   token of ``bench.engine_durability``), node vs embedded, alternating.
3. **Audit appends/s** onto the engine chain with 1, 4 and 16 connections,
   one record per transaction, ``synchronous_commit`` on and off (per session).
4. **Start-up**: process start to ``/readyz`` 200 of a node against the
   filled store, and of the embedded engine from a snapshot and from the
   journal alone.

Skips (exit 0, with a message) when no PostgreSQL server binaries or no
``wrk`` are found. Prints Markdown tables for ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import _pg_parts as parts
from bench.engine_durability import CATALOG, TOKEN, Engine, JournalWriter, _create_ids, _load, _wait_for_log
from bench.gateway_list import _pct, _sequential
from bench.load import Server, wrk
from deploy.local_postgres import PostgresServer, find_bindir, start_server

PAGE = "/api/jobs?limit=50"
FAILED = PAGE + "&status=FAILED"
WRITERS = (1, 4, 16)


def _get(url: str) -> tuple[bytes, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return bytes(resp.read()), resp.headers.get("Link", "")


def _second_page(base: str) -> str:
    """The path of the page after the first, from the ``Link`` header of ``base``'s first page."""
    link = _get(base + PAGE)[1]
    match = re.search(r"before=([0-9a-f-]+)", link)
    if match is None:
        raise RuntimeError(f"no next link on {base}: {link!r}")
    return f"{PAGE}&before={match.group(1)}"


# -- 1. list ------------------------------------------------------------------------------------------


def list_load(
    targets: dict[str, tuple[str, int]], pg: PostgresServer, *, duration: float, rounds: int, connections: int
) -> dict[str, dict[str, float]]:
    """Load each target (name: URL, server pid) with wrk in alternating rounds; medians plus CPU per request."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for url, _ in targets.values():
        wrk(url, headers, duration=1, connections=connections)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    names = list(targets)
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            url, pid = targets[name]
            db_before = parts.server_cpu(pg.data_dir)
            result = wrk(url, headers, duration=duration, connections=connections, pid=pid)
            result["db_us"] = (parts.server_cpu(pg.data_dir) - db_before) / max(result["requests"], 1) * 1e6
            if result["non2xx"]:
                raise RuntimeError(f"{name}: {result['non2xx']:.0f} non-2xx answers")
            samples[name].append(result)
            print(
                f"round {i + 1} {name}: {result['rps']:,.0f} req/s p50 {result['p50'] * 1e3:.2f} ms "
                f"p99 {result['p99'] * 1e3:.2f} ms cpu {result['cpu_us']:.0f} us/req db {result['db_us']:.0f} us/req",
                file=sys.stderr,
            )
    keys = ("rps", "p50", "p99", "cpu_us", "db_us")
    return {name: {k: statistics.median(s[k] for s in runs) for k in keys} for name, runs in samples.items()}


# -- 2. writes ----------------------------------------------------------------------------------------


def writes(engines: dict[str, Engine], *, rounds: int, creates: int, runs: int) -> dict[str, dict[str, float]]:
    """Median create and run requests/s of each engine, loaded alternately (``bench.engine_durability``'s load)."""
    rates: dict[str, dict[str, list[float]]] = {name: {"create": [], "run": []} for name in engines}
    body = {"type": "bench.true", "params": {"note": "quarterly report for the finance team"}}
    names = list(engines)
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            url = engines[name].url
            rates[name]["create"].append(asyncio.run(_load(url, [("/api/jobs", body)] * creates, 201)))
            ids = asyncio.run(_create_ids(url, runs))
            reqs = [(f"/api/jobs/{job_id}/run", {"reason": "benchmark"}) for job_id in ids]
            rates[name]["run"].append(asyncio.run(_load(url, reqs, 202)))
            print(f"round {i + 1} {name}: {rates[name]}", file=sys.stderr)
    return {name: {kind: statistics.median(v) for kind, v in kinds.items()} for name, kinds in rates.items()}


# -- the run ------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, bindir: Path) -> dict[str, Any]:
    """Everything, in one run; returns the figures."""
    work = Path(tempfile.mkdtemp(prefix="bench-pg-store-"))
    pg = start_server(bindir)
    out: dict[str, Any] = {"settings": "PostgreSQL defaults (fsync, synchronous_commit, full_page_writes on)"}
    engines: dict[str, Engine] = {}
    bare: Server | None = None
    try:
        with pg.admin() as conn:
            out["version"] = str((conn.execute("SHOW server_version").fetchone() or ("?",))[0])
            shown = ("shared_buffers", "fsync", "synchronous_commit", "wal_level", "max_connections")
            out["server"] = {k: str((conn.execute(f"SHOW {k}").fetchone() or ("?",))[0]) for k in shown}
        url = pg.create_database(name="bench")
        began = time.perf_counter()
        parts.fill(url, args.jobs)
        out["fill_s"] = time.perf_counter() - began
        print(f"filled {args.jobs:,} jobs in {out['fill_s']:.1f}s", file=sys.stderr)
        catalog = work / "catalog.toml"
        catalog.write_text(CATALOG)
        began = time.perf_counter()
        JournalWriter(work / "embedded" / "journal").write(args.embedded_jobs * 4)
        out["journal_s"] = time.perf_counter() - began
        # The embedded engine: first from the journal alone (a snapshot is written at its clean stop), then
        # from that snapshot; that one stays up for the list and writes.
        embedded = Engine(work / "embedded", "--config", str(catalog), "--log-level", "info")
        startup: dict[str, float] = {
            f"embedded, journal only ({args.embedded_jobs * 4:,} records)": embedded.start("/readyz")
        }
        embedded.stop()
        startup[f"embedded, snapshot of {args.embedded_jobs:,} jobs"] = embedded.start("/readyz")
        engines["embedded"] = embedded
        _wait_for_log(embedded, b'"cold_jobs_packed"')  # the background packing after start-up is done
        node = Engine(work / "node", "--config", str(catalog), "--log-level", "info", env={"ENGINE_STORE_URL": url})
        node_starts = [node.start("/readyz")]
        engines["node"] = node
        bare = Server("bare", "bench.pg_store", ["--serve-bare", url, "--pool-size", "10"], "")
        print(f"servers up; embedded {startup}", file=sys.stderr)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        paths = {"page 1": PAGE, "status=FAILED": FAILED, "page 2 (before=)": _second_page(node.url)}
        assert len(json.loads(_get(bare.base + paths["page 2 (before=)"])[0])) == 50
        embedded_second = _second_page(embedded.url)
        assert node.proc is not None and embedded.proc is not None
        targets = {
            "bare, page 1": (bare.base + PAGE, bare.proc.pid),
            "node, page 1": (node.url + PAGE, node.proc.pid),
            "embedded, page 1": (embedded.url + PAGE, embedded.proc.pid),
            "bare, status=FAILED": (bare.base + FAILED, bare.proc.pid),
            "node, status=FAILED": (node.url + FAILED, node.proc.pid),
            "bare, page 2": (bare.base + paths["page 2 (before=)"], bare.proc.pid),
            "node, page 2": (node.url + paths["page 2 (before=)"], node.proc.pid),
            "embedded, page 2": (embedded.url + embedded_second, embedded.proc.pid),
        }
        out["list"] = list_load(targets, pg, duration=args.duration, rounds=args.rounds, connections=args.connections)
        unloaded = asyncio.run(
            _sequential({name: (target, headers) for name, (target, _) in targets.items()}, args.sequential)
        )
        out["sequential"] = {name: (_pct(t, 0.5), _pct(t, 0.99)) for name, t in unloaded.items()}
        query = {name: dict(re.findall(r"(\w+)=([^&]+)", path)) for name, path in paths.items()}
        out["explain"] = asyncio.run(parts.explain(url, query))
        bare.stop()
        bare = None
        out["writes"] = writes(engines, rounds=args.rounds, creates=args.creates, runs=args.runs)
        for engine in engines.values():
            engine.stop()
        out["audit"] = {
            (writers, sync): asyncio.run(
                parts.appends_per_second(
                    url, pg.data_dir, writers=writers, seconds=args.audit_seconds, synchronous_commit=sync
                )
            )
            for sync in (True, False)
            for writers in WRITERS
        }
        for _ in range(args.rounds - 1):
            node.stop()
            node_starts.append(node.start("/readyz"))
        startup[f"node, {args.jobs:,} jobs in PostgreSQL (median of {len(node_starts)})"] = statistics.median(
            node_starts
        )
        out["startup"] = startup
        return out
    finally:
        if bare is not None:
            bare.stop()
        for engine in engines.values():
            engine.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(out: dict[str, Any], args: argparse.Namespace) -> str:
    """The figures as Markdown: tables, ratios and the targets."""
    lst = out["list"]
    lines = [
        f"PostgreSQL {out['version']}, {out['settings']}; {out['server']}",
        f"fill: {args.jobs:,} jobs by COPY in {out['fill_s']:.1f} s; embedded journal "
        f"({args.embedded_jobs * 4:,} records) written in {out['journal_s']:.1f} s",
        "",
        f"`wrk -t1 -c{args.connections} -d{args.duration:g}s`, median of {args.rounds} rounds:",
        "",
        "| server, query | req/s | p50 | p99 | server CPU / req | PostgreSQL CPU / req |",
        "|---|---|---|---|---|---|",
    ]
    for name, f in lst.items():
        lines.append(
            f"| {name} | {f['rps']:,.0f} | {f['p50'] * 1e3:.2f} ms | {f['p99'] * 1e3:.2f} ms "
            f"| {f['cpu_us']:.0f} µs | {f['db_us']:.0f} µs |"
        )
    lines.append("")
    for query in ("page 1", "status=FAILED", "page 2"):
        node = lst[f"node, {query}"]
        ratio = node["rps"] / lst[f"bare, {query}"]["rps"]
        text = f"- {query}: node / bare **{ratio:.2f}x** (target >= 0.8x: {'met' if ratio >= 0.8 else 'MISSED'})"
        if f"embedded, {query}" in lst:
            text += f", node / embedded {node['rps'] / lst[f'embedded, {query}']['rps']:.2f}x"
        p99 = node["p99"] * 1e3
        text += f"; node p99 {p99:.2f} ms (target <= 10 ms: {'met' if p99 <= 10 else 'MISSED'})"
        lines.append(text)
    lines.append(
        "- EXPLAIN ANALYZE (planning + execution) of the page statement: "
        + ", ".join(f"{name} {ms:.3f} ms" for name, ms in out["explain"].items())
    )
    lines += [
        "",
        f"Unloaded, {args.sequential:,} sequential requests each (interleaved), keep-alive:",
        "",
        "| server, query | p50 | p99 |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {p50 * 1e3:.2f} ms | {p99 * 1e3:.2f} ms |" for n, (p50, p99) in out["sequential"].items()]
    lines += ["", "| writes (32 clients) | node | embedded | node / embedded |", "|---|---|---|---|"]
    w = out["writes"]
    for kind in ("create", "run"):
        n, e = w["node"][kind], w["embedded"][kind]
        lines.append(f"| {kind} requests/s | {n:,.0f} | {e:,.0f} | {n / e:.2f}x |")
    lines += [
        "",
        "| audit appends/s (client CPU, PostgreSQL CPU per append) | "
        + " | ".join(f"{n} connections" for n in WRITERS)
        + " |",
    ]
    lines.append("|---|" + "---|" * len(WRITERS))
    for sync in (True, False):
        figures = [out["audit"][(n, sync)] for n in WRITERS]
        cells = " | ".join(f"{rate:,.0f} ({client:.0f} µs, {db:.0f} µs)" for rate, client, db in figures)
        lines.append(f"| synchronous_commit={'on' if sync else 'off'} | {cells} |")
    lines += ["", "| start-up (process start to /readyz 200) | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in out["startup"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--serve-bare``, its bare server); 0 also when it skips."""
    parser = argparse.ArgumentParser(prog="python -m bench.pg_store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in PostgreSQL (default 1,000,000)")
    parser.add_argument("--embedded-jobs", type=int, help="jobs in the embedded engine (default: --jobs)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--creates", type=int, default=2_000, help="creates per round (default 2,000)")
    parser.add_argument("--runs", type=int, default=300, help="runs per round (default 300)")
    parser.add_argument("--sequential", type=int, default=300, help="unloaded requests per target (default 300)")
    parser.add_argument("--audit-seconds", type=float, default=3.0, help="seconds per audit figure (default 3)")
    parser.add_argument("--serve-bare", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--pool-size", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare is not None:
        asyncio.run(parts.serve_bare(args.serve_bare, args.pool_size))
        return 0
    if args.embedded_jobs is None:
        args.embedded_jobs = args.jobs
    bindir = find_bindir()
    if bindir is None or shutil.which("wrk") is None:
        missing = "wrk" if bindir is not None else "PostgreSQL server binaries (initdb, pg_ctl)"
        print(f"bench.pg_store skipped: {missing} not found", file=sys.stderr)
        return 0
    started = time.perf_counter()
    out = run(args, bindir)
    print(report(out, args))
    print(f"(whole run {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
