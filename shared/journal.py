"""Hash-chained, append-only journals (the engine's state log and the gateway's audit log).

A record is ``{seq, at, actor, source, action, jobId, data, prev, hash}``
where ``hash = sha256(prev + canonical_json(record without hash))``: each
record commits to every record before it, so a changed, dropped or reordered
record breaks the chain.

:class:`MemoryJournal` keeps records in memory only (``--ephemeral``); the
durable file-backed journal shares the same interface.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import attrs

from shared.contract import format_time, utcnow

GENESIS = "0" * 64


class JournalUnavailable(Exception):
    """The journal cannot make a change durable; the change must not happen."""


def canonical_json(obj: Any) -> bytes:
    """Serialise ``obj`` canonically: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


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
        return {"seq": self.seq, "at": self.at, "actor": self.actor, "source": self.source,
                "action": self.action, "jobId": self.job_id, "data": self.data, "prev": self.prev}

    def to_json(self) -> dict[str, Any]:
        """Return the wire/disk shape, hash included."""
        out = self.body()
        out["hash"] = self.hash
        return out


def make_record(*, seq: int, prev: str, action: str, actor: str, source: str,
                job_id: str | None, data: dict[str, Any], at: str | None = None) -> Record:
    """Build the next record of a chain whose head is ``prev``."""
    rec = Record(seq=seq, at=at or format_time(utcnow()) or "", actor=actor, source=source,
                 action=action, job_id=job_id, data=data, prev=prev, hash="")
    return attrs.evolve(rec, hash=record_hash(prev, rec.body()))


class Journal(Protocol):
    """What a journal offers its owner."""

    @property
    def head(self) -> str:
        """The hash of the newest record (``GENESIS`` when empty)."""

    @property
    def healthy(self) -> bool:
        """False while appends are failing (the owner reports ``degraded``)."""

    async def append(self, *, action: str, actor: str, source: str, job_id: str | None,
                     data: dict[str, Any]) -> Record:
        """Append one record and return it once it is durable.

        Raises :class:`JournalUnavailable` when it cannot be made durable; the
        caller must then leave its state unchanged.
        """

    def recent(self) -> Sequence[Record]:
        """Records kept in memory for queries, oldest first."""


class MemoryJournal:
    """A journal that lives only in memory: chained and queryable, never durable."""

    def __init__(self) -> None:
        self._records: list[Record] = []
        self._head = GENESIS

    @property
    def head(self) -> str:
        """The hash of the newest record."""
        return self._head

    @property
    def healthy(self) -> bool:
        """Always true: memory does not fail."""
        return True

    async def append(self, *, action: str, actor: str, source: str, job_id: str | None,
                     data: dict[str, Any]) -> Record:
        """Chain and keep the record; nothing is written anywhere."""
        rec = make_record(seq=len(self._records) + 1, prev=self._head, action=action, actor=actor,
                          source=source, job_id=job_id, data=data)
        self._records.append(rec)
        self._head = rec.hash
        return rec

    def recent(self) -> Sequence[Record]:
        """Every record, oldest first."""
        return self._records

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)
