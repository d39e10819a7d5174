"""Hash-chained, append-only journals (the engine's state log and the gateway's audit log).

A record is ``{seq, at, actor, source, action, jobId, data, prev, hash}``
where ``hash = sha256(prev + canonical_json(record without hash))``: each
record commits to every record before it, so a changed, dropped or reordered
record breaks the chain.

:class:`MemoryJournal` keeps records in memory only (``--ephemeral``);
:class:`shared.journal.file.FileJournal` is the durable one with the same
interface, and :mod:`shared.journal.tools` verifies, exports and queries a
journal directory offline.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import attrs

from shared.contract import format_time, utcnow

GENESIS = "0" * 64


class JournalError(Exception):
    """Base class of every journal error."""


class JournalUnavailable(JournalError):
    """The journal cannot make a change durable; the change must not happen."""


class JournalCorrupt(JournalError):
    """The journal on disk is not an intact hash chain; the owner must not start.

    ``segment``, ``line`` and ``seq`` locate the first bad record (``line`` is
    1-based; ``seq`` is ``None`` when the record could not be read at all).
    """

    def __init__(self, *, segment: str, line: int, seq: int | None, reason: str, prog: str) -> None:
        where = f"{segment} line {line}" + (f" (seq {seq})" if seq is not None else "")
        super().__init__(f"journal corrupt at {where}: {reason}; run `{prog} audit verify` for a full report")
        self.segment = segment
        self.line = line
        self.seq = seq
        self.reason = reason


class JournalLocked(JournalError):
    """Another process holds the journal open for writing."""


def canonical_json(obj: Any) -> bytes:
    """Serialise ``obj`` canonically: sorted keys, no spaces, UTF-8.

    Raises ``TypeError`` for values JSON cannot hold and ``ValueError`` for
    NaN/Infinity (not JSON, and not reproducible by other verifiers).
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def record_hash(prev: str, body: dict[str, Any]) -> str:
    """Return the chain hash of a record body (every field but ``hash``) after ``prev``."""
    return hashlib.sha256(prev.encode() + canonical_json(body)).hexdigest()


@attrs.frozen(kw_only=True)
class Record:
    """One journal record. Immutable; built only by :func:`make_record` or parsing."""

    seq: int
    at: str
    actor: str
    source: str
    action: str
    job_id: str | None
    data: dict[str, Any]
    prev: str
    hash: str

    def body(self) -> dict[str, Any]:
        """Return the hashed part of the record (everything but ``hash``)."""
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "source": self.source,
            "action": self.action,
            "jobId": self.job_id,
            "data": self.data,
            "prev": self.prev,
        }

    def to_json(self) -> dict[str, Any]:
        """Return the wire/disk shape, hash included."""
        out = self.body()
        out["hash"] = self.hash
        return out


def make_record(
    *,
    seq: int,
    prev: str,
    action: str,
    actor: str,
    source: str,
    job_id: str | None,
    data: dict[str, Any],
    at: str | None = None,
) -> Record:
    """Build the next record of a chain whose head is ``prev``."""
    return make_record_line(
        seq=seq, prev=prev, action=action, actor=actor, source=source, job_id=job_id, data=data, at=at
    )[0]


#: Length of the ``{"hash":"<64 hex>",`` prefix of an encoded line.
LINE_BODY_START = len(b'{"hash":"') + 64 + len(b'",')


def make_record_line(
    *,
    seq: int,
    prev: str,
    action: str,
    actor: str,
    source: str,
    job_id: str | None,
    data: dict[str, Any],
    at: str | None = None,
) -> tuple[Record, bytes]:
    """Build the next record after ``prev`` and its journal line (newline included).

    The line is ``{"hash":"<hash>",`` followed by the canonical body minus its
    opening brace: valid JSON holding the whole record, whose bytes after the
    hash *are* the hashed canonical body. A verifier can therefore check a
    line by hashing raw bytes, without re-serialising it.
    """
    rec = Record(
        seq=seq,
        at=at or format_time(utcnow()) or "",
        actor=actor,
        source=source,
        action=action,
        job_id=job_id,
        data=data,
        prev=prev,
        hash="",
    )
    body = canonical_json(rec.body())
    digest = hashlib.sha256(prev.encode() + body).hexdigest()
    return attrs.evolve(rec, hash=digest), encode_line(digest, body)


def encode_line(digest: str, body: bytes) -> bytes:
    """The journal line (newline included) of a record: its ``hash`` then its canonical ``body`` minus the brace.

    A record kept elsewhere (a database row) is checked by encoding it with this and
    handing the line to :func:`shared.journal.format.parse_line`: one verification for both.
    """
    return b'{"hash":"' + digest.encode() + b'",' + body[1:] + b"\n"


