"""What the store keeps per job, and the ordered indexes over it.

A job lives in memory as one immutable :class:`JobEntry` tuple: its wire
JSON as bytes (``stored``), plain or, for a cold finished job, packed (see
:mod:`engine_hub.store.packing`), plus the few fields that indexes and
checks need (seq, id, type, status, pid, canceller, log truncation). No
per-job dict or attrs object stays alive: a job's
:class:`shared.contract.Job` is decoded from the bytes only when code needs
it (a run needs its params). Every reader gets the wire bytes through
:attr:`JobEntry.encoded` (or :meth:`Index.page`), never from ``stored``.

An entry never changes; a new version replaces it (in the id map and every
index), so a list of entries taken at any moment is a consistent copy of
the store (what a snapshot writes from a worker thread).
"""

from __future__ import annotations

import bisect
import itertools
import json
import operator
import sys
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from engine_hub.store.packing import wire_bytes
from shared.contract import JOB_FIELDS, HistoryEntry, Job, JobStatus, parse_time

#: Compact UTF-8 JSON, built once: ``json.dumps`` with options builds an encoder per call.
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

#: Wire fields a job written by an older engine may lack (they were added later), with the value they
#: read as. ``outcome`` is derived from status and error wherever a job's JSON is built or changed.
OPTIONAL_FIELDS: Final = frozenset({"runRequest", "outcome", "copyOf", "copies"})


def log_transition(
    log: Any, *, entry: JobEntry, from_status: JobStatus, by: str, reason: Any, action: str, source: str
) -> None:
    """Log ``job_transition`` for a live status change (both stores: one event, one shape)."""
    log.info(
        "job_transition",
        job_id=entry.id,
        type=entry.type,
        from_status=str(from_status),
        to_status=str(entry.status),
        by=by,
        reason=reason,
        action=action,
        source=source,
    )


class StoreError(Exception):
    """A record that cannot be applied: a forbidden transition, an unknown job or bad data.

    Live code checks before it appends, so this means a corrupt journal or a
    bug; the store is left unchanged.
    """


class JobEntry(NamedTuple):
    """One job in the store: immutable; :class:`engine_hub.store.embedded.JobStore` swaps in new versions.

    ``seq`` is the journal seq of the job's creation and orders every
    listing. ``stored`` is the job's wire JSON (keys in ``JOB_FIELDS``
    order), packed when the job is cold: read it through :attr:`encoded`.
    ``pid`` is the run's process id while it runs,
    ``cancel_requested_by`` the first canceller of the run, ``log_truncated``
    whether the run's output hit its cap, ``log_expired`` whether log
    retention deleted the run's output (``log_expired`` record). ``name_key``
    is the job's name casefolded (:func:`name_key`), what a name search
    (``q=``) compares: kept here so that a search reads no job's JSON.
    """

    seq: int
    id: str
    type: str
    status: JobStatus
    stored: bytes
    pid: int | None = None
    cancel_requested_by: str | None = None
    log_truncated: bool = False
    log_expired: bool = False
    name_key: str = ""

    @property
    def encoded(self) -> bytes:
        """The job's wire JSON bytes, as served (unpacked when the entry is cold)."""
        return wire_bytes(self.stored)

    @property
    def job(self) -> Job:
        """The job as a domain object, decoded from ``encoded`` (costs a parse: not for hot paths)."""
        return job_from_json(json.loads(self.encoded))

    def wire(self) -> dict[str, Any]:
        """A fresh copy of the job's wire JSON as a dict."""
        data: dict[str, Any] = json.loads(self.encoded)
        return data


def name_key(name: str) -> str:
    """What a name search compares: the name casefolded, interned (jobs often share a name: one string for all)."""
    return sys.intern(name.casefold())


def encode_wire(wire: Mapping[str, Any]) -> bytes:
    """Serialise a job's wire dict to compact UTF-8 JSON bytes (keys in the dict's order)."""
    return _ENCODER.encode(wire).encode()


def encode_job(job: Job) -> bytes:
    """Serialise a job's wire shape to compact UTF-8 JSON bytes."""
    return encode_wire(job.to_json())


def wire_from_created(data: Mapping[str, Any], *, job_id: str | None) -> dict[str, Any]:
    """Check a ``job_created`` record's job JSON and return it in wire order (a new dict).

    Cheap by design (replay runs it for every job ever created): it checks
    that every field is there, that the job is new (READY, one history
    entry's worth of shape) and matches the record's ``jobId``; times and
    values were checked when the job was created. Raises :class:`StoreError`.
    """
    missing = [name for name in JOB_FIELDS if name not in data and name not in OPTIONAL_FIELDS]
    if missing:
        raise StoreError(f"job data lacks {', '.join(missing)}")
    wire = {name: data.get(name) for name in JOB_FIELDS}
    if wire["runRequest"] is not None:
        raise StoreError("job_created: a new job has no run request")
    if wire["outcome"] is not None or wire["copies"] not in (None, []):
        raise StoreError("job_created: a new job has no outcome and no copies")
    wire["copies"] = []
    if wire["copyOf"] is not None and type(wire["copyOf"]) is not str:
        raise StoreError("malformed job data: copyOf must be a job id or null")
    if type(wire["id"]) is not str or type(wire["type"]) is not str or type(wire["params"]) is not dict:
        raise StoreError("malformed job data: id, type and params must be a string, a string and an object")
    if job_id != wire["id"]:
        raise StoreError(f"job_created: record job id {job_id!r} differs from {wire['id']!r}")
    if wire["status"] != JobStatus.READY:
        raise StoreError(f"job_created: a new job must be READY, not {wire['status']}")
    history = wire["history"]
    if type(history) is not list or not all(type(h) is dict for h in history):
        raise StoreError("malformed job data: history must be a list of objects")
    # Canonical journal lines sort keys; the wire order is the contract's, so rebuild it (and sort
    # params, whose order the contract leaves open), so that a job replayed from the journal is
    # byte for byte the job that was served live.
    wire["params"] = dict(sorted(wire["params"].items()))
    wire["history"] = [
        {"status": h["status"], "at": h["at"], "by": h["by"], "reason": h.get("reason")} for h in history
    ]
    return wire


