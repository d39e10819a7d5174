"""The SAFE_MODE override window on the PostgreSQL store: derived from the engine's chain, no table of its own.

The window is what its records say (:func:`engine_hub.store.override.fold`),
so the chain is the only copy and there is nothing to keep in step. Its
records are the engine chain's only ones with ``jobId`` null, so the
newest of them are one walk down the ``audit_events_job`` index
(``chain, job_id, seq``) however long the chain is. A window has at most
three records (requested, approved, ended or expired) and windows follow
one another, so the newest three hold all of the newest window's.

A change is one transaction that first locks the chain's head row (what
:func:`shared.journal.postgres.append_to_chain` locks too, so every writer
of the chain queues there), then reads the window, decides and appends. Two
nodes approving, ending or expiring the same window at once are thus
serialised: the second reads the first's record and its decision refuses
(or, for the sweep, finds nothing left to do).
"""

from __future__ import annotations

from typing import Any, Final

import psycopg

from engine_hub.store.backend import Decide
from engine_hub.store.override import OVERRIDE_ACTIONS, OverrideAction, Window, apply_record, fold
from shared.journal.chain import Record
from shared.journal.postgres import AUDIT_COLUMNS, ENGINE_CHAIN, append_to_chain, record_of_row

#: The most records one window has.
RECORDS_PER_WINDOW: Final = 3


async def read_window(conn: psycopg.AsyncConnection[Any]) -> Window | None:
    """The newest override window, folded from its records in the engine's chain (``None`` before the first)."""
    cur = await conn.execute(
        f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE chain = %s AND job_id IS NULL AND action = ANY(%s) "
        "ORDER BY seq DESC LIMIT %s",
        (ENGINE_CHAIN, list(OVERRIDE_ACTIONS), RECORDS_PER_WINDOW),
    )
    newest_first = [record_of_row(row) for row in await cur.fetchall()]
    if not newest_first:
        return None
    window_id = newest_first[0].data.get("windowId")
    records: list[Record] = []
    for record in newest_first:
        if record.data.get("windowId") != window_id:
            break
        records.append(record)
    return fold(records[::-1])


async def change_window(
    conn: psycopg.AsyncConnection[Any], *, action: OverrideAction, actor: str, source: str, decide: Decide
) -> Window:
    """Lock the chain's head, decide on the newest window, append the record; in the caller's transaction.

    Returns the window after the record. Raises what ``decide`` raises (the
    caller's transaction then rolls back: nothing was written).
    """
    await conn.execute("SELECT seq FROM audit_head WHERE chain = %s FOR UPDATE", (ENGINE_CHAIN,))
    current = await read_window(conn)
    data = decide(current)
    record = await append_to_chain(
        conn, ENGINE_CHAIN, action=str(action), actor=actor, source=source, job_id=None, data=data
    )
    return apply_record(current, record)
