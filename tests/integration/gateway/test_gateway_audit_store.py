"""The audit chain in PostgreSQL (``--audit-store``): chained like the file journal, resumable, never forked.

Every test runs against a real throwaway PostgreSQL with the engine's schema
migrated (the ``postgres_url`` fixture) and reads the rows back with SQL.
"""

from __future__ import annotations

import asyncio

import pytest

from admin_gateway.audit.trail import LOGIN_SUCCEEDED
from shared.journal.chain import GENESIS, AuditQuery, JournalUnavailable
from shared.journal.postgres import PostgresJournal, verify_chain
from shared.pg import connect
from tests.integration.gateway.harness import SUPER, MakeGatewayServer, UpstreamEngine
from tests.unit.shared.test_journal_audit_filters import check_filters

CHAIN = "gw-test"


async def append(journal: PostgresJournal, n: int, actor: str = "alice") -> None:
    """Append ``n`` records by ``actor`` one after the other."""
    for i in range(n):
        await journal.append(action="test", actor=actor, source="127.0.0.1", job_id=None, data={"i": i, "x": 1.5})


async def sql(url: str, query: str, *params: object) -> list[tuple[object, ...]]:
    """Run one statement and return its rows (none for a statement without)."""
    conn = await connect(url)
    try:
        cur = await conn.execute(query, params)
        return list(await cur.fetchall()) if cur.description else []
    finally:
        await conn.close()


