"""The change feed of a PostgreSQL store: every committed change of a job, in order, by ``seq``.

Every change of a job is one record of the engine's audit chain, written in
the change's own transaction (:meth:`engine_hub.store.postgres.PostgresBackend.commit`,
:func:`engine_hub.store.nodes.sweep`). The record's ``seq`` numbers the feed,
and the ``audit_events_notify`` trigger announces it on :data:`CHANNEL`.

Reading by that ``seq`` is safe against late commits, unlike reading by a
sequence's numbers. A sequence hands out N+1 while the transaction holding N
may still be open, and a reader that has seen N+1 would skip N when it
commits. A record's seq is taken under the chain's head row, which stays
locked until commit, so the record of N+1 is only written after N committed,
and a reader never sees N+1 without N. :func:`changes_after` therefore never
misses a change and never returns one twice, which is what
catching up after a lost connection needs (and what a live feed, issue 14, needs).
"""

from __future__ import annotations

from typing import Any, Final

import attrs
import psycopg

from engine_hub.store.postgres import PostgresBackend, job_uuid
from shared.journal.postgres import ENGINE_CHAIN

#: The channel the ``audit_events_notify`` trigger notifies, with ``{"seq": N}``.
CHANNEL: Final = "engine_events"
#: Records read per query while catching up.
BATCH: Final = 500


@attrs.frozen(kw_only=True)
class Change:
    """One committed change of a job: its record's ``seq`` (from 1, no gaps), action, actor and job id."""

    seq: int
    action: str
    actor: str
    job_id: str | None


async def last_seq(conn: psycopg.AsyncConnection[Any]) -> int:
    """The seq of the newest committed change (0 before the first): where a new follower starts."""
    cur = await conn.execute("SELECT seq FROM audit_head WHERE chain = %s", (ENGINE_CHAIN,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def head_of(backend: PostgresBackend) -> int:
    """:func:`last_seq` through the store's pool (503 ``store_unavailable`` when it is down)."""
    async with backend.connection("read") as conn:
        return await last_seq(conn)


async def changes_after(conn: psycopg.AsyncConnection[Any], after: int, *, limit: int = BATCH) -> list[Change]:
    """The committed changes with ``seq > after``, oldest first, at most ``limit`` (one primary key walk)."""
    cur = await conn.execute(
        "SELECT seq, action, actor, job_id FROM audit_events WHERE chain = %s AND seq > %s ORDER BY seq LIMIT %s",
        (ENGINE_CHAIN, after, limit),
    )
    return [
        Change(seq=seq, action=action, actor=actor, job_id=job_id)
        for seq, action, actor, job_id in await cur.fetchall()
    ]


async def jobs_of(conn: psycopg.AsyncConnection[Any], changes: list[Change]) -> dict[str, bytes]:
    """The current JSON of the jobs ``changes`` name, by id (one query; ids no job row can have are left out).

    A job may have changed again since: its JSON is then newer than the
    change, never older, and the later change follows in the feed.
    """
    ids = {key for change in changes if (key := job_uuid(change.job_id or "")) is not None}
    if not ids:
        return {}
    # The JSON each change stored (jobs.wire, pg_rows.keep_wire): nothing to rebuild here.
    cur = await conn.execute("SELECT id::text, wire FROM jobs WHERE id = ANY(%s::uuid[])", (list(ids),))
    return {job_id: wire.encode() for job_id, wire in await cur.fetchall() if wire is not None}
