"""The pieces of ``bench.pg_store``: filling a store, the bare psycopg server, audit appends, database CPU.

Kept apart from the orchestration in :mod:`bench.pg_store` (``make bench``
skips modules whose name starts with ``_``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg

from bench.load import cpu_seconds, listen
from engine_hub.store.entry import encode_wire
from engine_hub.store.pg_rows import WIRE_COLUMNS, row_from_wire
from engine_hub.store.postgres import PostgresBackend
from engine_hub.store.schema import migrate
from shared.contract import JobStatus, format_time, new_job_id, utcnow
from shared.journal.postgres import ENGINE_CHAIN, append_to_chain

#: One job in this many of the filled store FAILED (the rest are DONE): the filtered page's rows.
FAILED_EVERY = 10


def finished_wire(i: int, at: str) -> dict[str, Any]:
    """The wire JSON of a finished job (created, run, ended), shaped as ``bench.engine_durability``'s journal."""
    failed = i % FAILED_EVERY == 0
    status = "FAILED" if failed else "DONE"
    error = "exit code 1" if failed else None
    return {
        "id": new_job_id(),
        "type": "db.backup",
        "engine": "db.backup",
        "name": "nightly backup of orders",
        "params": {"db": "orders", "full": True},
        "status": status,
        "createdAt": at,
        "createdBy": "alice",
        "startedAt": at,
        "runBy": "bob",
        "runReason": "ticket OPS-1234",
        "endedAt": at,
        "exitCode": 1 if failed else 0,
        "error": error,
        "history": [
            {"status": "READY", "at": at, "by": "alice", "reason": None},
            {"status": "RUNNING", "at": at, "by": "bob", "reason": "ticket OPS-1234"},
            {"status": status, "at": at, "by": "system", "reason": error},
        ],
    }


def fill(url: str, jobs: int) -> None:
    """Migrate the database at ``url`` and COPY ``jobs`` finished jobs into ``jobs``, then VACUUM ANALYZE.

    Rows come from :func:`engine_hub.store.pg_rows.row_from_wire`, as
    ``engine-hub db import`` writes them. The audit chain is left empty: a
    page reads ``jobs`` only. Per-row triggers are off for the COPY
    (``session_replication_role = replica``: a million ``pg_notify`` calls
    nobody listens to yet would only slow the fill).
    """

    async def migrated() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)

    asyncio.run(migrated())
    at = format_time(utcnow()) or ""
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            with conn.cursor().copy(f"COPY jobs ({', '.join(WIRE_COLUMNS)}, wire) FROM STDIN") as copy:
                for i in range(jobs):
                    wire = finished_wire(i, at)
                    row = row_from_wire(wire)
                    copy.write_row([*(row[c] for c in WIRE_COLUMNS), encode_wire(wire).decode()])
        conn.execute("VACUUM ANALYZE jobs")


# -- the bare handler -------------------------------------------------------------------------


class _Recorder:
    """A connection that notes each statement (text and parameters) before running it."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], seen: list[tuple[str, Any]]) -> None:
        self.conn = conn
        self.seen = seen

    async def execute(self, sql: str, params: Any = None) -> Any:
        self.seen.append((sql, params))
        return await self.conn.execute(sql, params)


class RecordingBackend(PostgresBackend):
    """The store itself, noting every statement it runs: the bare handler replays what the store ran."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[tuple[str, Any]] = []

    @asynccontextmanager
    async def connection(self, doing: str) -> AsyncIterator[Any]:
        """The store's pooled connection, wrapped to note statements."""
        async with super().connection(doing) as conn:
            yield _Recorder(conn, self.seen)


async def page_statements(backend: RecordingBackend, query: dict[str, str]) -> list[tuple[str, Any]]:
    """The statements the store runs for a list query (the cursor's look-up, then the page), run once."""
    backend.seen.clear()
    before = None
    if "before" in query:
        before = await backend.get(query["before"])
    status = JobStatus(query["status"]) if "status" in query else None
    await backend.page(limit=int(query.get("limit", 50)), status=status, type_name=query.get("type"), before=before)
    return list(backend.seen)


