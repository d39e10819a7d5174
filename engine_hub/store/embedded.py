"""The engine's in-memory job store, changed only by applying journal records.

Every change to a job is a journal record ``(action, actor, source, job_id,
data)``. :meth:`JobStore.apply` is the one function that turns a record into
state: the live path appends a record and then applies it, and start-up
replays the journal through the same function, so memory is always exactly
what the journal says.

Status changes happen in :meth:`JobStore._transition` only, along
``shared.contract.TRANSITIONS``; nothing else sets ``status``.

Reads are cheap by construction: each job is kept as its wire JSON bytes
(:class:`engine_hub.store.entry.JobEntry`), and list pages come from indexes
ordered by creation (all jobs, per status, per type, per status and type), so
a page costs O(log n + limit) whatever the store's size or the filter.

Cold jobs are packed: the newest :data:`HOT_JOBS` jobs keep plain wire bytes, every older one
keeps them deflated (:mod:`engine_hub.store.packing` says when and why).

Replay is a bulk load (:meth:`JobStore.replay`): while it runs, changed jobs
are kept as wire dicts and indexes are not maintained; at the end each
changed job is encoded once and the indexes are built in one pass. A job
created, run and finished during replay is thus serialised once, not three
times, which is what makes a start from a long journal fast. Only the
:data:`BULK_OPEN_JOBS` to twice that most recently created unfinished jobs
keep a dict: older ones are encoded then (and parsed again if they do
change later), because a dict per job for a journal of never-run jobs
would hold ~2 KiB a job until the end and leave the heap fragmented after.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable
from typing import Any, Final

import attrs
import structlog

from engine_hub.store.actions import ACTIONS, REQUEST_ACTIONS, Action
from engine_hub.store.entry import (
    Index,
    JobEntry,
    StoreError,
    encode_wire,
    log_transition,
    name_key,
    wire_from_created,
)
from engine_hub.store.heap import paused_gc
from engine_hub.store.legacy_views import RESULT_OK, engine_log_of, result_of
from engine_hub.store.override import OVERRIDE_ACTIONS, Window, apply_record
from engine_hub.store.packing import is_packed, pack, unpack
from engine_hub.store.requests import is_open, next_request, request_of
from engine_hub.store.views import ENGINE_LOG_SIZE, RESULTS_SIZE, StoreViews
from shared.contract import TRANSITIONS, JobStatus, outcome_of
from shared.journal.chain import GENESIS, Record

log = structlog.get_logger("engine.store")


#: ``actor`` of records the engine writes on its own behalf.
SYSTEM_ACTOR: Final = "system"
#: ``source`` of records the engine writes on its own (finishes, interruptions, expiries).
ENGINE_SOURCE: Final = "engine"

#: How many of the newest jobs are never packed: twice the largest page (routes.MAX_LIMIT),
#: so that the first pages never unpack; ~1 MB more than packing them.
HOT_JOBS: Final = 2048

#: How many unfinished jobs a replay keeps as dicts at least (at most twice as many): jobs run
#: soon after they are created, so older open jobs rarely change again during the replay.
BULK_OPEN_JOBS: Final = 4096

__all__ = [
    "ENGINE_LOG_SIZE",
    "ENGINE_SOURCE",
    "HOT_JOBS",
    "RESULTS_SIZE",
    "RESULT_OK",
    "SYSTEM_ACTOR",
    "Action",
    "JobEntry",
    "JobStore",
    "StoreCut",
    "StoreError",
    "engine_log_of",
    "result_of",
]


_STATUSES: Final = {s.value: s for s in JobStatus}


@attrs.frozen(kw_only=True)
class StoreCut:
    """A consistent copy of the store as of record ``seq`` (hash ``head``), for a snapshot.

    Entries are immutable, so copying the lists is enough: later changes
    replace entries and never touch these.
    """

    seq: int
    head: str
    entries: list[JobEntry]
    results: list[str]
    engine_logs: list[dict[str, Any]]
    override: Window | None = None


def _str_or_none(value: Any, what: str) -> str | None:
    if value is not None and type(value) is not str:
        raise StoreError(f"{what} must be a string or null")
    return value


class JobStore(StoreViews):
    """All jobs of the engine, their indexes, and the legacy result and log views.

    Not thread-safe: it lives on the event loop. Mutated only by :meth:`apply`
    (and filled once by :meth:`load` from a snapshot). ``seq``/``head`` name
    the last record applied. ``hot_jobs`` is the size of the hot window
    (see the module doc); at least 1.
    """

    def __init__(self, *, hot_jobs: int = HOT_JOBS) -> None:
        super().__init__(hot_jobs=hot_jobs)
        # Jobs before this position in the all-jobs index are packed (pack_cold's progress).
        self._packed_below = 0
        # Wire dicts of the jobs changed during a bulk replay; None when live.
        self._bulk: dict[str, dict[str, Any]] | None = None
        # The newest SAFE_MODE override window (engine_hub.store.override), built by the same records.
        self.override: Window | None = None
        # Jobs with an open run request, and its expiresAt: what the expiry sweep looks at.
        self._open_requests: dict[str, str] = {}
        self.seq = 0
        self.head = GENESIS

    # -- the one mutation path -------------------------------------------------

    def apply(self, record: Record, *, replay: bool = False) -> JobEntry:
        """Apply one journal record to memory and return the job's new entry.

        Raises :class:`StoreError` (leaving the store unchanged) when the record
        does not fit the current state. ``replay`` silences the per-transition
        log events while the journal is read back at start-up.
        """
        action = ACTIONS.get(record.action)
        if action is None:
            raise StoreError(f"unknown action {record.action!r}")
        old = None if replay else self._entries.get(record.job_id or "")
        try:
            entry = self._apply(action, record)
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{action}: malformed record data: {exc!r}") from None
        self.seq, self.head = record.seq, record.hash
        if old is not None and old.status is not entry.status:
            log_transition(
                log,
                entry=entry,
                from_status=old.status,
                by=entry_run_by(record) if action is Action.RUN_REQUESTED else record.actor,
                reason=record.data.get("reason" if action is Action.RUN_REQUESTED else "error"),
                action=str(action),
                source=record.source,
            )
        return entry

    def apply_override(self, record: Record) -> Window:
        """Apply one override record (:mod:`engine_hub.store.override`) and return the window after it.

        Raises :class:`StoreError` (leaving the store unchanged) when the record does not fit.
        """
        self.override = apply_record(self.override, record)
        self.seq, self.head = record.seq, record.hash
        return self.override

    def _apply(self, action: Action, record: Record) -> JobEntry:
        at = record.at
        if action is Action.JOB_CREATED:
            return self._create(record)
        entry = self._entries.get(record.job_id or "")
        if entry is None:
            raise StoreError(f"{action}: unknown job {record.job_id!r}")
        data = record.data
        if action is Action.JOB_PLANNED:
            # A plan is not a run: it leaves the job as it is (the record is the audit of what it printed).
            digest = data["sha256"]
            if type(digest) is not str or len(digest) != 64:
                raise StoreError(f"{action}: sha256 must be a hex SHA-256")
            return entry
        if action is Action.RUN_REQUESTED:
            run_by = entry_run_by(record)
            reason = _str_or_none(data.get("reason"), "reason")
            request = next_request(self._request_of(entry), action, actor=record.actor, data=data)
            new = self._transition(
                entry,
                JobStatus.RUNNING,
                at=at,
                by=run_by,
                reason=reason,
                changes={"startedAt": at, "runBy": run_by, "runReason": reason, "runRequest": request},
            )
            self._open_requests.pop(entry.id, None)
            self._legacy_log(record)
        elif action in REQUEST_ACTIONS:
            if entry.status is not JobStatus.READY:
                raise StoreError(f"{action}: job {entry.id} is {entry.status}, not READY")
            request = next_request(self._request_of(entry), action, actor=record.actor, data=data)
            new = self._rewire(entry, {"runRequest": request})
            if is_open(request):
                self._open_requests[entry.id] = request["expiresAt"]
            else:
                self._open_requests.pop(entry.id, None)
        elif action in (Action.JOB_FINISHED, Action.JOB_INTERRUPTED):
            status = _STATUSES.get(data.get("status", "FAILED"))
            if status is None:
                raise StoreError(f"{action}: unknown status {data.get('status')!r}")
            error = _str_or_none(data.get("error"), "error")
            exit_code = data.get("exitCode")
            if exit_code is not None and type(exit_code) is not int:
                raise StoreError(f"{action}: exitCode must be an integer or null")
            if status is JobStatus.FAILED and not error:
                raise StoreError(f"{action}: a FAILED job needs an error")
            new = self._transition(
                entry,
                status,
                at=at,
                by=record.actor,
                reason=error,
                changes={"endedAt": at, "exitCode": exit_code, "error": error},
            )
            self._legacy_log(record)
            self._results.append(entry.id)
        elif action is Action.JOB_STARTED:
            # Built directly: NamedTuple._replace is several times slower, and replay does this a lot.
            new = JobEntry(
                entry.seq,
                entry.id,
                entry.type,
                entry.status,
                entry.stored,
                int(data["pid"]),
                entry.cancel_requested_by,
                entry.log_truncated,
                entry.log_expired,
                entry.name_key,
            )
        elif action is Action.CANCEL_REQUESTED:
            # Audit-only when the run ended meanwhile (the request raced the exit): no change.
            if entry.status is not JobStatus.RUNNING or entry.cancel_requested_by is not None:
                return entry
            # The first canceller is the one the run reports ("cancelled by <first>").
            new = entry._replace(cancel_requested_by=record.actor)
            self._legacy_log(record)
        elif action is Action.LOG_EXPIRED:
            # Retention deletes the output of finished runs only; a live run's log is still written.
            if TRANSITIONS[entry.status]:
                raise StoreError(f"{action}: job {entry.id} is {entry.status}, not finished")
            new = entry._replace(log_expired=True)
        else:  # Action.LOG_TRUNCATED
            new = entry._replace(log_truncated=True)
        self._put(entry, new)
        return new

    def _create(self, record: Record) -> JobEntry:
        wire = wire_from_created(record.data, job_id=record.job_id)
        job_id = wire["id"]
        if job_id in self._entries:
            raise StoreError(f"job_created: job {job_id} already exists")
        # One string object per type name, shared by every job of that type.
        type_name = sys.intern(wire["type"])
        if self._bulk is not None:
            self._bulk[job_id] = wire
            encoded = b""  # encoded once, when the replay ends or the job leaves the bulk dicts
        else:
            encoded = encode_wire(wire)
        name = wire["name"]
        if type(name) is not str:
            raise StoreError("malformed job data: name must be a string")
        entry = JobEntry(record.seq, job_id, type_name, JobStatus.READY, encoded, name_key=name_key(name))
        self._entries[job_id] = entry
        if self._bulk is None:
            self._all.add(entry)
            self._index_add(entry)
            self._cool_oldest_hot()
        elif len(self._bulk) >= 2 * BULK_OPEN_JOBS:
            self._encode_bulk(len(self._bulk) - BULK_OPEN_JOBS)
        self._legacy_log(record)
        return entry

    def _cool_oldest_hot(self) -> None:
        """Pack the job a creation just pushed out of the hot window."""
        entries, hot = self._all.entries, self._hot_jobs
        if len(entries) > hot:
            entry = entries[-hot - 1]
            if not is_packed(entry.stored):  # it was in the window, so plain: the check guards a double pack
                self._put(entry, entry._replace(stored=pack(entry.stored)))

    def _transition(
        self, entry: JobEntry, to: JobStatus, *, at: str, by: str, reason: str | None, changes: dict[str, Any]
    ) -> JobEntry:
        """Return ``entry`` moved to status ``to`` with a history entry: the only place status changes."""
        if to not in TRANSITIONS[entry.status]:
            raise StoreError(f"job {entry.id}: transition {entry.status} -> {to} is not allowed")
        bulk = self._bulk
        wire = bulk.get(entry.id) if bulk is not None else None
        if wire is None:
            wire = entry.wire()
        wire["status"] = str(to)
        wire.update(changes)
        wire["outcome"] = outcome_of(to, wire["error"])
        wire["history"].append({"status": str(to), "at": at, "by": by, "reason": reason})
        if bulk is not None and TRANSITIONS[to]:
            bulk[entry.id] = wire
            encoded = entry.stored  # stale until the replay ends
        else:
            # Live, or final during a replay: a final job's JSON never changes again, so encode
            # it now and let its dict go (a replay then holds dicts for unfinished jobs only).
            encoded = encode_wire(wire)
            if bulk is not None:
                bulk.pop(entry.id, None)
            elif entry.seq < self._hot_from():
                encoded = pack(encoded)
        # A run's pid matters only while it runs (the journal keeps it): a finished job drops it.
        pid = entry.pid if TRANSITIONS[to] else None
        return JobEntry(
            entry.seq,
            entry.id,
            entry.type,
            to,
            encoded,
            pid,
            entry.cancel_requested_by,
            entry.log_truncated,
            entry.log_expired,
            entry.name_key,
        )

    def _request_of(self, entry: JobEntry) -> dict[str, Any] | None:
        """The job's current ``runRequest`` (from its bulk dict during a replay)."""
        wire = self._bulk.get(entry.id) if self._bulk is not None else None
        return wire.get("runRequest") if wire is not None else request_of(entry)

    def _rewire(self, entry: JobEntry, changes: dict[str, Any]) -> JobEntry:
        """Return ``entry`` with ``changes`` made to its wire JSON, its status unchanged (see :meth:`_transition`)."""
        bulk = self._bulk
        wire = bulk.get(entry.id) if bulk is not None else None
        if wire is None:
            wire = entry.wire()
        wire.update(changes)
        if bulk is not None:
            bulk[entry.id] = wire
            encoded = entry.stored  # stale until the replay ends
        else:
            encoded = encode_wire(wire)
            if entry.seq < self._hot_from():
                encoded = pack(encoded)
        return entry._replace(stored=encoded)

    def open_requests(self) -> dict[str, str]:
        """The jobs with an open run request, each with the request's ``expiresAt`` (a copy)."""
        return dict(self._open_requests)

    def _put(self, old: JobEntry, new: JobEntry) -> None:
        self._entries[new.id] = new
        if self._bulk is not None:
            return  # indexes are rebuilt when the replay ends
        self._all.replace(new)
        self._by_type[new.type].replace(new)
        if old.status is new.status:
            self._by_status[new.status].replace(new)
            self._by_status_type[(new.status, new.type)].replace(new)
        else:
            self._by_status[old.status].remove(old)
            self._by_status_type[(old.status, old.type)].remove(old)
            self._by_status[new.status].add(new)
            self._by_status_type.setdefault((new.status, new.type), Index()).add(new)

    def _index_add(self, entry: JobEntry) -> None:
        self._by_status[entry.status].add(entry)
        self._by_type.setdefault(entry.type, Index()).add(entry)
        self._by_status_type.setdefault((entry.status, entry.type), Index()).add(entry)

    def _legacy_log(self, record: Record) -> None:
        entry = engine_log_of(record)
        if entry is not None:
            self._engine_logs.append(entry)

    # -- bulk loading ------------------------------------------------------------

    def replay(self, records: Iterable[Record]) -> int:
        """Apply every record of a journal read back at start-up; return how many.

        A bulk load: see the module doc. If a record does not apply, the
        :class:`StoreError` propagates and the store must not be used.
        """
        self._bulk = {}
        count = 0
        record: Record | None = None
        try:
            with paused_gc():
                for record in records:
                    if record.action in OVERRIDE_ACTIONS:
                        self.apply_override(record)
                    else:
                        self.apply(record, replay=True)
                    count += 1
        except StoreError as exc:
            assert record is not None
            raise StoreError(f"record seq {record.seq} ({record.action}, job {record.job_id}): {exc}") from None
        finally:
            self._encode_bulk(len(self._bulk))
            self._bulk = None
            self._rebuild_indexes()
        return count

    def _encode_bulk(self, count: int) -> None:
        """Encode the oldest ``count`` jobs kept as bulk dicts into their entries, packed, and drop the dicts.

        Packed at once, unlike jobs that finish during the replay: an open
        job's JSON (one or two history entries) is small enough for Python's
        own allocator, whose pools a later free leaves scattered through the
        heap (RSS stays), while a finished job's (~550 bytes and up) lives in
        the C heap, which gives pages back. Few jobs stay open for long, so
        this costs little; the window's are unpacked when the load ends.
        """
        bulk, entries = self._bulk, self._entries
        assert bulk is not None
        for job_id in list(itertools.islice(bulk, count)):
            entries[job_id] = entries[job_id]._replace(stored=pack(encode_wire(bulk.pop(job_id))))

    def load(
        self,
        *,
        entries: Iterable[JobEntry],
        results: Iterable[str],
        engine_logs: Iterable[dict[str, Any]],
        seq: int,
        head: str,
        override: Window | None = None,
    ) -> None:
        """Fill an empty store from a snapshot (the state of :meth:`cut` as of ``seq``/``head``)."""
        if self._entries or self.seq:
            raise RuntimeError("load() needs an empty store")
        self.override = override
        for entry in entries:
            self._entries[entry.id] = entry
            if entry.status is JobStatus.READY and is_open(request := request_of(entry)):
                self._open_requests[entry.id] = request["expiresAt"]
        self._results.extend(r for r in results if r in self._entries)
        self._engine_logs.extend(engine_logs)
        self.seq, self.head = seq, head
        self._rebuild_indexes()

    def _rebuild_indexes(self) -> None:
        ordered = list(self._entries.values())
        if any(ordered[i].seq >= ordered[i + 1].seq for i in range(len(ordered) - 1)):
            ordered.sort(key=lambda e: e.seq)
        self._settle_window(ordered)
        # Grouped with plain appends (entries are in seq order), then turned into indexes: a
        # per-entry Index.add() would cost several times more for hundreds of thousands of jobs.
        by_status: dict[JobStatus, list[JobEntry]] = {s: [] for s in JobStatus}
        by_type: dict[str, list[JobEntry]] = {}
        by_status_type: dict[tuple[JobStatus, str], list[JobEntry]] = {}
        for entry in ordered:
            by_status[entry.status].append(entry)
            group = by_type.get(entry.type)
            if group is None:
                group = by_type[entry.type] = []
            group.append(entry)
            key = (entry.status, entry.type)
            group = by_status_type.get(key)
            if group is None:
                group = by_status_type[key] = []
            group.append(entry)
        self._all = Index.of(ordered)
        self._by_status = {s: Index.of(group) for s, group in by_status.items()}
        self._by_type = {t: Index.of(group) for t, group in by_type.items()}
        self._by_status_type = {k: Index.of(group) for k, group in by_status_type.items()}

    def _settle_window(self, ordered: list[JobEntry]) -> None:
        """Unpack any packed job in the hot window, in ``ordered`` (every entry, by seq) and the id map.

        A snapshot holds the packing of the store that wrote it, whose window
        may have been larger. Cold jobs left plain are :meth:`pack_cold`'s.
        """
        entries = self._entries
        for i in range(max(0, len(ordered) - self._hot_jobs), len(ordered)):
            entry = ordered[i]
            if is_packed(entry.stored):
                ordered[i] = entries[entry.id] = entry._replace(stored=unpack(entry.stored))
        self._packed_below = 0

    def pack_cold(self, limit: int) -> bool:
        """Pack cold jobs a bulk load left plain, looking at ``limit`` jobs at most; return whether any are left.

        Oldest first, from where the previous call stopped; each call costs
        at most ``limit`` packs (a few microseconds each: docs/performance.md),
        so a caller on the event loop bounds its pause. Jobs packed meanwhile by live changes are skipped.
        """
        entries = self._all.entries
        end = len(entries) - self._hot_jobs
        at = self._packed_below
        stop = min(end, at + limit)
        while at < stop:
            entry = entries[at]
            if not is_packed(entry.stored):
                self._put(entry, entry._replace(stored=pack(entry.stored)))
            at += 1
        self._packed_below = at
        return at < end

    def cut(self) -> StoreCut:
        """Return a consistent copy of the store for a snapshot (cheap: copies pointer lists)."""
        return StoreCut(
            seq=self.seq,
            head=self.head,
            entries=list(self._all.entries),
            results=list(self._results),
            engine_logs=list(self._engine_logs),
            override=self.override,
        )


def entry_run_by(record: Record) -> str:
    """The user a ``run_requested`` record names as runner (``runBy``, else the record's actor)."""
    return str(record.data.get("runBy") or record.actor)
