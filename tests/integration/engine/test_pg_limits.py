"""A PostgreSQL node under pressure: no free pooled connection, a statement stuck on a lock.

Both must end the request with 503 ``store_unavailable`` within their
timeout, never hang it, and the stuck change must leave nothing behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from engine_hub.store.postgres import PostgresBackend
from shared.pg import connect
from tests.integration.engine.harness import MakeEngineServer, auth, wait_until


@pytest.fixture
def engine_store(postgres_url: str) -> str:
    """These tests are about the PostgreSQL store only: every engine here is a node on a fresh database."""
    return postgres_url


@asynccontextmanager
async def audit_head_locked(url: str) -> AsyncIterator[None]:
    """Hold the engine chain's head row locked from another session (as a stray transaction would)."""
    conn = await connect(url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT seq FROM audit_head WHERE chain = 'engine' FOR UPDATE")
            yield
    finally:
        await conn.close()


async def _waiting_on_a_lock(url: str) -> bool:
    conn = await connect(url)
    try:
        cur = await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        row = await cur.fetchone()
        return bool(row and row[0])
    finally:
        await conn.close()


class TestPoolExhaustion:
    async def test_a_request_finding_no_free_connection_gets_503_within_the_pool_timeout(
        self, make_engine_server: MakeEngineServer, postgres_url: str
    ) -> None:
        """With the only pooled connection busy, a read answers 503 store_unavailable after the pool timeout."""
        server = await make_engine_server(store_pool_size=1, store_pool_timeout=0.5)
        async with audit_head_locked(postgres_url):
            create = asyncio.create_task(server.client.post("/api/jobs", json={"type": "test.count"}, headers=auth()))
            await wait_until(lambda: _waiting_on_a_lock(postgres_url), what="the create holding the connection")
            started = time.monotonic()
            reply = await server.client.get("/api/jobs", headers=auth())
            waited = time.monotonic() - started
            assert (reply.status, (await reply.json())["code"]) == (503, "store_unavailable")
            assert 0.4 < waited < 2.0
        created = await create
        assert created.status == 201, await created.text()

    async def test_a_busy_pool_does_not_starve_the_heartbeat(
        self, make_engine_server: MakeEngineServer, postgres_url: str
    ) -> None:
        """With every pooled connection held past the lost threshold, the node stays ready and runs after."""
        server = await make_engine_server(store_pool_size=1, store_pool_timeout=10.0)
        job = await server.create("test.count")
        async with audit_head_locked(postgres_url):
            create = asyncio.create_task(server.client.post("/api/jobs", json={"type": "test.count"}, headers=auth()))
            await wait_until(lambda: _waiting_on_a_lock(postgres_url), what="the create holding the connection")
            await asyncio.sleep(3.5)  # past the fixture's 3 s lost threshold (heartbeat every 0.5 s)
            ready = await server.client.get("/readyz")
            assert ready.status == 200, await ready.text()
        assert (await create).status == 201
        reply = await server.client.post(f"/api/jobs/{job['id']}/run", json={}, headers=auth())
        assert reply.status == 202, await reply.text()


class TestStatementTimeout:
    async def test_a_change_stuck_on_a_lock_fails_503_and_leaves_nothing(
        self, make_engine_server: MakeEngineServer, postgres_url: str
    ) -> None:
        """A create stuck on the audit head past the statement timeout: 503, no job, no record, still ready."""
        server = await make_engine_server(store_statement_timeout=0.5)
        before = await server.records()
        async with audit_head_locked(postgres_url):
            started = time.monotonic()
            # Bounded here, so that without the statement timeout the test fails instead of hanging.
            reply = await asyncio.wait_for(
                server.client.post("/api/jobs", json={"type": "test.count"}, headers=auth()), timeout=5
            )
            waited = time.monotonic() - started
        assert (reply.status, (await reply.json())["code"]) == (503, "store_unavailable")
        assert 0.4 < waited < 3.0
        assert await server.records() == before
        listing = await server.client.get("/api/jobs", headers=auth())
        assert await listing.json() == []
        # One slow statement is not a store that is down: the node stays ready.
        assert (await server.client.get("/readyz")).status == 200


class TestSessionSettings:
    async def test_pooled_connections_get_the_timeout_and_keep_pgoptions(
        self, postgres_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each pooled session has the statement timeout, and options from PGOPTIONS still apply."""
        monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=1234")
        backend = PostgresBackend(url=postgres_url, lost_after=30.0, pool_size=2, statement_timeout=2.5)
        await backend.open()
        try:
            async with backend.connection("read") as conn:
                cur = await conn.execute("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")
                assert await cur.fetchone() == ("2500ms", "1234ms")
        finally:
            await backend.close()
