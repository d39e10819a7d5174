"""The engine's in-memory job store, changed only by applying journal records.

Every change to a job is a journal record ``(action, actor, source, job_id,
data)``. :meth:`JobStore.apply` is the one function that turns a record into
state: the live path appends a record and then applies it, and start-up
replays the journal through the same function, so memory is always exactly
what the journal says.

Status changes happen in :func:`_transition` only, along
``shared.contract.TRANSITIONS``; nothing else sets ``status``.

Reads are cheap by construction: each job is serialised to JSON bytes once
per change (:attr:`JobEntry.encoded`), and list pages come from indexes
ordered by creation (all jobs, per status, per type, per status and type), so
a page costs O(log n + limit) whatever the store's size or the filter.
"""

from __future__ import annotations

import bisect
import datetime as dt
import enum
import json
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs
import structlog

from shared.contract import (
    JOB_FIELDS,
    TRANSITIONS,
    HistoryEntry,
    Job,
    JobStatus,
    LogLevel,
    engine_log_json,
    job_result_json,
    parse_time,
)
from shared.journal import Record

log = structlog.get_logger("engine.store")

#: How many legacy EngineLog entries are kept (a ring buffer, as in the original).
ENGINE_LOG_SIZE: Final = 500

#: The JobResult output of a job that ended DONE (the original's wording).
RESULT_OK: Final = "Job completed successfully"

#: ``actor`` of records the engine writes on its own behalf.
SYSTEM_ACTOR: Final = "system"


class Action(enum.StrEnum):
    """Every journal action the engine writes for a job, and nothing else."""

    JOB_CREATED = "job_created"
    RUN_REQUESTED = "run_requested"
    JOB_STARTED = "job_started"
    LOG_TRUNCATED = "log_truncated"
    JOB_FINISHED = "job_finished"
    CANCEL_REQUESTED = "cancel_requested"
    JOB_INTERRUPTED = "job_interrupted"


class StoreError(Exception):
    """A record that cannot be applied: a forbidden transition, an unknown job or bad data.

    Live code checks before it appends, so this means a corrupt journal or a
    bug; the store is left unchanged.
    """


@attrs.define(kw_only=True)
class JobEntry:
    """A job in the store plus what the store keeps beside it.

    ``seq`` is the journal sequence number of the job's creation and orders
    every listing. ``encoded`` is ``job.to_json()`` as JSON bytes, refreshed
    on each change. Only :class:`JobStore` mutates entries.
    """

    seq: int
    job: Job
    encoded: bytes
    pid: int | None = None
    cancel_requested_by: str | None = None
    log_truncated: bool = False


def encode_job(job: Job) -> bytes:
    """Serialise a job's wire shape to compact UTF-8 JSON bytes."""
    return json.dumps(job.to_json(), ensure_ascii=False, separators=(",", ":")).encode()


def job_from_json(data: Mapping[str, Any]) -> Job:
    """Rebuild a :class:`Job` from its wire shape (as stored in a ``job_created`` record).

    Raises :class:`StoreError` when a field is missing or malformed.
    """
    missing = [name for name in JOB_FIELDS if name not in data]
    if missing:
        raise StoreError(f"job data lacks {', '.join(missing)}")
    try:
        history = tuple(
            HistoryEntry(status=JobStatus(h["status"]), at=_time(h["at"]), by=str(h["by"]), reason=h.get("reason"))
            for h in data["history"]
        )
        params = data["params"]
        if not isinstance(params, dict):
            raise StoreError("job params must be an object")
        return Job(
            id=str(data["id"]), type=str(data["type"]), name=str(data["name"]), params=dict(params),
            status=JobStatus(data["status"]), created_at=_time(data["createdAt"]),
            created_by=str(data["createdBy"]), started_at=parse_time(data["startedAt"]),
            run_by=data["runBy"], run_reason=data["runReason"], ended_at=parse_time(data["endedAt"]),
            exit_code=data["exitCode"], error=data["error"], history=history,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"malformed job data: {exc}") from None


def _time(value: Any) -> dt.datetime:
    parsed = parse_time(value) if isinstance(value, str) else None
    if parsed is None:
        raise StoreError(f"not a timestamp: {value!r}")
    return parsed


def _transition(job: Job, to: JobStatus, *, at: dt.datetime, by: str, reason: str | None,
                **changes: Any) -> Job:
    """Return ``job`` moved to status ``to`` with a history entry: the only place status changes."""
    if to not in TRANSITIONS[job.status]:
        raise StoreError(f"job {job.id}: transition {job.status} -> {to} is not allowed")
    entry = HistoryEntry(status=to, at=at, by=by, reason=reason)
    return attrs.evolve(job, status=to, history=(*job.history, entry), **changes)