class TestPostgresJournal:
    async def test_appends_chain_and_verify(self, postgres_url: str) -> None:
        """Appended records are chained from GENESIS, stored with their hashes, and the chain verifies."""
        journal = await PostgresJournal.open(postgres_url, CHAIN)
        try:
            await append(journal, 5)
            assert [r.seq for r in journal.recent()] == [1, 2, 3, 4, 5]
            assert journal.recent()[0].prev == GENESIS
            newest = await journal.query(AuditQuery(limit=2))
            assert [r.seq for r in newest] == [5, 4]
            assert [r.seq for r in await journal.query(AuditQuery(before=3))] == [2, 1]
        finally:
            await journal.close()
        rows = await sql(postgres_url, "SELECT seq, hash FROM audit_head WHERE chain = %s", CHAIN)
        assert rows == [(5, journal.head)]
        result = await verify_chain(postgres_url, CHAIN, expected_head=journal.head)
        assert (result.ok, result.count, result.last_seq, result.head) == (True, 5, 5, journal.head)

    async def test_action_outcome_and_actor_prefix_filters(self, postgres_url: str) -> None:
        """The SQL filters match the journal's: actor prefix (no LIKE wildcards), action, data.outcome."""
        journal = await PostgresJournal.open(postgres_url, CHAIN)
        try:
            await check_filters(journal)
        finally:
            await journal.close()

    async def test_reopen_resumes_head(self, postgres_url: str) -> None:
        """A journal opened after another closed continues its seq and links to its head."""
        first = await PostgresJournal.open(postgres_url, CHAIN)
        await append(first, 3)
        old_head = first.head
        await first.close()
        second = await PostgresJournal.open(postgres_url, CHAIN)
        try:
            assert (second.last_seq, second.head) == (3, old_head)
            rec = await second.append(action="test", actor="bob", source="x", job_id="j1", data={})
            assert (rec.seq, rec.prev) == (4, old_head)
        finally:
            await second.close()
        assert (await verify_chain(postgres_url, CHAIN)).ok

    async def test_concurrent_writers_never_fork(self, postgres_url: str) -> None:
        """Two journals appending to one chain at once give seqs 1..N without gaps and a chain that verifies."""
        a = await PostgresJournal.open(postgres_url, CHAIN)
        b = await PostgresJournal.open(postgres_url, CHAIN)
        try:
            await asyncio.gather(append(a, 20, "a"), append(b, 20, "b"), append(a, 5, "a2"))
        finally:
            await a.close()
            await b.close()
        seqs = [
            r[0] for r in await sql(postgres_url, "SELECT seq FROM audit_events WHERE chain = %s ORDER BY seq", CHAIN)
        ]
        assert seqs == list(range(1, 46))
        assert (await verify_chain(postgres_url, CHAIN)).ok

    async def test_chains_are_separate(self, postgres_url: str) -> None:
        """Two chain names in one database each start at seq 1 and verify on their own."""
        a = await PostgresJournal.open(postgres_url, "gw-a")
        b = await PostgresJournal.open(postgres_url, "gw-b")
        try:
            await append(a, 2)
            rec = await b.append(action="test", actor="c", source="x", job_id=None, data={})
        finally:
            await a.close()
            await b.close()
        assert (rec.seq, rec.prev) == (1, GENESIS)
        assert (await verify_chain(postgres_url, "gw-a")).ok and (await verify_chain(postgres_url, "gw-b")).ok

    async def test_verify_fails_after_sql_edit(self, postgres_url: str) -> None:
        """Editing one row's data with SQL makes verify fail at that row's seq."""
        journal = await PostgresJournal.open(postgres_url, CHAIN)
        await append(journal, 6)
        await journal.close()
        await sql(postgres_url, """UPDATE audit_events SET data = '{"i": 99}' WHERE chain = %s AND seq = 4""", CHAIN)
        result = await verify_chain(postgres_url, CHAIN)
        assert not result.ok
        assert result.first_bad is not None and result.first_bad.seq == 4
        assert "altered" in result.first_bad.reason

    async def test_verify_fails_after_tail_deleted(self, postgres_url: str) -> None:
        """Deleting the newest row (head row untouched) makes verify fail: the head no longer matches."""
        journal = await PostgresJournal.open(postgres_url, CHAIN)
        await append(journal, 3)
        await journal.close()
        await sql(postgres_url, "DELETE FROM audit_events WHERE chain = %s AND seq = 3", CHAIN)
        result = await verify_chain(postgres_url, CHAIN)
        assert not result.ok and result.first_bad is not None and result.first_bad.seq == 3

    async def test_saved_head_catches_consistent_truncation(self, postgres_url: str) -> None:
        """A tail cut with the head row moved back still verifies alone, but not against the saved head."""
        journal = await PostgresJournal.open(postgres_url, CHAIN)
        await append(journal, 3)
        saved = journal.head
        await journal.close()
        assert (await verify_chain(postgres_url, CHAIN, expected_head=saved)).ok
        await sql(postgres_url, "DELETE FROM audit_events WHERE chain = %s AND seq = 3", CHAIN)
        await sql(
            postgres_url,
            "UPDATE audit_head SET seq = 2, hash = (SELECT hash FROM audit_events WHERE chain = %s AND seq = 2) "
            "WHERE chain = %s",
            CHAIN,
            CHAIN,
        )
        assert (await verify_chain(postgres_url, CHAIN)).ok
        result = await verify_chain(postgres_url, CHAIN, expected_head=saved)
        assert not result.ok and result.first_bad is not None and "saved head" in result.first_bad.reason

    async def test_unmigrated_database_refused(self, postgres_url: str) -> None:
        """A database without the audit tables is refused with one line naming the migration."""
        await sql(postgres_url, "DROP TABLE audit_events")
        with pytest.raises(JournalUnavailable, match="engine-hub db migrate") as caught:
            await PostgresJournal.open(postgres_url, CHAIN)
        assert "\n" not in str(caught.value)


class TestGatewayAuditStore:
    async def test_login_recorded_in_postgres(
        self, postgres_url: str, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """A gateway with audit_store set records a login in its chain in PostgreSQL and nothing on disk."""
        gw = await make_gateway_server(upstream_engine.url, audit_store=postgres_url, audit_chain="gw1")
        await gw.login()
        rows = await sql(postgres_url, "SELECT action, actor FROM audit_events WHERE chain = %s ORDER BY seq", "gw1")
        assert (LOGIN_SUCCEEDED, SUPER) in rows
        assert not gw.audit_dir.exists()
        assert (await verify_chain(postgres_url, "gw1")).ok

    async def test_unreachable_store_stops_start(
        self, closed_port: int, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """An audit store that cannot be reached stops the start with one line that hides the password."""
        url = f"postgresql://gw:s3cret-pw@127.0.0.1:{closed_port}/audit?connect_timeout=2"
        with pytest.raises(JournalUnavailable) as caught:
            await make_gateway_server(upstream_engine.url, audit_store=url)
        message = str(caught.value)
        assert "\n" not in message and "s3cret-pw" not in message
        assert f"127.0.0.1:{closed_port}" in message
