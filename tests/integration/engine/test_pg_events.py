"""The PostgreSQL store's change feed on a real server: NOTIFY in the change's transaction, catch-up by seq.

The feed (:mod:`engine_hub.store.changes`) is what a node's listener follows
to deliver cancels, and what live updates will follow: it must never skip a
change committed late and never return one twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine_hub.store.actions import Action
from engine_hub.store.changes import CHANNEL, changes_after, last_seq
from engine_hub.store.postgres import PostgresBackend
from shared.contract import HistoryEntry, Job, JobStatus, new_job_id, utcnow
from shared.journal.chain import GENESIS, make_record
from shared.journal.postgres import append_to_chain, copy_records
from shared.pg import connect
from tests.integration.engine.harness import MakeEngineServer, auth
from tests.sse import messages, take

WRITERS = 3
CREATES_PER_WRITER = 60


def _new_job_json(name: str) -> dict[str, Any]:
    now = utcnow()
    return Job(
        id=new_job_id(),
        type="demo.echo",
        name=name,
        params={},
        status=JobStatus.READY,
        created_at=now,
        created_by="admin",
        history=(HistoryEntry(status=JobStatus.READY, at=now, by="admin", reason=None),),
    ).to_json()


async def _create(backend: PostgresBackend, name: str) -> str:
    job = _new_job_json(name)
    await backend.commit(action=Action.JOB_CREATED, actor="admin", source="test", job_id=job["id"], data=job)
    return str(job["id"])


@pytest.fixture
def engine_store(postgres_url: str) -> str:
    """Engines here are nodes of the test's PostgreSQL database."""
    return postgres_url


@pytest.fixture
async def backends(postgres_url: str) -> AsyncIterator[list[PostgresBackend]]:
    """Three open stores on one database, as three nodes hold them (each its own pool)."""
    opened = [PostgresBackend(url=postgres_url, lost_after=30.0, pool_size=4) for _ in range(WRITERS)]
    for backend in opened:
        await backend.open()
    yield opened
    for backend in opened:
        await backend.close()


class TestNotify:
    async def test_a_committed_change_notifies_its_record_seq(
        self, backends: list[PostgresBackend], postgres_url: str
    ) -> None:
        """Each change sends {"seq": N} on engine_events once committed, N being its audit record's seq."""
        listener = await connect(postgres_url)
        try:
            await listener.execute(f"LISTEN {CHANNEL}")
            job_id = await _create(backends[0], "notified")
            payloads = [json.loads(n.payload) async for n in listener.notifies(timeout=5, stop_after=1)]
            changes = await changes_after(listener, 0)
        finally:
            await listener.close()
        assert payloads == [{"seq": changes[-1].seq}]
        assert (changes[-1].action, changes[-1].job_id, changes[-1].actor) == ("job_created", job_id, "admin")

    async def test_an_import_of_many_records_notifies_once(self, postgres_url: str) -> None:
        """COPY of 300 records (engine-hub db import) wakes the listeners once, with the newest seq."""
        records, prev = [], GENESIS
        for seq in range(1, 301):
            rec = make_record(seq=seq, prev=prev, action="a", actor="admin", source="cli", job_id=None, data={})
            records.append(rec)
            prev = rec.hash
        listener, writer = await connect(postgres_url), await connect(postgres_url)
        try:
            await listener.execute(f"LISTEN {CHANNEL}")
            async with writer.transaction():
                await copy_records(writer, "engine", records)
            heard = [json.loads(n.payload) async for n in listener.notifies(timeout=1, stop_after=2)]
        finally:
            await listener.close()
            await writer.close()
        assert heard == [{"seq": 300}]

    async def test_another_chain_does_not_notify_the_engines_channel(self, postgres_url: str) -> None:
        """A gateway's chain in the same database (--audit-store) is not an engine change: no notification."""
        listener = await connect(postgres_url)
        writer = await connect(postgres_url)
        try:
            await listener.execute(f"LISTEN {CHANNEL}")
            await writer.execute("INSERT INTO audit_head (chain, seq, hash) VALUES ('gateway', 0, repeat('0', 64))")
            async with writer.transaction():
                await append_to_chain(writer, "gateway", action="login", actor="bob", source="ip", job_id=None, data={})
            heard = [n async for n in listener.notifies(timeout=0.5, stop_after=1)]
        finally:
            await listener.close()
            await writer.close()
        assert heard == []