class _Index:
    """Entries ordered by creation sequence, as two parallel lists (keys to bisect, entries to page).

    New jobs are the newest, so adding is an append; a job changing status is
    removed from one index and inserted into another by bisection (a pointer
    ``memmove``: microseconds even with a million jobs). A page is a list
    slice: O(log n + limit), whatever the size.
    """

    __slots__ = ("seqs", "entries")

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.entries: list[JobEntry] = []

    def __len__(self) -> int:
        return len(self.seqs)

    def add(self, entry: JobEntry) -> None:
        seqs = self.seqs
        if not seqs or entry.seq > seqs[-1]:
            seqs.append(entry.seq)
            self.entries.append(entry)
        else:
            at = bisect.bisect_left(seqs, entry.seq)
            seqs.insert(at, entry.seq)
            self.entries.insert(at, entry)

    def remove(self, entry: JobEntry) -> None:
        at = bisect.bisect_left(self.seqs, entry.seq)
        if at == len(self.seqs) or self.seqs[at] != entry.seq:
            raise StoreError(f"index out of step: job {entry.job.id} is missing")
        del self.seqs[at]
        del self.entries[at]

    def page(self, limit: int, before: int | None) -> tuple[list[bytes], JobEntry | None]:
        end = len(self.seqs) if before is None else bisect.bisect_left(self.seqs, before)
        start = max(0, end - limit)
        chunk = self.entries[start:end]
        chunk.reverse()
        return [e.encoded for e in chunk], (chunk[-1] if start > 0 and chunk else None)