@attrs.frozen(kw_only=True)
class AuditQuery:
    """A filter over journal records, answered newest first.

    ``since`` is inclusive and ``until`` exclusive (both aware datetimes);
    ``before`` keeps records with ``seq < before`` (the paging cursor: pass the
    smallest seq of the previous page); ``limit`` caps the answer. ``job_id``,
    ``actor`` and ``action`` match exactly, ``actor_prefix`` the start of the
    actor, ``outcome`` the record's ``data.outcome`` (a string).
    """

    job_id: str | None = None
    actor: str | None = None
    actor_prefix: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    before: int | None = None
    limit: int = attrs.field(default=100, validator=attrs.validators.ge(1))

    def predicate(self) -> Callable[[Record], bool]:
        """Return a fast test for one record (time bounds pre-formatted once)."""
        since = format_time(self.since)
        until = format_time(self.until)
        job_id, actor, before = self.job_id, self.actor, self.before
        prefix, action, outcome = self.actor_prefix, self.action, self.outcome

        # ``at`` is always ``format_time`` output (fixed width, UTC), so string
        # order is time order.
        def test(rec: Record) -> bool:
            return (
                (before is None or rec.seq < before)
                and (job_id is None or rec.job_id == job_id)
                and (actor is None or rec.actor == actor)
                and (prefix is None or rec.actor.startswith(prefix))
                and (action is None or rec.action == action)
                and (outcome is None or rec.data.get("outcome") == outcome)
                and (since is None or rec.at >= since)
                and (until is None or rec.at < until)
            )

        return test


def query_newest_first(records: Iterable[Record], query: AuditQuery) -> list[Record]:
    """Return up to ``query.limit`` records of ``records`` (newest first) matching ``query``."""
    test = query.predicate()
    out: list[Record] = []
    for rec in records:
        if test(rec):
            out.append(rec)
            if len(out) >= query.limit:
                break
    return out


@attrs.frozen(kw_only=True)
class Snapshot:
    """The owner's state as of record ``seq`` (whose hash is ``head``)."""

    seq: int
    head: str
    at: str
    state: dict[str, Any]


class Journal(Protocol):
    """What a journal offers its owner."""

    @property
    def head(self) -> str:
        """The hash of the newest durable record (``GENESIS`` when empty)."""

    @property
    def healthy(self) -> bool:
        """False while appends are failing (the owner reports ``degraded``)."""

    async def append(self, *, action: str, actor: str, source: str, job_id: str | None, data: dict[str, Any]) -> Record:
        """Append one record and return it once it is durable.

        Raises :class:`JournalUnavailable` when it cannot be made durable; the
        caller must then leave its state unchanged. Seq and ``prev`` are
        assigned when ``append`` is called, so records are chained in call
        order. If the awaiting task is cancelled the record may still become
        durable: owners shield the append-then-apply step as one unit.
        """

    def recent(self) -> Sequence[Record]:
        """Records kept in memory for queries, oldest first."""

    async def query(self, query: AuditQuery) -> list[Record]:
        """Durable records matching ``query``, newest first."""

    async def write_snapshot(self, state: dict[str, Any], *, seq: int, head: str) -> Snapshot | None:
        """Store the owner's ``state`` as of record ``seq``/``head`` (see FileJournal)."""

    async def close(self) -> None:
        """Finish pending appends and release files."""


class MemoryJournal:
    """A journal that lives only in memory: chained and queryable, never durable.

    ``max_records`` bounds memory: only the newest records are kept (for
    :meth:`recent` and :meth:`query`); seqs and the chain go on regardless.
    ``None`` keeps every record (tests that restart an owner on the same
    journal replay all of them).
    """

    def __init__(self, *, max_records: int | None = None) -> None:
        self._records: collections.deque[Record] = collections.deque(maxlen=max_records)
        self._seq = 0
        self._head = GENESIS

    @property
    def head(self) -> str:
        """The hash of the newest record."""
        return self._head

    @property
    def healthy(self) -> bool:
        """Always true: memory does not fail."""
        return True

    async def append(self, *, action: str, actor: str, source: str, job_id: str | None, data: dict[str, Any]) -> Record:
        """Chain and keep the record; nothing is written anywhere."""
        rec = make_record(
            seq=self._seq + 1, prev=self._head, action=action, actor=actor, source=source, job_id=job_id, data=data
        )
        self._records.append(rec)
        self._seq, self._head = rec.seq, rec.hash
        return rec

    def recent(self) -> Sequence[Record]:
        """Every record kept (all of them unless ``max_records`` is set), oldest first."""
        return list(self._records)

    async def query(self, query: AuditQuery) -> list[Record]:
        """Matching records, newest first."""
        return query_newest_first(reversed(self._records), query)

    async def write_snapshot(self, state: dict[str, Any], *, seq: int, head: str) -> Snapshot | None:
        """Nothing to do: memory is never replayed. Returns ``None``."""
        return None

    async def close(self) -> None:
        """Nothing to release."""

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)
