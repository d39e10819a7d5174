"""``engine-hub db import --data-dir DIR``: move an embedded engine's state into a PostgreSQL store.

What moves: every journal record into the ``engine`` chain of
``audit_events`` as it is (seq, ``at``, ``prev``, hash: ``audit verify
--store`` passes on it), the chain's head row, and every job (the store the
engine itself would restore: newest snapshot plus the journal after it) into
``jobs``, each with its creation seq, so listings keep their order. Job logs
(files under ``DIR/logs``) do not move. All of it is one transaction.

Refused, with one line and nothing written: a database that is not migrated
to this build's schema, or that already holds jobs or engine audit records;
a data directory without a journal, in use by a running engine (its lock),
whose journal does not verify, or with a job still RUNNING (an engine that
crashed mid-run: starting and stopping it once records the interrupted run).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import attrs
import psycopg

from engine_hub.cli.support import PROG
from engine_hub.errors import StartupError
from engine_hub.http.app import open_journal, restore
from engine_hub.settings import JOURNAL_DIR, LOGS_DIR, Settings
from engine_hub.store.embedded import JobStore
from engine_hub.store.pg_rows import WIRE_COLUMNS, row_from_wire
from engine_hub.store.schema import check_schema
from shared.journal.chain import JournalCorrupt
from shared.journal.postgres import ENGINE_CHAIN, copy_records
from shared.journal.tools import VerifyResult, records, verify

#: The ``jobs`` columns an import fills: :func:`engine_hub.store.pg_rows.row_from_wire`'s and the store's own.
_JOB_COLUMNS: Final = ("seq", *WIRE_COLUMNS, "log_truncated", "log_expired", "wire")


class ImportRefused(Exception):
    """The import cannot be done; the message (one line) says why and what to do. Nothing was written."""


@attrs.frozen(kw_only=True)
class Imported:
    """What an import moved: ``records`` audit records (``first_seq``..``last_seq``, head ``head``), ``jobs`` jobs."""

    records: int
    first_seq: int
    last_seq: int
    head: str
    jobs: int


@contextlib.asynccontextmanager
async def restored_store(data_dir: Path) -> AsyncIterator[tuple[JobStore, VerifyResult]]:
    """The jobs of ``data_dir`` as the engine would restore them, and its journal's check; its lock held meanwhile.

    Raises :class:`ImportRefused` for a missing, locked, broken, empty or
    unfinished (a job RUNNING) journal.
    """
    directory = _journal_dir(data_dir)
    if not directory.is_dir():
        raise ImportRefused(f"no journal in {directory} (check --data-dir)")
    settings = Settings(data_dir=data_dir)
    try:
        journal = open_journal(settings)  # takes the lock: a running engine's directory is refused here
    except StartupError as exc:
        raise ImportRefused(f"cannot import {data_dir}: {exc}") from None
    try:
        checked = verify(directory)
        if not checked.ok:
            bad = checked.first_bad
            assert bad is not None
            raise ImportRefused(
                f"the journal in {directory} does not verify (seq {bad.seq}: {bad.reason}): "
                f"see `{PROG} audit verify --data-dir {data_dir}`"
            )
        if checked.count == 0:
            raise ImportRefused(f"the journal in {directory} is empty: nothing to import")
        store = JobStore()
        try:
            restore(journal, store, settings)
        except StartupError as exc:
            raise ImportRefused(str(exc)) from None
        running = store.running_job_ids()
        if running:
            raise ImportRefused(
                f"job {running[0]} is RUNNING in {data_dir} ({len(running)} in all): start and stop the embedded "
                "engine once so it records the interrupted run, then import"
            )
        yield store, checked
    finally:
        await journal.close()


def _journal_dir(data_dir: Path) -> Path:
    return data_dir / JOURNAL_DIR


async def _refuse_unless_empty(conn: psycopg.AsyncConnection[Any], shown: str) -> None:
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM jobs), EXISTS (SELECT 1 FROM audit_events WHERE chain = %s) "
        "OR EXISTS (SELECT 1 FROM audit_head WHERE chain = %s AND seq > 0)",
        (ENGINE_CHAIN, ENGINE_CHAIN),
    )
    row = await cur.fetchone()
    assert row is not None
    if row[0] or row[1]:
        what = "jobs" if row[0] else "engine audit records"
        raise ImportRefused(f"store {shown} already has {what}: an import needs a freshly migrated database")


async def import_data_dir(conn: psycopg.AsyncConnection[Any], shown: str, data_dir: Path) -> Imported:
    """Move ``data_dir``'s journal and jobs into the store on ``conn`` (autocommit), in one transaction.

    ``shown`` is the store's URL without its password, for messages. Raises
    :class:`ImportRefused` (see the module doc), ``SchemaError`` for a
    database not at this build's schema, ``psycopg.Error`` when a statement fails.
    """
    await check_schema(conn)
    await _refuse_unless_empty(conn, shown)  # before reading the files: a wrong target fails fast
    async with restored_store(data_dir) as (store, checked), conn.transaction():
        # Writers wait until the import commits; checked again under the lock.
        await conn.execute("LOCK TABLE jobs, audit_events, audit_head IN EXCLUSIVE MODE")
        await _refuse_unless_empty(conn, shown)
        try:
            count = await copy_records(conn, ENGINE_CHAIN, records(_journal_dir(data_dir), prog=PROG))
        except JournalCorrupt as exc:
            raise ImportRefused(str(exc)) from None
        if (count, store.seq, store.head) != (checked.count, checked.last_seq, checked.head):
            raise ImportRefused(f"the journal in {data_dir} changed while it was imported: try again")
        entries = store.cut().entries
        async with conn.cursor().copy(f"COPY jobs ({', '.join(_JOB_COLUMNS)}) FROM STDIN") as copy:
            for entry in entries:
                row = row_from_wire(entry.wire())
                row.update(
                    seq=entry.seq,
                    log_truncated=entry.log_truncated,
                    log_expired=entry.log_expired,
                    wire=entry.encoded.decode(),  # the embedded engine's body: the node serves the same bytes
                )
                await copy.write_row([row[c] for c in _JOB_COLUMNS])
        if entries:
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence('jobs', 'seq'), %s)", (max(e.seq for e in entries),)
            )
    return Imported(
        records=count, first_seq=checked.first_seq, last_seq=checked.last_seq, head=checked.head, jobs=len(entries)
    )


def import_work(data_dir: Path) -> Callable[[psycopg.AsyncConnection[Any], str], Awaitable[int]]:
    """The work of ``db import`` on a connection: import, then print what moved (and that job logs did not)."""

    async def work(conn: psycopg.AsyncConnection[Any], shown: str) -> int:
        done = await import_data_dir(conn, shown, data_dir)
        print(
            f"imported {done.records} audit records (seq {done.first_seq}..{done.last_seq}, head {done.head}) "
            f"and {done.jobs} jobs from {data_dir} into {shown}"
        )
        print(
            f"job logs were not moved: they stay in {data_dir / LOGS_DIR}; "
            "nodes on PostgreSQL serve the imported jobs without them"
        )
        return 0

    return work