class TestCatchUp:
    async def test_a_later_change_is_never_visible_before_an_earlier_one_commits(self, postgres_url: str) -> None:
        """T1 appends and stays open; T2's append waits for T1's head row; the follower sees N, then N+1."""
        first, second, follower = [await connect(postgres_url) for _ in range(3)]
        try:
            start = await last_seq(follower)
            await first.execute("BEGIN")
            await append_to_chain(first, "engine", action="a", actor="t1", source="test", job_id=None, data={})

            async def later() -> None:
                async with second.transaction():
                    await append_to_chain(second, "engine", action="a", actor="t2", source="test", job_id=None, data={})

            waiting = asyncio.create_task(later())
            await asyncio.sleep(0.3)
            assert not waiting.done()  # T2 waits for the head row T1 holds
            assert await changes_after(follower, start) == []
            await first.execute("COMMIT")
            await waiting
            seen = await changes_after(follower, start)
            assert [(c.seq, c.actor) for c in seen] == [(start + 1, "t1"), (start + 2, "t2")]
        finally:
            for conn in (first, second, follower):
                await conn.close()

    async def test_a_follower_sees_every_change_once_in_order_under_concurrent_writers(
        self, backends: list[PostgresBackend], postgres_url: str
    ) -> None:
        """Following by seq while three stores write: no gap is ever observed, each change read exactly once."""
        follower = await connect(postgres_url)
        cursor = await last_seq(follower)
        start = cursor
        seen: list[int] = []
        done = asyncio.Event()

        async def write(backend: PostgresBackend, writer: int) -> list[str]:
            return [await _create(backend, f"w{writer}-{i}") for i in range(CREATES_PER_WRITER)]

        async def follow() -> None:
            nonlocal cursor
            while True:
                finished = done.is_set()
                batch = await changes_after(follower, cursor, limit=7)
                # A later seq is never visible before an earlier one: batches start right after the cursor.
                assert [c.seq for c in batch] == list(range(cursor + 1, cursor + 1 + len(batch)))
                seen.extend(c.seq for c in batch)
                if batch:
                    cursor = batch[-1].seq
                elif finished:
                    return
                else:
                    await asyncio.sleep(0)

        try:
            reader = asyncio.create_task(follow())
            created = await asyncio.gather(*(write(b, i) for i, b in enumerate(backends)))
            done.set()
            await reader
            everything = await changes_after(follower, start, limit=10_000)
        finally:
            await follower.close()
        assert seen == [c.seq for c in everything] == list(range(start + 1, start + 1 + WRITERS * CREATES_PER_WRITER))
        assert sorted(c.job_id or "" for c in everything) == sorted(j for ids in created for j in ids)


class TestStreamsAcrossNodes:
    async def test_a_change_made_on_node_a_reaches_a_stream_on_node_b(
        self, make_engine_server: MakeEngineServer
    ) -> None:
        """A stream on B carries A's changes, with the same ids (seqs) as A's own stream."""
        node_a, node_b = await make_engine_server(), await make_engine_server()
        on_a = await node_a.client.get("/api/events", headers=auth())
        on_b = await node_b.client.get("/api/events", headers=auth())
        stream_a, stream_b = messages(on_a.content), messages(on_b.content)
        await take(stream_a, 1)
        await take(stream_b, 1)
        job = await node_a.create("test.count")
        await node_a.run(job["id"])
        seen_a, seen_b = await take(stream_a, 4), await take(stream_b, 4)
        assert [(m.id, m.event) for m in seen_b] == [(m.id, m.event) for m in seen_a]
        assert [m.event for m in seen_b] == ["job_created", "run_requested", "job_started", "job_finished"]
        assert seen_b[-1].json()["status"] == "DONE"
        on_a.close()
        on_b.close()

    async def test_a_cursor_beyond_the_stores_head_is_reset(self, make_engine_server: MakeEngineServer) -> None:
        """Last-Event-ID above every change the store made (another store's): reset, not a wait for ever."""
        server = await make_engine_server()
        await server.create("test.count")
        resp = await server.client.get("/api/events", headers={**auth(), "Last-Event-ID": "999999"})
        (first,) = await take(messages(resp.content), 1)
        assert first.event == "reset" and int(first.id or 0) < 999999
        resp.close()
