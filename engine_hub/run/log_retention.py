"""Log retention: the output of jobs that finished long ago is deleted; the jobs themselves stay.

The engine never deletes a job: its record lives in the journal and the
snapshots for good (journal *segments* are pruned only once a snapshot
holds their state). Job log files, though, would grow without end. With
``--log-retention-days N`` (off by default) the engine deletes the log file
of every job that finished (DONE or FAILED) more than ``N`` days ago. A
READY or RUNNING job's log is never touched.

The log is part of the job's record (its cut is journaled as
``log_truncated``), so its deletion is too: first a ``log_expired`` record
(actor ``system``, source ``engine``, data ``{"bytes", "retentionDays"}``),
then the file. Once the record is applied, ``GET /api/jobs/{id}/logs``
answers 404 ``log_expired``. A file whose deletion failed after its record
is deleted by the next sweep; while the journal is down nothing is deleted.

A sweep runs right after start and then every :data:`SWEEP_SECONDS` (more
often for a retention under a day). The logs say which of them may have
ended before the cutoff (:class:`ExpiringLogs`): the files not modified
since (a log is written until its run ends), or, in a PostgreSQL store, the
jobs that ended before it and still have lines. The job's ``endedAt``
decides. In a PostgreSQL store one node sweeps at a time, so each expiry is
recorded once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol

import structlog
from aiohttp import web

from engine_hub.errors import JournalDown
from engine_hub.jobs.service import JobService
from shared.contract import TRANSITIONS, format_time, utcnow

log = structlog.get_logger("engine.log_retention")

#: Time between two sweeps.
SWEEP_SECONDS: Final = 3600.0
#: Shortest time between two sweeps (for retentions of a small fraction of a day).
MIN_SWEEP_SECONDS: Final = 1.0
SECONDS_PER_DAY: Final = 86_400


class ExpiringLogs(Protocol):
    """Job logs a :class:`LogRetention` can sweep (``FileJobLogs``, ``PostgresJobLogs``)."""

    def sweeping(self) -> AbstractAsyncContextManager[bool]:
        """Hold the right to sweep while inside; yields False when another process holds it."""

    async def old_logs(self, cutoff: dt.datetime) -> list[tuple[str, int]]:
        """``(job id, bytes)`` of the logs whose run may have ended before ``cutoff`` (the sweep checks the job)."""

    async def delete_log(self, job_id: str) -> int | None:
        """Delete a job's log; return its bytes, or None if it had none.

        Raises ``OSError`` (a file) or :class:`~engine_hub.errors.JournalDown` (the store) when it cannot.
        """


class LogRetention:
    """Deletes the log files of jobs that finished more than ``days`` days ago (see the module doc).

    Built without side effects; :meth:`run` sweeps until cancelled, :meth:`sweep` sweeps once.
    """

    def __init__(self, *, service: JobService, logs: ExpiringLogs, days: float) -> None:
        if days <= 0:
            raise ValueError("days must be above 0")
        self._service = service
        self._logs = logs
        self.days = days
        #: Time between sweeps: hourly, or a 24th of a retention shorter than a day.
        self.interval = min(SWEEP_SECONDS, max(MIN_SWEEP_SECONDS, days * SECONDS_PER_DAY / 24))

    async def run(self) -> None:
        """Sweep now and then every :attr:`interval` seconds, until cancelled; a failed sweep is logged."""
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("log_retention_failed")
            await asyncio.sleep(self.interval)

    async def sweep(self, *, now: dt.datetime | None = None) -> int:
        """Delete the logs of jobs that ended before ``now`` minus the retention; return how many went.

        Does nothing (returns 0) while another node of a PostgreSQL store sweeps.
        """
        async with self._logs.sweeping() as mine:
            return await self._sweep(now or utcnow()) if mine else 0

    async def _sweep(self, now: dt.datetime) -> int:
        cutoff = now - dt.timedelta(days=self.days)
        cutoff_text = format_time(cutoff) or ""
        candidates = await self._logs.old_logs(cutoff)
        days = int(self.days) if float(self.days).is_integer() else self.days
        backend, metrics = self._service.backend, self._service.metrics
        removed = 0
        for job_id, size in candidates:
            entry = await backend.get(job_id)
            if entry is None or TRANSITIONS[entry.status]:
                continue  # READY or RUNNING, or a file no job owns: never deleted
            if not entry.log_expired:
                ended = entry.wire()["endedAt"]
                if not isinstance(ended, str) or ended >= cutoff_text:
                    continue
                try:
                    await self._service.expire_log(job_id=job_id, data={"bytes": size, "retentionDays": days})
                except JournalDown:
                    log.warning("log_retention_paused", reason="the journal is unavailable")
                    return removed
            try:
                deleted = await self._logs.delete_log(job_id)
            except (OSError, JournalDown) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                log.error("job_log_delete_failed", job_id=job_id, error=reason)
                continue
            if deleted is not None:
                removed += 1
                metrics.logs_expired += 1
                metrics.log_bytes_expired += deleted
                log.info("job_log_expired", job_id=job_id, bytes=deleted, retention_days=days)
        if removed:
            log.info("log_retention_swept", removed=removed, cutoff=cutoff_text)
        return removed


#: The app's log retention, when ``--log-retention-days`` is set (durable engines and PostgreSQL nodes).
LOG_RETENTION: Final = web.AppKey("log_retention", LogRetention)
