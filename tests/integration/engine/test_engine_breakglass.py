"""Break-glass for SAFE_MODE at the engine (issue 15): the override window, its records, and runs made in it.

Time is an injected clock (``Settings.clock``): nothing sleeps to let a
window expire. Marked ``both_stores``: the window is one truth on the
embedded store and on PostgreSQL alike.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from engine_hub.http.app import create_app
from engine_hub.jobs.catalog import Catalog
from engine_hub.jobs.override import OVERRIDES
from engine_hub.settings import Settings
from engine_hub.store.override import OVERRIDE_ACTIONS
from shared.journal.chain import GENESIS, MemoryJournal, Record
from shared.journal.postgres import ChainCheck, verify_chain
from shared.journal.tools import verify
from tests.integration.engine.harness import ADMIN_TOKEN, CLIENT_TOKEN, EngineServer, MakeEngineServer, auth, wait_until
from tests.integration.gateway.harness import FakeClock

pytestmark = pytest.mark.both_stores

OVERRIDE = "/api/safe-mode/override"


async def _post(server: EngineServer, path: str, actor: str, body: Any = None) -> tuple[int, Any]:
    resp = await server.client.post(path, json=body if body is not None else {}, headers=auth(actor=actor))
    return resp.status, await resp.json()


async def _request(server: EngineServer, actor: str = "alice", minutes: int = 15) -> dict[str, Any]:
    status, body = await _post(server, OVERRIDE, actor, {"reason": "INC-1: reindex now", "minutes": minutes})
    assert status == 201, body
    window: dict[str, Any] = body["window"]
    return window


async def _approve(server: EngineServer, window_id: str, actor: str = "carol") -> dict[str, Any]:
    status, body = await _post(server, f"{OVERRIDE}/{window_id}/approve", actor)
    assert status == 200, body
    window: dict[str, Any] = body["window"]
    return window


async def _current(server: EngineServer, token: str = ADMIN_TOKEN) -> Any:
    resp = await server.client.get(OVERRIDE, headers=auth(token))
    assert resp.status == 200, await resp.text()
    return (await resp.json())["window"]


async def _run(server: EngineServer, override_id: str | None) -> tuple[int, Any]:
    job = await server.create("demo.echo")
    body = {"overrideId": override_id} if override_id is not None else {}
    resp = await server.client.post(f"/api/jobs/{job['id']}/run", json=body, headers=auth(actor="alice"))
    return resp.status, await resp.json()


def _override_records(records: list[Record]) -> list[Record]:
    return [r for r in records if r.action in OVERRIDE_ACTIONS]


async def _chain_intact(server: EngineServer) -> bool:
    if server.store_url is not None:
        return (await verify_chain(server.store_url, "engine")).ok
    checker = ChainCheck(where="memory", start=(1, GENESIS))
    return all(checker.check(record) is None for record in await server.records())


@pytest.fixture
def clock() -> FakeClock:
    """The engine's injected clock."""
    return FakeClock()


@pytest.fixture
async def engine(make_engine_server: MakeEngineServer, clock: FakeClock) -> EngineServer:
    """An engine on the injected clock whose sweep looks for expired windows every 50 ms."""
    return await make_engine_server(clock=clock, override_sweep=0.05)


class TestFourEyes:
    async def test_the_window_opens_only_with_a_second_person(self, engine: EngineServer) -> None:
        """The requester's own approval is 403 ``self_approval``; another actor's opens it for its minutes."""
        window = await _request(engine, "alice", minutes=20)
        assert window["state"] == "requested"
        assert window["requestedBy"] == "alice"
        assert await _run(engine, window["id"]) == (
            409,
            {
                "error": f"SAFE_MODE override {window['id']!r} is not open (it is requested); ask for a new window",
                "code": "override_closed",
            },
        )
        for same in ("alice", "ALICE", "\uff41lice"):  # one person, however the name is cased or written
            status, body = await _post(engine, f"{OVERRIDE}/{window['id']}/approve", same)
            assert (status, body["code"]) == (403, "self_approval"), same
        opened = await _approve(engine, window["id"], "carol")
        assert opened["state"] == "open"
        assert opened["approvedBy"] == "carol"
        assert opened["until"] == "2033-05-18T03:53:20.000Z"  # EPOCH + 20 minutes
        assert await _current(engine, CLIENT_TOKEN) == opened
        actions = [(r.action, r.actor, r.job_id) for r in _override_records(await engine.records())]
        assert actions == [
            ("safe_mode_override_requested", "alice", None),
            ("safe_mode_override_approved", "carol", None),
        ]
        assert await _chain_intact(engine)

    async def test_one_window_at_a_time(self, engine: EngineServer) -> None:
        """A request while one is requested or open is 409 ``override_active``; after it ends, a new one may start."""
        window = await _request(engine)
        status, body = await _post(engine, OVERRIDE, "bob", {"reason": "me too"})
        assert (status, body["code"]) == (409, "override_active")
        await _approve(engine, window["id"])
        status, body = await _post(engine, OVERRIDE, "bob", {"reason": "me too"})
        assert (status, body["code"]) == (409, "override_active")
        status, body = await _post(engine, f"{OVERRIDE}/{window['id']}/end", "bob")
        assert status == 200, body
        assert (await _request(engine, "bob"))["minutes"] == 15

    async def test_bad_requests(self, engine: EngineServer) -> None:
        """Minutes outside 1–60, no reason, or an unknown window id are refused, and nothing is written."""
        for body in ({"reason": "x", "minutes": 0}, {"reason": "x", "minutes": 61}, {"minutes": 5}, {"reason": ""}):
            status, answer = await _post(engine, OVERRIDE, "alice", body)
            assert (status, answer["code"]) == (400, "invalid_field"), body
        status, answer = await _post(engine, f"{OVERRIDE}/nope/approve", "carol")
        assert (status, answer["code"]) == (404, "not_found")
        assert _override_records(await engine.records()) == []
        assert await _current(engine) is None


