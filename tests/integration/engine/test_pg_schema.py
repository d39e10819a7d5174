"""The PostgreSQL store's schema on a real server: migrations, the version check, the transition trigger, the claim.

Every database here is a fresh one in the session's throwaway cluster
(:mod:`tests.postgres`): an empty one for the migration tests, a copy of the
migrated template for the rest.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from engine_hub.store.entry import encode_wire
from engine_hub.store.pg_rows import JOB_COLUMNS, entry_from_row, wire_from_row
from engine_hub.store.schema import (
    _CREATE_TABLE,
    MIGRATE_LOCK,
    SchemaError,
    check_schema,
    known_version,
    migrate,
    migrations,
)
from shared.contract import TRANSITIONS, JobStatus
from shared.pg import connect
from tests.postgres import PostgresServer

Conn = AsyncConnection[Any]


@pytest.fixture
async def empty_url(postgres_server: PostgresServer) -> str:
    """URL of a fresh database without any schema."""
    return postgres_server.create_database()


@pytest.fixture
async def conn(postgres_url: str) -> AsyncIterator[Conn]:
    """An autocommit connection to a fresh migrated database."""
    c = await connect(postgres_url)
    yield c
    await c.close()


async def _versions(conn: Conn) -> list[tuple[int, str]]:
    cur = await conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
    return [(int(v), str(n)) for v, n in await cur.fetchall()]


async def _new_node(conn: Conn) -> str:
    node = str(uuid.uuid4())
    await conn.execute("INSERT INTO nodes (id, host, pid) VALUES (%s, 'test', 1)", (node,))
    return node


async def _new_job(conn: Conn, status: JobStatus = JobStatus.READY) -> str:
    job = str(uuid.uuid4())
    await conn.execute(
        "INSERT INTO jobs (id, type, name, status, created_at, created_by)"
        " VALUES (%s, 'demo.echo', 'j', %s, now(), 'u')",
        (job, str(status)),
    )
    return job


async def _set_status(conn: Conn, job: str, status: JobStatus) -> None:
    await conn.execute("UPDATE jobs SET status = %s WHERE id = %s", (str(status), job))


class TestMigrate:
    async def test_applies_each_migration_once(self, empty_url: str) -> None:
        """The first migrate applies every migration in order and records each; a second one applies nothing."""
        c = await connect(empty_url)
        try:
            first = await migrate(c)
            assert [m.name for m in first] == ["0001_initial", "0002_run_requests", "0003_outcome_copies"]
            assert await _versions(c) == [(1, "0001_initial"), (2, "0002_run_requests"), (3, "0003_outcome_copies")]
            assert await migrate(c) == []
            assert await _versions(c) == [(1, "0001_initial"), (2, "0002_run_requests"), (3, "0003_outcome_copies")]
            cur = await c.execute("SELECT seq, hash FROM audit_head WHERE chain = 'engine'")
            assert await cur.fetchall() == [(0, "0" * 64)]
        finally:
            await c.close()

    async def test_concurrent_migrates_apply_each_migration_once(self, empty_url: str) -> None:
        """Five migrators at once: one applies each migration, the others wait on the lock and find it done."""
        conns = [await connect(empty_url) for _ in range(5)]
        try:
            results = await asyncio.gather(*(migrate(c) for c in conns))
            applied = sorted(m.version for result in results for m in result)
            assert applied == [m.version for m in migrations()]
            assert await _versions(conns[0]) == [(m.version, m.name) for m in migrations()]
        finally:
            for c in conns:
                await c.close()

    async def test_migrate_waits_for_the_advisory_lock(self, empty_url: str) -> None:
        """While another session holds the migration lock, migrate applies nothing; it proceeds once released."""
        holder = await connect(empty_url)
        migrator = await connect(empty_url)
        try:
            await holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
            task = asyncio.ensure_future(migrate(migrator))
            await asyncio.sleep(0.3)
            assert not task.done()
            cur = await holder.execute("SELECT to_regclass('jobs') IS NULL")
            assert await cur.fetchone() == (True,)
            await holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
            assert [m.version for m in await asyncio.wait_for(task, 10)] == [1, 2, 3]
        finally:
            await holder.close()
            await migrator.close()

    async def test_migrate_refuses_a_database_ahead_of_this_build(self, conn: Conn) -> None:
        """A database at a version this build does not know is not touched: SchemaError says to upgrade."""
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, 'from_the_future')", (99,))
        with pytest.raises(SchemaError, match=f"knows schema {known_version()}, the database is at 99: upgrade"):
            await migrate(conn)


class TestCheckSchema:
    async def test_accepts_the_current_schema(self, conn: Conn) -> None:
        """A migrated database passes, at this build's version."""
        assert await check_schema(conn) == known_version() == migrations()[-1].version

    async def test_refuses_a_database_without_schema(self, empty_url: str) -> None:
        """No schema_migrations table: the error says to run engine-hub db migrate."""
        c = await connect(empty_url)
        try:
            with pytest.raises(SchemaError, match=r"no engine-hub schema: run `engine-hub db migrate`$"):
                await check_schema(c)
        finally:
            await c.close()

    async def test_refuses_a_schema_behind_this_build(self, conn: Conn) -> None:
        """A database whose recorded version is older: the error names both versions and says to migrate."""
        await conn.execute("DELETE FROM schema_migrations WHERE version = %s", (known_version(),))
        behind = known_version() - 1
        with pytest.raises(
            SchemaError,
            match=rf"at version {behind}, this engine-hub needs {known_version()}: run `engine-hub db migrate`$",
        ):
            await check_schema(conn)

    async def test_refuses_a_schema_ahead_of_this_build(self, conn: Conn) -> None:
        """A database migrated by a newer build: the error says to upgrade engine-hub."""
        ahead = known_version() + 1
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, 'newer')", (ahead,))
        with pytest.raises(
            SchemaError, match=rf"^this engine-hub knows schema {known_version()}, the database is at {ahead}: upgrade"
        ):
            await check_schema(conn)