async def serve_bare(url: str, pool_size: int) -> None:
    """Serve ``GET /api/jobs``: the store's own statements for that query, through a pool of ``pool_size``.

    The statements are taken from :class:`PostgresBackend` by running it once
    per distinct query string (:func:`page_statements`), then replayed
    verbatim, each on a pooled connection as the store takes them, and the
    page's rows are returned with ``json.dumps`` (no mapping to the wire).
    """
    from aiohttp import web

    backend = RecordingBackend(url=url, lost_after=30.0, pool_size=pool_size)
    await backend.open()
    pool = backend.pool
    plans: dict[str, list[tuple[str, Any]]] = {}
    recording = asyncio.Lock()  # one recording at a time: concurrent first requests share the recorder

    async def handler(request: web.Request) -> web.Response:
        plan = plans.get(request.query_string)
        if plan is None:
            async with recording:
                if request.query_string not in plans:
                    plans[request.query_string] = await page_statements(backend, dict(request.query))
            plan = plans[request.query_string]
        rows: list[Any] = []
        for sql, params in plan:
            async with pool.connection() as conn:
                cur = await conn.execute(sql, params)
                rows = await cur.fetchall()
        limit = int(request.query.get("limit", 50))
        return web.Response(body=json.dumps(rows[:limit], default=str).encode(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/jobs", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await listen(runner)


async def explain(url: str, queries: dict[str, dict[str, str]]) -> dict[str, float]:
    """Execution time (ms, ``EXPLAIN ANALYZE``) of each query's page statement, as the store runs it."""
    backend = RecordingBackend(url=url, lost_after=30.0, pool_size=1)
    await backend.open()
    out: dict[str, float] = {}
    try:
        for name, query in queries.items():
            sql, params = (await page_statements(backend, query))[-1]
            async with backend.pool.connection() as conn:
                for _ in range(3):  # warm
                    cur = await conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
                    plan = (await cur.fetchone() or [[{}]])[0][0]
                out[name] = float(plan["Execution Time"]) + float(plan["Planning Time"])
    finally:
        await backend.close()
    return out


# -- audit appends ------------------------------------------------------------------------------


async def appends_per_second(
    url: str, data_dir: Path, *, writers: int, seconds: float, synchronous_commit: bool
) -> tuple[float, float, float]:
    """Records per second ``writers`` connections chain onto the engine chain (one transaction a record).

    Also returns the CPU microseconds per record of this (client) process and of the PostgreSQL
    server whose data directory is ``data_dir``.
    """
    conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(writers)]
    done = 0
    try:
        for conn in conns:
            await conn.execute(f"SET synchronous_commit = {'on' if synchronous_commit else 'off'}")
        deadline = time.perf_counter() + seconds

        async def writer(conn: psycopg.AsyncConnection[Any]) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with conn.transaction():
                    await append_to_chain(
                        conn, ENGINE_CHAIN, action="bench_append", actor="bench", source="bench", job_id=None, data={}
                    )
                done += 1

        began, cpu, db_cpu = time.perf_counter(), time.process_time(), server_cpu(data_dir)
        await asyncio.gather(*(writer(conn) for conn in conns))
        elapsed, per = time.perf_counter() - began, 1e6 / max(done, 1)
        return done / elapsed, (time.process_time() - cpu) * per, (server_cpu(data_dir) - db_cpu) * per
    finally:
        for conn in conns:
            await conn.close()


# -- database CPU ---------------------------------------------------------------------------------


def server_cpu(data_dir: Path) -> float:
    """CPU seconds used so far by a PostgreSQL server's processes (the postmaster's children, via /proc)."""
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for child in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split():
        try:
            total += cpu_seconds(int(child))
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
    return total
