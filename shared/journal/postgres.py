"""An audit journal kept in PostgreSQL: one chain of the ``audit_events`` table and its ``audit_head`` row.

The records and hashes are those of :mod:`shared.journal.chain` (so an export
verifies with the recipe in docs/journal.md); the rows live in the tables the
engine's migrations create (``engine-hub db migrate``), which this module
only checks for: ``shared`` never imports the engine.

Each append is one transaction that locks the chain's head row ``FOR
UPDATE``, so several writers on one chain (two journals, two processes) are
serialized by the database and chain onto whatever head it holds: the chain
never forks. Within a process, appends are serialized by a lock as well, so
records are chained in call order.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Final

import attrs
import psycopg

from shared.contract import format_time
from shared.journal.chain import (
    GENESIS,
    AuditQuery,
    JournalCorrupt,
    JournalUnavailable,
    Record,
    Snapshot,
    canonical_json,
    encode_line,
    make_record,
)
from shared.journal.format import BadRecord, LineError, parse_line
from shared.journal.tools import HeadInfo, VerifyResult
from shared.pg import connect, describe_error, redact

#: The engine's chain; a gateway with ``--audit-store`` keeps its own, under another name.
ENGINE_CHAIN: Final = "engine"
#: Records kept in memory for :meth:`PostgresJournal.recent`.
RECENT_LIMIT: Final = 1000
#: The tables the journal needs (created by the engine's migration 0001).
TABLES: Final = ("audit_head", "audit_events")
AUDIT_COLUMNS: Final = "seq, at, actor, source, action, job_id, data, prev, hash"


def record_of_row(row: Sequence[Any]) -> Record:
    """The record of an ``audit_events`` row selected with :data:`AUDIT_COLUMNS`."""
    seq, at, actor, source, action, job_id, data, prev, digest = row
    return Record(
        seq=seq, at=at, actor=actor, source=source, action=action, job_id=job_id, data=data, prev=prev, hash=digest
    )


class PostgresJournal:
    """A :class:`shared.journal.chain.Journal` over one chain (``chain``) of the audit tables.

    Build it with :meth:`open`. It holds one connection, reopened after a
    failure; :attr:`healthy` is false from a failed append until the next
    successful one. Nothing is kept on disk: the head is the table's.
    """

    def __init__(self, *, url: str, chain: str, conn: psycopg.AsyncConnection[Any] | None, recent_limit: int) -> None:
        self._url = url
        self._chain = chain
        self._conn = conn
        self._seq = 0
        self._head = GENESIS
        self._recent: collections.deque[Record] = collections.deque(maxlen=recent_limit)
        self._healthy = True
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, url: str, chain: str, *, recent_limit: int = RECENT_LIMIT) -> PostgresJournal:
        """Connect, create ``chain``'s head row if missing, and load its head and newest records.

        Raises :class:`JournalUnavailable` (one line, no password) when the
        database cannot be reached or lacks the audit tables.
        """
        journal = cls(url=url, chain=chain, conn=None, recent_limit=recent_limit)
        try:
            conn = await journal._connection()
            missing = [
                t
                for t in TABLES
                if (await (await conn.execute("SELECT to_regclass(%s)", (t,))).fetchone()) in (None, (None,))
            ]
            if missing:
                raise JournalUnavailable(
                    f"audit store {redact(url)} has no table {', '.join(missing)}: "
                    "run `engine-hub db migrate` against this database first"
                )
            await conn.execute(
                "INSERT INTO audit_head (chain, seq, hash) VALUES (%s, 0, %s) ON CONFLICT (chain) DO NOTHING",
                (chain, GENESIS),
            )
            async with conn.transaction():
                await journal._reload(conn)
        except psycopg.Error as exc:
            await journal.close()
            raise journal._unavailable("cannot open", exc) from None
        except BaseException:
            await journal.close()
            raise
        return journal

    @property
    def chain(self) -> str:
        """The chain's name (``audit_events.chain``)."""
        return self._chain

    @property
    def head(self) -> str:
        """The hash of the newest record this journal knows of (``GENESIS`` when empty)."""
        return self._head

    @property
    def last_seq(self) -> int:
        """The seq of that record (0 when empty)."""
        return self._seq

    @property
    def healthy(self) -> bool:
        """False from a failed append until the next successful one."""
        return self._healthy

    def _unavailable(self, doing: str, exc: BaseException) -> JournalUnavailable:
        return JournalUnavailable(f"{doing} audit store {redact(self._url)}: {describe_error(exc, self._url)}")

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                await self._conn.close()
            self._conn = await connect(self._url)
        return self._conn

    async def _reload(self, conn: psycopg.AsyncConnection[Any]) -> tuple[int, str]:
        """Adopt the database's head of the chain and its newest records (inside a transaction)."""
        cur = await conn.execute("SELECT seq, hash FROM audit_head WHERE chain = %s FOR UPDATE", (self._chain,))
        row = await cur.fetchone()
        if row is None:
            raise JournalUnavailable(f"audit store {redact(self._url)} has no head row for chain {self._chain!r}")
        seq, digest = row
        cur = await conn.execute(
            f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE chain = %s AND seq <= %s ORDER BY seq DESC LIMIT %s",
            (self._chain, seq, self._recent.maxlen),
        )
        self._recent.clear()
        self._recent.extend(reversed([record_of_row(r) for r in await cur.fetchall()]))
        self._seq, self._head = seq, digest
        return seq, digest

    async def append(self, *, action: str, actor: str, source: str, job_id: str | None, data: dict[str, Any]) -> Record:
        """Append one record in one transaction and return it once committed.

        The head row is locked first; if another writer moved it, this journal
        reloads and chains onto the database's head. Raises
        :class:`JournalUnavailable` when the database fails (nothing is written).
        """
        async with self._lock:
            reloaded = False
            try:
                conn = await self._connection()
                async with conn.transaction():
                    rec = await append_to_chain(
                        conn, self._chain, action=action, actor=actor, source=source, job_id=job_id, data=data
                    )
                    if (rec.seq - 1, rec.prev) != (self._seq, self._head):
                        # Another writer appended meanwhile: adopt its records (rec included) for recent().
                        await self._reload(conn)
                        reloaded = True
            except psycopg.Error as exc:
                self._healthy = False
                raise self._unavailable("cannot write to", exc) from None
            if not reloaded:
                self._recent.append(rec)
            self._seq, self._head = rec.seq, rec.hash
            self._healthy = True
            return rec

    def recent(self) -> Sequence[Record]:
        """The newest records (at most ``recent_limit``) this journal loaded or wrote, oldest first."""
        return list(self._recent)

    async def query(self, query: AuditQuery) -> list[Record]:
        """The chain's records matching ``query``, newest first, read from the database."""
        where, params = audit_where(self._chain, query)
        sql = f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE {where} ORDER BY seq DESC LIMIT %s"
        async with self._lock:
            try:
                conn = await self._connection()
                cur = await conn.execute(sql, [*params, query.limit])
                return [record_of_row(r) for r in await cur.fetchall()]
            except psycopg.Error as exc:
                raise self._unavailable("cannot read", exc) from None

    async def write_snapshot(self, state: dict[str, Any], *, seq: int, head: str) -> Snapshot | None:
        """Nothing to snapshot: the head is in the table. Returns ``None``."""
        return None

    async def close(self) -> None:
        """Close the connection (appends are awaited by their callers, so none is pending)."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def audit_where(chain: str, query: AuditQuery) -> tuple[str, list[str | int]]:
    """The ``WHERE`` text (without the keyword) and its parameters selecting ``chain``'s records matching ``query``."""
    where: list[str] = ["chain = %s"]
    params: list[str | int] = [chain]
    for clause, value in (
        ("seq < %s", query.before),
        ("job_id = %s", query.job_id),
        ("actor = %s", query.actor),
        # starts_with, not LIKE: a prefix holding % or _ needs no escaping.
        ("starts_with(actor, %s)", query.actor_prefix),
        ("action = %s", query.action),
        ("data->>'outcome' = %s", query.outcome),
        # ``at`` is fixed-width UTC text, so byte order (COLLATE "C") is time order.
        ('at COLLATE "C" >= %s', format_time(query.since)),
        ('at COLLATE "C" < %s', format_time(query.until)),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    return " AND ".join(where), params


async def append_to_chain(
    conn: psycopg.AsyncConnection[Any],
    chain: str,
    *,
    action: str,
    actor: str,
    source: str,
    job_id: str | None,
    data: dict[str, Any],
    at: str | None = None,
) -> Record:
    """Append one record to ``chain`` inside the caller's open transaction and return it.

    Locks the chain's head row ``FOR UPDATE`` (so it must be the *last*
    statement group of a business transaction: the lock is held until commit,
    and every writer of the chain queues on it), inserts the record chained
    onto the database's head and moves the head. ``at`` is the record's time
    (now when ``None``): pass the time the business change used. Raises
    ``psycopg.Error`` as it comes; the caller's transaction then rolls back.
    """
    cur = await conn.execute("SELECT seq, hash FROM audit_head WHERE chain = %s FOR UPDATE", (chain,))
    row = await cur.fetchone()
    if row is None:
        raise psycopg.errors.NoDataFound(f"audit_head has no row for chain {chain!r}")
    rec = make_record(
        seq=row[0] + 1, prev=row[1], action=action, actor=actor, source=source, job_id=job_id, data=data, at=at
    )
    await conn.execute(
        f"INSERT INTO audit_events (chain, {AUDIT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::json, %s, %s)",
        event_row(chain, rec),
    )
    await conn.execute("UPDATE audit_head SET seq = %s, hash = %s WHERE chain = %s", (rec.seq, rec.hash, chain))
    return rec


@attrs.define
class ChainCheck:
    """Checks records fed in seq order as one chain: each hash and ``prev`` link.

    The chain starts where ``start`` says (``audit_head``'s ``first_seq`` and
    ``first_prev``: seq 1 from ``GENESIS``, or where a journal imported by
    ``engine-hub db import`` started after pruning), so rows deleted from its
    beginning are found. Without ``start`` (one record checked alone) the
    first record is anchored on its own ``prev``. ``first_seq`` says where the
    records fed started. Uses the journal files' own line check
    (:func:`parse_line`) on each record's line, so a row and a journal line
    are held to the same rules. ``where`` names the source in a
    :class:`BadRecord` (whose ``line`` is the record's position, from 1).
    ``count``, ``last_seq`` and ``head`` describe the intact chain so far.
    """

    where: str
    count: int = 0
    last_seq: int = 0
    head: str = GENESIS
    first_seq: int = 0
    start: tuple[int, str] | None = None

    def check(self, rec: Record) -> BadRecord | None:
        """Check ``rec`` as the next record; return the problem, or ``None`` after taking it in."""
        if self.count == 0:
            self.first_seq = rec.seq
            first, prev = self.start if self.start is not None else (rec.seq, rec.prev)
            if rec.seq > first:
                reason = f"records before seq {rec.seq} are missing: the chain starts at seq {first} (audit_head)"
                return BadRecord(segment=self.where, line=1, seq=rec.seq, reason=reason)
            if first > 1:
                self.last_seq, self.head = first - 1, prev
        line = encode_line(rec.hash, canonical_json(rec.body()))[:-1]
        try:
            parse_line(line, expected_seq=self.last_seq + 1, expected_prev=self.head, strict=True)
        except LineError as exc:
            return BadRecord(segment=self.where, line=self.count + 1, seq=rec.seq, reason=exc.reason)
        self.count, self.last_seq, self.head = self.count + 1, rec.seq, rec.hash
        return None


async def chain_start(conn: psycopg.AsyncConnection[Any], chain: str) -> tuple[int, str] | None:
    """Where ``chain`` starts (``audit_head.first_seq``, ``first_prev``); ``None`` without a head row."""
    cur = await conn.execute("SELECT first_seq, first_prev FROM audit_head WHERE chain = %s", (chain,))
    row = await cur.fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


async def verify_chain(url: str, chain: str, *, expected_head: str | None = None) -> VerifyResult:
    """Walk ``chain``'s rows in seq order (streamed) and check the chain, as ``audit verify`` does for files.

    Also checks the head row against the last record, and (given
    ``expected_head``, a head saved earlier) that the saved head is still in
    the chain. Raises :class:`JournalUnavailable` when the database fails.
    """
    checker = ChainCheck(where=f"audit_events chain {chain!r}")
    found = expected_head in (None, GENESIS)
    bad: BadRecord | None = None
    try:
        conn = await connect(url)
        try:
            # One snapshot for the rows and the head row, so appends meanwhile cannot look like a mismatch.
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            async with conn.transaction():
                checker.start = await chain_start(conn, chain)
                async for row in conn.cursor().stream(
                    f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE chain = %s ORDER BY seq", (chain,)
                ):
                    bad = checker.check(record_of_row(row))
                    if bad is not None:
                        break
                    found = found or checker.head == expected_head
                head_row = await (
                    await conn.execute("SELECT seq, hash FROM audit_head WHERE chain = %s", (chain,))
                ).fetchone()
        finally:
            await conn.close()
    except psycopg.Error as exc:
        raise _read_error(url, exc) from None
    count, last_seq = checker.count, checker.last_seq
    end = BadRecord(segment=checker.where, line=count + 1, seq=last_seq + 1, reason="")
    if bad is None and head_row is not None and tuple(head_row) != (last_seq, checker.head):
        bad = attrs.evolve(
            end,
            reason=f"the head row says seq {head_row[0]} but the chain ends at seq {last_seq}: "
            "the head or the records were changed",
        )
    if bad is None and not found:
        bad = attrs.evolve(
            end,
            reason=f"the saved head {expected_head} is not in the chain: records were removed from the end "
            "or the chain was rewritten",
        )
    return VerifyResult(
        ok=bad is None,
        count=count,
        first_seq=checker.first_seq if count else 0,
        last_seq=last_seq,
        head=checker.head,
        first_bad=bad,
        torn_tail=False,
    )


def _read_error(url: str, exc: BaseException) -> JournalUnavailable:
    return JournalUnavailable(f"cannot read audit store {redact(url)}: {describe_error(exc, url)}")


async def chain_head(url: str, chain: str, *, prog: str) -> HeadInfo:
    """The newest record of ``chain`` (seq 0 and ``GENESIS`` when empty), as ``audit head`` shows a journal's.

    Checks that record's own hash, not the chain (that is
    :func:`verify_chain`): :class:`JournalCorrupt` when it does not match.
    Raises :class:`JournalUnavailable` when the database fails.
    """
    try:
        conn = await connect(url)
        try:
            cur = await conn.execute(
                f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE chain = %s ORDER BY seq DESC LIMIT 1", (chain,)
            )
            row = await cur.fetchone()
        finally:
            await conn.close()
    except psycopg.Error as exc:
        raise _read_error(url, exc) from None
    if row is None:
        return HeadInfo(seq=0, hash=GENESIS, at=None)
    # Checked alone: ChainCheck anchors a first record on its own prev, so only its hash counts.
    rec = record_of_row(row)
    bad = ChainCheck(where=f"audit_events chain {chain!r} (newest record)").check(rec)
    if bad is not None:
        raise JournalCorrupt(segment=bad.segment, line=bad.line, seq=bad.seq, reason=bad.reason, prog=prog)
    return HeadInfo(seq=rec.seq, hash=rec.hash, at=rec.at)


async def stream_chain(url: str, chain: str, *, prog: str) -> AsyncIterator[Record]:
    """Yield ``chain``'s records in seq order (streamed from one read transaction), checking the chain.

    Raises :class:`JournalCorrupt` at the first bad record (after the ones
    before it were yielded), as :func:`shared.journal.tools.records` does for
    files, and :class:`JournalUnavailable` when the database fails.
    """
    checker = ChainCheck(where=f"audit_events chain {chain!r}")
    try:
        conn = await connect(url)
        try:
            async with conn.transaction():
                checker.start = await chain_start(conn, chain)
                async for row in conn.cursor().stream(
                    f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE chain = %s ORDER BY seq", (chain,)
                ):
                    rec = record_of_row(row)
                    bad = checker.check(rec)
                    if bad is not None:
                        raise JournalCorrupt(
                            segment=bad.segment, line=bad.line, seq=bad.seq, reason=bad.reason, prog=prog
                        )
                    yield rec
        finally:
            await conn.close()
    except psycopg.Error as exc:
        raise _read_error(url, exc) from None


def event_row(chain: str, rec: Record) -> tuple[Any, ...]:
    """The values of ``rec``'s ``audit_events`` row, in the order ``chain, {AUDIT_COLUMNS}``.

    ``data`` is the canonical JSON text that was hashed (for a ``json``
    column, which keeps it as written), so the row re-hashes byte for byte.
    """
    return (
        chain,
        rec.seq,
        rec.at,
        rec.actor,
        rec.source,
        rec.action,
        rec.job_id,
        canonical_json(rec.data).decode(),
        rec.prev,
        rec.hash,
    )


async def copy_records(conn: psycopg.AsyncConnection[Any], chain: str, records: Iterable[Record]) -> int:
    """Write ``records`` (an intact chain, oldest first) into ``chain`` as they are, and move its head row to the last.

    For moving a journal into the table (``engine-hub db import``): seq,
    ``at``, ``prev`` and hash are kept, and ``data`` is stored as the
    canonical JSON that was hashed, so every hash still checks out. Runs in
    the caller's transaction (COPY); returns how many records were written.
    """
    count, first, last = 0, None, None
    async with conn.cursor().copy(f"COPY audit_events (chain, {AUDIT_COLUMNS}) FROM STDIN") as copy:
        for rec in records:
            await copy.write_row(event_row(chain, rec))
            count, first, last = count + 1, first or rec, rec
    if first is not None and last is not None:
        # The chain starts where the records do (after a pruned journal's first kept record's prev).
        await conn.execute(
            "INSERT INTO audit_head (chain, seq, hash, first_seq, first_prev) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, "
            "first_seq = excluded.first_seq, first_prev = excluded.first_prev",
            (chain, last.seq, last.hash, first.seq, first.prev),
        )
    return count