def job_from_json(data: Mapping[str, Any]) -> Job:
    """Rebuild a :class:`Job` from its wire shape.

    Raises :class:`StoreError` when a field is missing or malformed.
    """
    missing = [name for name in JOB_FIELDS if name not in data and name not in OPTIONAL_FIELDS]
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
            id=str(data["id"]),
            type=str(data["type"]),
            name=str(data["name"]),
            params=dict(params),
            status=JobStatus(data["status"]),
            created_at=_time(data["createdAt"]),
            created_by=str(data["createdBy"]),
            started_at=parse_time(data["startedAt"]),
            run_by=data["runBy"],
            run_reason=data["runReason"],
            ended_at=parse_time(data["endedAt"]),
            exit_code=data["exitCode"],
            error=data["error"],
            history=history,
            run_request=data.get("runRequest"),
            copy_of=data.get("copyOf"),
            copies=tuple(str(c) for c in data.get("copies") or ()),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"malformed job data: {exc}") from None


def _time(value: Any) -> Any:
    parsed = parse_time(value) if isinstance(value, str) else None
    if parsed is None:
        raise StoreError(f"not a timestamp: {value!r}")
    return parsed


_SEQ: Final = operator.itemgetter(0)  # JobEntry.seq, as a C-level key for bisect
_STORED: Final = operator.itemgetter(4)
_NAME_KEY: Final = operator.itemgetter(
    9
)  # JobEntry.name_key  # JobEntry.stored, read without a Python-level call per entry


class Index:
    """Entries ordered by creation seq, bisected on the entries' seq itself (no parallel key list).

    New jobs are the newest, so adding is an append; a job changing status is
    removed from one index and inserted into another by bisection (a pointer
    ``memmove``: microseconds even with a million jobs). A page is a list
    slice: O(log n + limit), whatever the size. One pointer per job and
    index is all it costs.
    """

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[JobEntry] = []

    @classmethod
    def of(cls, entries: list[JobEntry]) -> Index:
        """An index over ``entries``, which must be in seq order (the list is taken, not copied)."""
        index = cls()
        index.entries = entries
        return index

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: JobEntry) -> None:
        """Insert ``entry`` at its seq's place (an append for the newest)."""
        entries = self.entries
        if not entries or entry.seq > entries[-1].seq:
            entries.append(entry)
        else:
            entries.insert(bisect.bisect_left(entries, entry.seq, key=_SEQ), entry)

    def _find(self, entry: JobEntry) -> int:
        at = bisect.bisect_left(self.entries, entry.seq, key=_SEQ)
        if at == len(self.entries) or self.entries[at].seq != entry.seq:
            raise StoreError(f"index out of step: job {entry.id} is missing")
        return at

    def remove(self, entry: JobEntry) -> None:
        """Remove the entry with ``entry``'s seq."""
        del self.entries[self._find(entry)]

    def replace(self, entry: JobEntry) -> None:
        """Put ``entry`` in place of the entry with the same seq."""
        self.entries[self._find(entry)] = entry

    def page(self, limit: int, before: int | None, hot_from: int) -> tuple[list[bytes], JobEntry | None]:
        """Return up to ``limit`` encoded jobs with seq below ``before``, newest first, and the next cursor.

        ``hot_from`` is a seq from which on no entry is packed (the store's
        hot window): a page within it takes each entry's bytes as they are,
        with no per-entry check; an older page unpacks its cold entries.
        """
        entries = self.entries
        end = len(entries) if before is None else bisect.bisect_left(entries, before, key=_SEQ)
        start = max(0, end - limit)
        chunk = entries[start:end]
        chunk.reverse()
        items: list[bytes] = list(map(_STORED, chunk))
        if chunk and chunk[-1].seq < hot_from:
            items = list(map(wire_bytes, items))
        return items, (chunk[-1] if start > 0 and chunk else None)

    def search(self, needle: str, limit: int, before: int | None) -> tuple[list[bytes], JobEntry | None]:
        """Like :meth:`page`, for the entries whose ``name_key`` contains ``needle`` (casefolded by the caller).

        Walks down from ``before`` until ``limit`` + 1 matches are found: the
        cost is the number of entries walked, not the page's size.
        """
        entries = self.entries
        end = len(entries) if before is None else bisect.bisect_left(entries, before, key=_SEQ)
        newest_first = itertools.islice(reversed(entries), len(entries) - end, None)
        # e[9] is e.name_key: indexing a tuple is about twice as fast as the named field's descriptor.
        found = list(itertools.islice((e for e in newest_first if needle in e[9]), limit + 1))
        more = found[limit - 1] if len(found) > limit else None
        return [wire_bytes(e.stored) for e in found[:limit]], more
