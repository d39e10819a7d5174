"""Job output in PostgreSQL (table ``job_log_lines``), so that any node serves any job's log.

The node that runs a job numbers its lines from 1 (the line shape of
:mod:`engine_hub.run.logs`: ``{seq, at, stream, text}``) and only buffers them
in :meth:`PostgresJobLogs.append`. One background task (:meth:`PostgresJobLogs.start`)
writes the buffered lines of every job in one statement and one transaction:
at most ``flush_interval`` (0.25 s) after a line is buffered, or at once when
``flush_bytes`` (64 KiB) are. :meth:`PostgresJobLogs.finish` writes a job's
lines before it returns, so a run's log is complete before its finish is
recorded. A read, on any node, is one query (``seq > after ORDER BY seq
LIMIT n``): lines still in the writer's buffer show up one flush later.

The cap. As with the log files, the *beginning* of the output is kept: the line
that would take a job's output (its UTF-8 bytes, one newline per line) past
``max_bytes`` is replaced by one marker line (stream ``engine``) and the rest is
dropped; ``append`` returns True for that line only. A read's ``truncated`` is
the job's ``jobs.log_truncated`` column, which the store sets when the service
records ``log_truncated``: the one truth every node reads.

The database down. The batch is retried with backoff (:data:`RETRY_MIN` up to
:data:`RETRY_MAX`) until it is written. Rows are keyed ``(job_id, seq)`` and
inserted ``ON CONFLICT DO NOTHING``, so a batch retried after a commit whose
answer was lost is not written twice. Memory stays bounded: lines buffered
or in flight hold at most ``buffer_bytes``; a line beyond that is dropped and
counted, and once the batch in flight is written, each job that lost lines
gets one marker line saying how many. ``append`` never raises and never waits.

A batch the database refuses for its data (no ``jobs`` row for a job id) is
written job by job, so one job's refused lines (``job_log_rejected``) never hold
up the others. NUL characters are stored as U+FFFD: a PostgreSQL text cannot hold one.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import uuid
from typing import Any, Final

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from engine_hub.run.logs import MARKER_STREAM, MAX_READ_LINES, LogPage, byte_cap_marker, byte_cap_reason, cut_line
from engine_hub.settings import DEFAULT_LOG_MAX_BYTES
from engine_hub.store.postgres import pooled
from shared.contract import format_time, utcnow

log = structlog.get_logger("engine.joblogs")

#: Longest time a buffered line waits before it is written.
FLUSH_INTERVAL: Final = 0.25
#: Buffered bytes that get written at once, without waiting for the interval.
FLUSH_BYTES: Final = 64 * 1024
#: Most bytes of lines held in memory (buffered or in flight) while the database is unreachable.
BUFFER_BYTES: Final = 16 * 1024 * 1024
#: First and longest wait between two attempts to write a batch.
RETRY_MIN: Final = 0.05
RETRY_MAX: Final = 2.0
#: How long close() keeps trying to write what is buffered before it gives the lines up.
CLOSE_TIMEOUT: Final = 5.0

_INSERT: Final = (
    "INSERT INTO job_log_lines (job_id, seq, at, stream, line)"
    " SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::timestamptz[], %s::text[], %s::text[])"
    " ON CONFLICT (job_id, seq) DO NOTHING"
)
# One statement, so the page and the newest seq come from one snapshot: `next` cannot run past
# a line committed between two queries.
_READ: Final = (
    "SELECT l.seq, l.at, l.stream, l.line, s.last, s.truncated FROM"
    " (SELECT (SELECT max(seq) FROM job_log_lines WHERE job_id = %(id)s) AS last,"
    "  (SELECT log_truncated FROM jobs WHERE id = %(id)s) AS truncated) s"
    " LEFT JOIN LATERAL (SELECT seq, at, stream, line FROM job_log_lines"
    "  WHERE job_id = %(id)s AND seq > %(after)s ORDER BY seq LIMIT %(limit)s) l ON true"
    " ORDER BY l.seq"
)

#: A buffered line: job id, seq, at, stream, text.
_Row = tuple[str, int, dt.datetime, str, str]


class _Job:
    """Where a running job's log stands on this node."""

    __slots__ = ("capped", "dropped", "next_seq", "stored", "unwritten")

    def __init__(self) -> None:
        self.next_seq = 1
        self.stored = 0  # bytes of output kept (buffered or written), against the cap
        self.capped = False
        self.dropped = 0  # lines dropped for want of buffer space, not yet told in a marker
        self.unwritten = 0  # lines buffered or in flight


