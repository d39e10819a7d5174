"""Log retention over ``job_log_lines``: what :class:`~engine_hub.run.log_retention.LogRetention` sweeps on a node.

One node sweeps at a time: :meth:`PostgresExpiringLogs.sweeping` holds a
session advisory lock on a connection of its own (never a pooled one, so a
lock cannot outlive the sweep in the pool, and a small pool is not held up).
Candidates are read in short keyset pages over the ``jobs_ended`` index
(each statement well inside the statement timeout, however many jobs
ended long ago); after a complete sweep the next one starts from its cutoff,
so jobs whose output is gone, or who printed nothing, are not read again.
A deletion that failed is tried again by the next sweep.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from engine_hub.errors import StoreDown
from engine_hub.store.postgres import UNAVAILABLE_ERRORS, connect_kwargs, pooled
from shared.pg import describe_error

log = structlog.get_logger("engine.log_retention")

#: Jobs read per statement, and at most per sweep (the next sweep takes the rest).
PAGE: Final = 500
SWEEP_LIMIT: Final = 10_000
#: Name of the advisory lock the sweeping node holds.
LOCK: Final = "engine-log-retention"

#: Jobs that ended in [since, cutoff) after the keyset (ended_at, seq), and still have lines.
_PAGE_SQL: Final = (
    "SELECT j.id::text, j.ended_at, j.seq FROM jobs AS j "
    "WHERE j.ended_at < %(cutoff)s AND j.ended_at >= %(since)s AND (j.ended_at, j.seq) > (%(at)s, %(seq)s) "
    "AND EXISTS (SELECT 1 FROM job_log_lines AS l WHERE l.job_id = j.id) "
    "ORDER BY j.ended_at, j.seq LIMIT %(limit)s"
)
#: Bytes of each job's lines as a file holds them (one newline per line).
_SIZES_SQL: Final = (
    "SELECT job_id::text, sum(octet_length(line) + 1) FROM job_log_lines WHERE job_id = ANY(%s::uuid[]) GROUP BY job_id"
)
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class PostgresExpiringLogs:
    """The job logs of a PostgreSQL store, as log retention sees them (an ``ExpiringLogs``)."""

    def __init__(self, pool: AsyncConnectionPool[Any], *, url: str) -> None:
        self._pool = pool
        self._url = url
        self._since = _EPOCH  # every job that ended before this was swept by this process
        self._retry: set[str] = set()  # deletions that failed

    @asynccontextmanager
    async def sweeping(self) -> AsyncIterator[bool]:
        """Hold the sweep lock on a connection of its own while inside; False while another node holds it."""
        try:
            conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True, **connect_kwargs(self._url))
        except psycopg.Error as exc:
            log.error("store_unavailable", doing="log retention", error=describe_error(exc, self._url))
            raise StoreDown("the job store is unavailable, so no log was swept") from None
        try:
            async with conn:
                cur = await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (LOCK,))
                row = await cur.fetchone()
                held = bool(row and row[0])
                if not held:
                    log.info("log_retention_skipped", reason="another node is sweeping")
                yield held  # closing the connection ends the lock with the session
        except UNAVAILABLE_ERRORS as exc:
            log.error("store_unavailable", doing="log retention", error=describe_error(exc, self._url))
            raise StoreDown("the job store is unavailable, so no log was swept") from None

    async def old_logs(self, cutoff: dt.datetime) -> list[tuple[str, int]]:
        """``(job id, bytes)`` of jobs that ended before ``cutoff`` and still have lines, oldest first."""
        found: list[str] = sorted(self._retry)
        at, seq = _EPOCH, 0
        async with pooled(self._pool, "swept") as conn:
            while len(found) < SWEEP_LIMIT:
                cur = await conn.execute(
                    _PAGE_SQL, {"cutoff": cutoff, "since": self._since, "at": at, "seq": seq, "limit": PAGE}
                )
                rows = await cur.fetchall()
                found.extend(job_id for job_id, _, _ in rows)
                if len(rows) < PAGE:
                    self._since = cutoff  # complete: the next sweep starts here
                    break
                _, at, seq = rows[-1]
            sizes: dict[str, int] = {}
            for start in range(0, len(found), PAGE):
                cur = await conn.execute(_SIZES_SQL, (found[start : start + PAGE],))
                sizes.update((job_id, int(size)) for job_id, size in await cur.fetchall())
        self._retry.clear()
        return [(job_id, sizes[job_id]) for job_id in found if job_id in sizes]

    async def delete_log(self, job_id: str) -> int | None:
        """Delete a job's lines; return their bytes (as a file holds them), or None if it had none."""
        try:
            async with pooled(self._pool, "deleted") as conn:
                cur = await conn.execute(
                    "DELETE FROM job_log_lines WHERE job_id = %s RETURNING octet_length(line) + 1", (job_id,)
                )
                sizes = [int(size) for (size,) in await cur.fetchall()]
        except StoreDown:
            self._retry.add(job_id)
            raise
        return sum(sizes) if sizes else None