class JobStore:
    """All jobs of the engine, their indexes, and the legacy result and log views.

    Not thread-safe: it lives on the event loop. Mutated only by :meth:`apply`.
    """

    def __init__(self) -> None:
        self._entries: dict[str, JobEntry] = {}
        self._all = _Index()
        self._by_status: dict[JobStatus, _Index] = {s: _Index() for s in JobStatus}
        self._by_type: dict[str, _Index] = {}
        self._by_status_type: dict[tuple[JobStatus, str], _Index] = {}
        self._engine_logs: deque[dict[str, Any]] = deque(maxlen=ENGINE_LOG_SIZE)
        self._results: list[dict[str, Any]] = []

    # -- the one mutation path -------------------------------------------------

    def apply(self, record: Record, *, replay: bool = False) -> JobEntry:
        """Apply one journal record to memory and return the entry of the job it touched.

        Raises :class:`StoreError` (leaving the store unchanged) when the record
        does not fit the current state. ``replay`` silences the per-transition
        log events while the journal is read back at start-up.
        """
        try:
            action = Action(record.action)
        except ValueError:
            raise StoreError(f"unknown action {record.action!r}") from None
        try:
            return self._apply(action, record, replay)
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{action}: malformed record data: {exc!r}") from None

    def _apply(self, action: Action, record: Record, replay: bool) -> JobEntry:
        at = _time(record.at)
        if action is Action.JOB_CREATED:
            return self._create(record, at)
        entry = self._entries.get(record.job_id or "")
        if entry is None:
            raise StoreError(f"{action}: unknown job {record.job_id!r}")
        job = entry.job
        data = record.data
        if action is Action.RUN_REQUESTED:
            run_by = str(data.get("runBy") or record.actor)
            reason = data.get("reason")
            new = _transition(job, JobStatus.RUNNING, at=at, by=run_by, reason=reason,
                              started_at=at, run_by=run_by, run_reason=reason)
            self._legacy_log(LogLevel.INFO, "Job started", job.id, at)
        elif action in (Action.JOB_FINISHED, Action.JOB_INTERRUPTED):
            status = JobStatus(data.get("status", JobStatus.FAILED))
            error = data.get("error")
            exit_code = data.get("exitCode")
            if status is JobStatus.FAILED and not error:
                raise StoreError(f"{action}: a FAILED job needs an error")
            new = _transition(job, status, at=at, by=record.actor, reason=error,
                              ended_at=at, exit_code=exit_code, error=error)
            if status is JobStatus.DONE:
                self._legacy_log(LogLevel.INFO, "Job finished", job.id, at)
                output = RESULT_OK
            else:
                output = f"Job failed: {error}"
                self._legacy_log(LogLevel.ERROR, output, job.id, at)
            self._results.append(job_result_json(job_id=job.id, engine=job.type, name=job.name,
                                                 output=output, created_at=at))
        elif action is Action.JOB_STARTED:
            entry.pid = int(data["pid"])
            return entry
        elif action is Action.CANCEL_REQUESTED:
            # Audit-only when the run ended meanwhile (the request raced the exit): no change.
            if job.status is JobStatus.RUNNING and entry.cancel_requested_by is None:
                # The first canceller is the one the run reports ("cancelled by <first>").
                entry.cancel_requested_by = record.actor
                self._legacy_log(LogLevel.WARN, f"Cancel requested by {record.actor}", job.id, at)
            return entry
        else:  # Action.LOG_TRUNCATED
            entry.log_truncated = True
            return entry
        self._replace(entry, new)
        if not replay:
            log.info("job_transition", job_id=job.id, type=job.type, from_status=str(job.status),
                     to_status=str(new.status), by=new.history[-1].by, reason=new.history[-1].reason,
                     action=str(action), source=record.source)
        return entry

    def replay(self, records: Iterable[Record]) -> int:
        """Apply every record of a journal read back at start-up; return how many."""
        count = 0
        for record in records:
            self.apply(record, replay=True)
            count += 1
        return count

    def _create(self, record: Record, at: dt.datetime) -> JobEntry:
        job = job_from_json(record.data)
        if record.job_id != job.id:
            raise StoreError(f"job_created: record job id {record.job_id!r} differs from {job.id!r}")
        if job.id in self._entries:
            raise StoreError(f"job_created: job {job.id} already exists")
        if job.status is not JobStatus.READY:
            raise StoreError(f"job_created: a new job must be READY, not {job.status}")
        entry = JobEntry(seq=record.seq, job=job, encoded=encode_job(job))
        self._entries[job.id] = entry
        self._all.add(entry)
        self._index_add(entry)
        self._legacy_log(LogLevel.INFO, "Job created", job.id, at)
        return entry

    def _replace(self, entry: JobEntry, new: Job) -> None:
        self._index_remove(entry)
        entry.job = new
        entry.encoded = encode_job(new)
        self._index_add(entry)

    def _index_add(self, entry: JobEntry) -> None:
        job = entry.job
        self._by_status[job.status].add(entry)
        self._by_type.setdefault(job.type, _Index()).add(entry)
        self._by_status_type.setdefault((job.status, job.type), _Index()).add(entry)

    def _index_remove(self, entry: JobEntry) -> None:
        job = entry.job
        self._by_status[job.status].remove(entry)
        self._by_type[job.type].remove(entry)
        self._by_status_type[(job.status, job.type)].remove(entry)

    def _legacy_log(self, level: LogLevel, message: str, job_id: str | None, at: dt.datetime) -> None:
        self._engine_logs.append(engine_log_json(level=level, message=message, job_id=job_id, timestamp=at))

    # -- reads -------------------------------------------------------------------

    def get(self, job_id: str) -> JobEntry | None:
        """Return the entry of a job, or ``None`` for an unknown id."""
        return self._entries.get(job_id)

    def __len__(self) -> int:
        return len(self._entries)

    def has_type(self, type_name: str) -> bool:
        """Whether any job of this type was ever created."""
        return type_name in self._by_type

    def count(self, status: JobStatus, type_name: str | None = None) -> int:
        """Return how many jobs have ``status`` (of ``type_name`` when given), in O(1)."""
        if type_name is None:
            return len(self._by_status[status])
        index = self._by_status_type.get((status, type_name))
        return 0 if index is None else len(index)

    def running_job_ids(self) -> list[str]:
        """Return the ids of every RUNNING job, oldest first."""
        return [entry.job.id for entry in self._by_status[JobStatus.RUNNING].entries]

    def page(self, *, limit: int, status: JobStatus | None = None, type_name: str | None = None,
             before: JobEntry | None = None) -> tuple[list[bytes], JobEntry | None]:
        """Return one page of encoded jobs, newest first, and the cursor of the next page.

        ``before`` is the entry of the cursor job: only jobs created before it
        are returned, whether or not it matches the filter itself. The second
        value is the last entry of the page when older matches exist, else
        ``None``. Costs O(log n + limit).
        """
        index: _Index | None
        if status is not None and type_name is not None:
            index = self._by_status_type.get((status, type_name))
        elif status is not None:
            index = self._by_status[status]
        elif type_name is not None:
            index = self._by_type.get(type_name)
        else:
            index = self._all
        if index is None:
            return [], None
        return index.page(limit, None if before is None else before.seq)

    def engine_logs(self, limit: int) -> list[dict[str, Any]]:
        """Return the newest ``limit`` legacy EngineLog entries, oldest first."""
        size = len(self._engine_logs)
        return [self._engine_logs[i] for i in range(max(0, size - limit), size)]

    def results(self, limit: int) -> list[dict[str, Any]]:
        """Return the newest ``limit`` legacy JobResult entries, oldest first."""
        return self._results[-limit:] if limit > 0 else []