class PostgresJobLogs:
    """Job logs in ``job_log_lines``, written in batches by the running node (a :class:`~engine_hub.run.logs.LogStore`).

    ``pool`` is an open ``AsyncConnectionPool`` the caller owns (close it after :meth:`close`).
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        max_bytes: int = DEFAULT_LOG_MAX_BYTES,
        flush_interval: float = FLUSH_INTERVAL,
        flush_bytes: int = FLUSH_BYTES,
        buffer_bytes: int = BUFFER_BYTES,
    ) -> None:
        self._pool = pool
        self.max_bytes = max_bytes
        self._flush_interval = flush_interval
        self._flush_bytes = flush_bytes
        self._buffer_bytes = buffer_bytes
        self._jobs: dict[str, _Job] = {}
        self._pending: list[_Row] = []
        self._pending_bytes = 0
        self._held = 0  # bytes of the lines buffered or in flight, against buffer_bytes
        self._lock = asyncio.Lock()  # one batch at a time: lines are written in order
        self._wake = asyncio.Event()  # something is buffered
        self._full = asyncio.Event()  # flush_bytes are buffered
        self._task: asyncio.Task[None] | None = None
        self._down = False  # an outage has been logged and is not over
        self._dropping = False  # a drop has been logged since the last write

    @property
    def cap_reason(self) -> str:
        """Why a job's log was cut: the per-job size cap."""
        return byte_cap_reason(self.max_bytes)

    @property
    def disk_bytes(self) -> int | None:
        """None: the lines are in the database, not in files of this node."""
        return None

    def repair(self, job_id: str) -> int:
        """Nothing to repair: a row is a whole line, a torn one cannot exist. Returns 0."""
        return 0

    async def start(self) -> None:
        """Start the background task that writes buffered lines (stopped by :meth:`close`)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="job-log-flusher")

    def append(self, job_id: str, stream: str, text: str) -> bool:
        """Buffer one line of a job's output; return True when this line hit the cap (its marker was buffered).

        Never raises and never waits: the line is written by the background task or by :meth:`finish`.
        """
        job = self._jobs.get(job_id)
        if job is None:
            job = self._jobs[job_id] = _Job()
        if job.capped:
            return False
        text = cut_line(text).replace("\x00", "\ufffd")
        size = len(text.encode()) + 1
        if job.stored + size > self.max_bytes:
            job.capped = True
            self._push(job_id, job, MARKER_STREAM, byte_cap_marker(self.max_bytes), force=True)
            return True
        self._push(job_id, job, stream, text, size=size)
        return False

    def _push(self, job_id: str, job: _Job, stream: str, text: str, *, size: int = 0, force: bool = False) -> None:
        # Markers are forced past the buffer bound: one short line per job, and the log must say why it ends.
        size = size or len(text.encode()) + 1
        if not force and self._held + size > self._buffer_bytes:
            if not self._dropping:
                self._dropping = True
                log.warning("job_log_lines_dropped", job_id=job_id, buffer_bytes=self._buffer_bytes)
            job.dropped += 1
            return
        self._pending.append((job_id, job.next_seq, utcnow(), stream, text))
        job.next_seq += 1
        job.stored += size
        job.unwritten += 1
        self._pending_bytes += size
        self._held += size
        self._wake.set()
        if self._pending_bytes >= self._flush_bytes:
            self._full.set()

    async def finish(self, job_id: str) -> None:
        """Write the job's buffered lines (retrying while the database is down); every line is readable after."""
        job = self._jobs.get(job_id)
        if job is None:
            return
        while job.unwritten or job.dropped:
            await self._flush(None)
        self._jobs.pop(job_id, None)

    async def close(self) -> None:
        """Stop the background task and write what is buffered, giving it up after :data:`CLOSE_TIMEOUT`."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        deadline = asyncio.get_running_loop().time() + CLOSE_TIMEOUT
        while self._pending or any(job.dropped for job in self._jobs.values()):
            if not await self._flush(deadline):
                break

    async def read(self, job_id: str, *, after: int = 0, limit: int = MAX_READ_LINES) -> LogPage:
        """Return up to ``limit`` written lines with ``seq > after``, oldest first (see :class:`LogPage`).

        Raises :class:`~engine_hub.errors.StoreDown` (503 ``store_unavailable``) when the
        database cannot be reached or no pooled connection frees up in time.
        """
        try:
            uuid.UUID(job_id)
        except ValueError:
            return LogPage(lines=[], next=0, truncated=False)  # not a job id the table can hold
        async with pooled(self._pool, "read") as conn:
            cur = await conn.execute(_READ, {"id": job_id, "after": after, "limit": limit})
            rows = await cur.fetchall()
        last, truncated = rows[0][4], rows[0][5]
        lines = [
            {"seq": seq, "at": format_time(at), "stream": stream, "text": text}
            for seq, at, stream, text, _, _ in rows
            if seq is not None
        ]
        # With nothing to return, point at the newest line (as JobLogs.read does).
        return LogPage(lines=lines, next=lines[-1]["seq"] if lines else last or 0, truncated=bool(truncated))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if not self._full.is_set():
                try:
                    await asyncio.wait_for(self._full.wait(), self._flush_interval)
                except TimeoutError:
                    pass
            try:
                await self._flush(None)
            except Exception:
                # A bug, not an outage (those are retried inside): keep the task, and the lines, alive.
                log.exception("job_log_flush_failed")
                await asyncio.sleep(RETRY_MAX)

    async def _flush(self, deadline: float | None) -> bool:
        """Write every buffered line as one batch; False when ``deadline`` passed first (the lines are given up)."""
        async with self._lock:
            rows, size = self._pending, self._pending_bytes
            self._pending, self._pending_bytes = [], 0
            self._wake.clear()
            self._full.clear()
            written = True
            if rows:
                try:
                    written = await self._write_retrying(rows, deadline)
                except BaseException:
                    # Cancelled (close) or a bug: the batch goes back in front of later lines.
                    self._pending[:0] = rows
                    self._pending_bytes += size
                    self._wake.set()
                    raise
                self._held -= size
                for job_id, count in collections.Counter(row[0] for row in rows).items():
                    job = self._jobs.get(job_id)
                    if job is not None:
                        job.unwritten -= count
            self._mark_drops()
            return written

    def _mark_drops(self) -> None:
        # Space was freed: say, in each log that lost lines, how many, where they would have been.
        self._dropping = False
        for job_id, job in self._jobs.items():
            if job.dropped:
                count, job.dropped = job.dropped, 0
                text = f"[{count} lines of output dropped: the database was unreachable and the log buffer full]"
                self._push(job_id, job, MARKER_STREAM, text, force=True)

    async def _write_retrying(self, rows: list[_Row], deadline: float | None) -> bool:
        loop = asyncio.get_running_loop()
        delay = RETRY_MIN
        while True:
            try:
                await self._write(rows)
            except psycopg.OperationalError as exc:
                if not self._down:
                    self._down = True
                    log.warning("job_log_store_unavailable", error=str(exc).strip(), lines=len(rows))
            else:
                if self._down:
                    self._down = False
                    log.info("job_log_store_recovered")
                return True
            if deadline is not None and loop.time() + delay > deadline:
                log.error("job_log_lines_lost", lines=len(rows), jobs=len({row[0] for row in rows}))
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _write(self, rows: list[_Row]) -> None:
        """Insert ``rows`` in one transaction; if the database refuses their data, job by job.

        Raises ``psycopg.OperationalError`` when the database cannot be reached (the caller retries).
        """
        try:
            await self._insert(rows)
            return
        except psycopg.OperationalError:
            raise
        except Exception:
            pass  # the data was refused: find out whose, below
        by_job: dict[str, list[_Row]] = {}
        for row in rows:
            by_job.setdefault(row[0], []).append(row)
        for job_id, job_rows in by_job.items():
            try:
                await self._insert(job_rows)
            except psycopg.OperationalError:
                raise
            except Exception as exc:
                log.error("job_log_rejected", job_id=job_id, lines=len(job_rows), error=str(exc).strip())
                job = self._jobs.get(job_id)
                if job is not None:
                    job.capped = True  # its later lines would be refused too

    async def _insert(self, rows: list[_Row]) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                _INSERT,
                (
                    [row[0] for row in rows],
                    [row[1] for row in rows],
                    [row[2] for row in rows],
                    [row[3] for row in rows],
                    [row[4] for row in rows],
                ),
            )