class TestClosing:
    async def test_end_early_and_withdraw(self, engine: EngineServer) -> None:
        """Anyone ends an open window at once (a run with its id is then refused); a pending request is withdrawn."""
        window = await _request(engine)
        await _approve(engine, window["id"])
        status, body = await _post(engine, f"{OVERRIDE}/{window['id']}/end", "dave")
        assert status == 200
        assert (body["window"]["state"], body["window"]["endedBy"]) == ("ended", "dave")
        assert (await _run(engine, window["id"]))[1]["code"] == "override_closed"
        status, body = await _post(engine, f"{OVERRIDE}/{window['id']}/end", "dave")
        assert (status, body["code"]) == (409, "override_closed")
        pending = await _request(engine, "bob")
        status, body = await _post(engine, f"{OVERRIDE}/{pending['id']}/end", "bob")
        assert (status, body["window"]["state"]) == (200, "ended")
        status, body = await _post(engine, f"{OVERRIDE}/{pending['id']}/approve", "carol")
        assert (status, body["code"]) == (404, "not_found") or (status, body["code"]) == (409, "override_closed")
        assert await _current(engine) is None

    async def test_time_closes_the_window_and_the_sweep_records_it_once(
        self, engine: EngineServer, clock: FakeClock
    ) -> None:
        """Inside the window a run records its id; one second after ``until`` a run is refused, unlooked-at."""
        window = await _approve(engine, (await _request(engine, minutes=1))["id"])
        status, body = await _run(engine, window["id"])
        assert status == 202, body
        run_records = [r for r in await engine.records() if r.action == "run_requested"]
        assert run_records[-1].data["overrideId"] == window["id"]
        clock.advance(59)
        assert (await _run(engine, window["id"]))[0] == 202
        clock.advance(2)  # one second past until
        status, body = await _run(engine, window["id"])
        assert (status, body["code"]) == (409, "override_closed")
        assert await _current(engine) is None

        async def expired() -> bool:
            return any(r.action == "safe_mode_override_expired" for r in await engine.records())

        await wait_until(expired, what="the sweep's expired record")
        await _request(engine, "bob")  # settles again before the new request: nothing left to expire
        records = _override_records(await engine.records())
        assert [r.action for r in records] == [
            "safe_mode_override_requested",
            "safe_mode_override_approved",
            "safe_mode_override_expired",
            "safe_mode_override_requested",
        ]
        assert records[2].actor == "system"
        assert records[2].data == {"windowId": window["id"], "expiredAt": window["until"], "phase": "window"}
        assert await _chain_intact(engine)

    async def test_a_request_nobody_approves_lapses(
        self, make_engine_server: MakeEngineServer, clock: FakeClock
    ) -> None:
        """15 minutes after the request, approving it is 409 ``override_closed`` and the lapse is recorded."""
        engine = await make_engine_server(clock=clock, override_sweep=3600.0)
        window = await _request(engine)
        clock.advance(15 * 60)
        status, body = await _post(engine, f"{OVERRIDE}/{window['id']}/approve", "carol")
        assert (status, body["code"]) == (409, "override_closed")
        last = _override_records(await engine.records())[-1]
        assert (last.action, last.data["phase"]) == ("safe_mode_override_expired", "request")

    async def test_the_approval_that_starts_a_run_records_the_window(
        self, engine: EngineServer, clock: FakeClock
    ) -> None:
        """A completing approval inside a window records its id with the start; after ``until`` it is refused."""
        window = await _approve(engine, (await _request(engine, minutes=1))["id"])
        guarded = [await engine.create("demo.guarded") for _ in range(2)]
        for job in guarded:
            status, body = await _post(engine, f"/api/jobs/{job['id']}/run", "alice", {"reason": "INC-1"})
            assert status == 202, body
        status, body = await _post(engine, f"/api/jobs/{guarded[0]['id']}/approve", "bob", {"overrideId": window["id"]})
        assert status == 202, body
        started = [r for r in await engine.records() if r.action == "run_requested"][-1]
        assert (started.job_id, started.data["overrideId"]) == (guarded[0]["id"], window["id"])
        clock.advance(61)
        status, body = await _post(engine, f"/api/jobs/{guarded[1]['id']}/approve", "bob", {"overrideId": window["id"]})
        assert (status, body["code"]) == (409, "override_closed")
        assert (await engine.job(guarded[1]["id"]))["status"] == "READY"

    async def test_a_run_without_override_is_unchanged(self, engine: EngineServer) -> None:
        """The engine knows no SAFE_MODE: a plain run still starts, and its record names no window."""
        status, body = await _run(engine, None)
        assert status == 202, body
        assert "overrideId" not in [r for r in await engine.records() if r.action == "run_requested"][-1].data