class TestTransitionTrigger:
    @pytest.mark.parametrize("start", [JobStatus.RUNNING, JobStatus.DONE, JobStatus.FAILED])
    async def test_refuses_going_back_to_ready(self, conn: Conn, start: JobStatus) -> None:
        """UPDATE … SET status='READY' of a RUNNING, DONE or FAILED job fails in the database itself."""
        job = await _new_job(conn, start)
        with pytest.raises(psycopg.errors.CheckViolation, match="never goes back to READY"):
            await _set_status(conn, job, JobStatus.READY)
        cur = await conn.execute("SELECT status FROM jobs WHERE id = %s", (job,))
        assert await cur.fetchone() == (str(start),)

    async def test_allows_ready_to_running(self, conn: Conn) -> None:
        """READY → RUNNING, the claim, passes the trigger."""
        job = await _new_job(conn)
        await _set_status(conn, job, JobStatus.RUNNING)
        cur = await conn.execute("SELECT status FROM jobs WHERE id = %s", (job,))
        assert await cur.fetchone() == ("RUNNING",)

    async def test_allowed_status_changes_are_exactly_the_contracts(self, conn: Conn) -> None:
        """Of every pair of distinct statuses, the trigger lets through exactly shared.contract.TRANSITIONS."""
        allowed = set()
        for start, end in itertools.permutations(JobStatus, 2):
            job = await _new_job(conn, start)
            try:
                await _set_status(conn, job, end)
            except psycopg.errors.CheckViolation:
                continue
            allowed.add((start, end))
        assert allowed == {(start, end) for start, ends in TRANSITIONS.items() for end in ends}


#: The claim of a run, as the issue writes it: one statement, so at most one node ever wins.
CLAIM = (
    "UPDATE jobs SET status = 'RUNNING', node_id = %s, started_at = now()"
    " WHERE id = %s AND status = 'READY' RETURNING id, node_id"
)


class TestClaim:
    async def test_one_of_twenty_concurrent_claims_wins(self, postgres_url: str) -> None:
        """Twenty connections, each a node, claim one READY job at the same moment: exactly one row comes back."""
        conns = [await connect(postgres_url) for _ in range(20)]
        try:
            nodes = [await _new_node(c) for c in conns]
            job = await _new_job(conns[0])
            go = asyncio.Event()

            async def claim(c: Conn, node: str) -> list[tuple[Any, ...]]:
                await go.wait()
                cur = await c.execute(CLAIM, (node, job))
                return await cur.fetchall()

            tasks = [asyncio.ensure_future(claim(c, n)) for c, n in zip(conns, nodes, strict=True)]
            go.set()
            rows = [row for result in await asyncio.gather(*tasks) for row in result]
            assert len(rows) == 1
            cur = await conns[0].execute("SELECT status, node_id FROM jobs WHERE id = %s", (job,))
            assert await cur.fetchone() == ("RUNNING", rows[0][1])
        finally:
            for c in conns:
                await c.close()


class TestMigration0003:
    async def test_rows_written_before_get_outcome_and_copies_as_the_engine_builds_them(self, empty_url: str) -> None:
        """A database at version 2: after 0003 each row's stored JSON is the one the engine builds (outcome too)."""
        c = await connect(empty_url)
        try:
            await c.execute(_CREATE_TABLE)
            for migration in migrations()[:2]:
                await c.execute(migration.sql.encode())
                await c.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (migration.version, migration.name)
                )
            cases = {
                ("READY", None): None,
                ("DONE", None): "succeeded",
                ("FAILED", "exited with code 1"): "failed",
                ("FAILED", "cancelled by alice"): "cancelled",
                ("FAILED", "cancelled by engine shutdown"): "interrupted",
                ("FAILED", "timed out after 5s"): "timed_out",
                ("FAILED", "interrupted: node lost"): "interrupted",
            }
            ids = {}
            for status, error in cases:
                ids[(status, error)] = job = str(uuid.uuid4())
                await c.execute(
                    "INSERT INTO jobs (id, type, name, status, created_at, created_by, error)"
                    " VALUES (%s, 'demo.echo', 'j', %s, now(), 'u', %s)",
                    (job, status, error),
                )
            # The JSON an engine of version 2 stored: the fields of that time, runRequest last.
            old_columns = JOB_COLUMNS.replace(", copy_of::text, copies", "")
            cur = await c.execute(f"SELECT {old_columns} FROM jobs")
            for row in await cur.fetchall():
                wire = {
                    k: v for k, v in wire_from_row((*row, None, [])).items() if k not in ("outcome", "copyOf", "copies")
                }
                assert list(wire)[-1] == "runRequest"
                await c.execute("UPDATE jobs SET wire = %s WHERE id = %s", (encode_wire(wire).decode(), row[1]))
            assert [m.name for m in await migrate(c)] == ["0003_outcome_copies"]
            cur = await c.execute(f"SELECT {JOB_COLUMNS}, wire FROM jobs")
            rows = await cur.fetchall()
            assert len(rows) == len(cases)
            for row in rows:
                assert row[-1] == entry_from_row(row[:-1]).encoded.decode()
            stored = {row[1]: json.loads(row[-1]) for row in rows}
            assert {key: stored[job]["outcome"] for key, job in ids.items()} == cases
        finally:
            await c.close()