class TestRaces:
    @staticmethod
    async def _nodes(
        engine: EngineServer, make_engine_server: MakeEngineServer, clock: FakeClock
    ) -> list[EngineServer]:
        """The engine, and a second node on the same PostgreSQL store when there is one."""
        if engine.store_url is None:
            return [engine]
        return [engine, await make_engine_server(clock=clock, override_sweep=3600.0)]

    async def test_concurrent_approvals_open_the_window_once(
        self, engine: EngineServer, make_engine_server: MakeEngineServer, clock: FakeClock
    ) -> None:
        """Ten approvals at once (spread over two nodes on PostgreSQL): one opens the window, nine get 409."""
        nodes = await self._nodes(engine, make_engine_server, clock)
        window = await _request(engine)
        answers = await asyncio.gather(
            *(_post(nodes[i % len(nodes)], f"{OVERRIDE}/{window['id']}/approve", f"approver{i}") for i in range(10))
        )
        assert sorted(status for status, _ in answers) == [200] + [409] * 9
        assert {body["code"] for status, body in answers if status == 409} == {"override_closed"}
        actions = [r.action for r in _override_records(await engine.records())]
        assert actions.count("safe_mode_override_approved") == 1
        assert await _chain_intact(engine)

    async def test_concurrent_sweeps_record_the_expiry_once(
        self, make_engine_server: MakeEngineServer, clock: FakeClock
    ) -> None:
        """Past its end, ten sweeps at once (on every node) write exactly one ``expired`` record."""
        engine = await make_engine_server(clock=clock, override_sweep=3600.0)
        nodes = await self._nodes(engine, make_engine_server, clock)
        await _approve(engine, (await _request(engine, minutes=1))["id"])
        clock.advance(61)
        closed = await asyncio.gather(*(nodes[i % len(nodes)].client.app[OVERRIDES].settle() for i in range(10)))
        assert len([window for window in closed if window is not None]) == 1
        actions = [r.action for r in _override_records(await engine.records())]
        assert actions.count("safe_mode_override_expired") == 1
        assert await _chain_intact(engine)


class TestRestart:
    async def test_replay_rebuilds_the_window(self, make_engine_server: MakeEngineServer, clock: FakeClock) -> None:
        """An engine restarted on the same journal serves the same open window (embedded store)."""
        journal = MemoryJournal()
        first = await make_engine_server(journal=journal, clock=clock)
        window = await _approve(first, (await _request(first))["id"])
        await first.client.close()
        second = await make_engine_server(journal=journal, clock=clock)
        assert await _current(second) == window
        assert (await _run(second, window["id"]))[0] == 202

    async def test_snapshot_and_file_journal_keep_the_window(
        self, aiohttp_client: Any, engine_catalog: Catalog, tmp_path: Path, clock: FakeClock, engine_store: str | None
    ) -> None:
        """A durable engine's clean stop snapshots the window; the next start has it, and `audit verify` passes."""
        if engine_store is not None:
            pytest.skip("embedded store only: the durable journal and its snapshots")

        async def start() -> TestClient[Any, Any]:
            settings = Settings(token=ADMIN_TOKEN, data_dir=tmp_path / "engine", clock=clock, snapshot_records=1)
            client: TestClient[Any, Any] = await aiohttp_client(
                create_app(settings, catalog=engine_catalog, environ={})
            )
            return client

        first = EngineServer(client=await start(), journal=None)
        window = await _approve(first, (await _request(first))["id"])
        await first.client.close()
        assert list((tmp_path / "engine" / "journal" / "snapshots").iterdir())
        second = EngineServer(client=await start(), journal=None)
        assert await _current(second) == window
        await second.client.close()
        assert verify(tmp_path / "engine" / "journal").ok
