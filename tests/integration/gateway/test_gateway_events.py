"""The gateway's live stream against the real engine: order, resume, reset, sessions, caps, engine state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from tests.integration.gateway.harness import GatewayServer, MakeGatewayServer, UpstreamEngine, User
from tests.sse import Message, messages, take

ROUTE = "/api/admin/engine/events"


async def _open(user: User, **headers: str) -> tuple[aiohttp.ClientResponse, AsyncIterator[Message]]:
    resp = await user.client.get(ROUTE, headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    return resp, messages(resp.content)


async def _start(user: User, **headers: str) -> tuple[aiohttp.ClientResponse, AsyncIterator[Message], list[Message]]:
    """Open a stream and read its first three messages (ready or reset, engine, safe_mode)."""
    resp, stream = await _open(user, **headers)
    return resp, stream, await take(stream, 3)


async def _synced(user: User) -> tuple[aiohttp.ClientResponse, AsyncIterator[Message]]:
    """A stream opened after the gateway's relay follows the engine (the first stream also gets its reset)."""
    resp, stream, first = await _start(user)
    if first[1].json() != {"state": "up"}:  # opened before the relay reached the engine: up, then reset
        up, reset = await take(stream, 2)
        assert (up.event, up.json(), reset.event) == ("engine", {"state": "up"}, "reset")
    return resp, stream


class TestStream:
    async def test_changes_arrive_in_order_with_their_seq(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """Each job change is one message with the engine's seq as id, in order, its data the job's JSON."""
        user = await gateway_server.login()
        _, stream = await _synced(user)
        ids = [await upstream_engine.create() for _ in range(3)]
        got = await take(stream, 3)
        assert [m.event for m in got] == ["job_created"] * 3
        assert [m.json()["id"] for m in got] == ids
        seqs = [int(m.id or "") for m in got]
        assert seqs == list(range(seqs[0], seqs[0] + 3))

    async def test_first_messages_say_engine_and_safe_mode(self, gateway_server: GatewayServer) -> None:
        """A stream starts with ready (or reset), then the engine's state and SAFE_MODE."""
        user = await gateway_server.login()
        await _synced(user)
        _, _, first = await _start(user)
        assert first[0].event == "ready"
        assert (first[1].event, first[1].json()) == ("engine", {"state": "up"})
        assert (first[2].event, first[2].json()) == ("safe_mode", {"enabled": False})

    async def test_resume_by_last_event_id_loses_and_repeats_nothing(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """After a forced disconnect, Last-Event-ID resumes exactly after the last message read."""
        user = await gateway_server.login()
        resp, stream = await _synced(user)
        ids = [await upstream_engine.create() for _ in range(5)]
        got = await take(stream, 2)
        resp.close()  # forced: the rest is never read on this connection
        ids += [await upstream_engine.create() for _ in range(2)]
        _, again = await _open(user, **{"Last-Event-ID": got[-1].id or ""})
        rest = [m for m in await take(again, 7) if m.event == "job_created"]
        assert [m.json()["id"] for m in got + rest] == ids

    async def test_cursor_older_than_the_ring_gets_reset(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """A page resuming from before what the gateway keeps is told to list again."""
        gateway = await make_gateway_server(upstream_engine.url, events_ring=2)
        user = await gateway.login()
        _, stream = await _synced(user)
        created = [await upstream_engine.create() for _ in range(4)]
        got = await take(stream, 4)
        _, _, first = await _start(user, **{"Last-Event-ID": got[0].id or ""})
        assert first[0].event == "reset"
        assert first[0].id == got[-1].id  # resume from the newest change after listing
        assert len(created) == 4

    async def test_bad_cursor_is_400(self, gateway_server: GatewayServer) -> None:
        """A Last-Event-ID that is not an event id, or an unknown parameter, is a clear 400."""
        user = await gateway_server.login()
        resp = await user.client.get(ROUTE, headers={"Last-Event-ID": "abc"})
        assert resp.status == 400
        assert (await resp.json())["code"] == "invalid_field"
        resp = await user.client.get(ROUTE + "?since=1")
        assert resp.status == 400
        assert (await resp.json())["code"] == "unknown_field"


class TestSessions:
    async def test_signed_out_client_gets_401(self, gateway_server: GatewayServer) -> None:
        """Without a session the route answers 401 JSON, not a stream."""
        client = await gateway_server.client()
        resp = await client.get(ROUTE)
        assert resp.status == 401
        assert (await resp.json())["code"] == "unauthorized"

    async def test_expired_session_ends_the_stream_with_signed_out(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """When the session's idle time passes, the stream sends signed_out (expired) and closes."""
        gateway = await make_gateway_server(upstream_engine.url, events_session_check=0.1)
        user = await gateway.login()
        _, stream = await _synced(user)
        gateway.clock.advance(gateway.settings.idle_timeout + 1)
        got = await take(stream, 1)
        assert (got[0].event, got[0].json()) == ("signed_out", {"reason": "expired"})
        assert [m async for m in stream] == []  # the gateway closed it

    async def test_watching_does_not_keep_a_session_alive(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """An open stream's checks are not uses: the session still expires after its idle time."""
        gateway = await make_gateway_server(upstream_engine.url, events_session_check=0.05)
        user = await gateway.login()
        _, stream = await _synced(user)
        gateway.clock.advance(gateway.settings.idle_timeout - 5)
        await asyncio.sleep(0.3)  # several checks happen while the session lives
        gateway.clock.advance(10)
        assert (await take(stream, 1))[0].event == "signed_out"

    async def test_logout_elsewhere_ends_the_stream(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """A logout in another tab of the same session ends the stream with signed_out (signed_out)."""
        gateway = await make_gateway_server(upstream_engine.url, events_session_check=0.1)
        user = await gateway.login()
        _, stream = await _synced(user)
        resp = await user.post("/logout")
        assert resp.status < 400
        got = await take(stream, 1)
        assert (got[0].event, got[0].json()) == ("signed_out", {"reason": "signed_out"})


class TestLimits:
    async def test_per_session_cap_is_429(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Past events_per_session streams a session gets 429 with Retry-After; another session still gets one."""
        gateway = await make_gateway_server(upstream_engine.url, events_per_session=1)
        user = await gateway.login()
        await _start(user)
        resp = await user.client.get(ROUTE)
        assert resp.status == 429
        assert (await resp.json())["code"] == "throttled"
        assert resp.headers["Retry-After"] == "5"
        other = await gateway.login()
        await _start(other)

    async def test_total_cap_is_429(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Past events_max_streams streams in total, any session gets 429."""
        gateway = await make_gateway_server(upstream_engine.url, events_max_streams=1)
        await _start(await gateway.login())
        resp = await (await gateway.login()).client.get(ROUTE)
        assert resp.status == 429

    async def test_one_upstream_stream_for_many_pages(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """Five pages watching through one gateway open one stream at the engine."""
        users = [await gateway_server.login() for _ in range(5)]
        for user in users:
            await _start(user)
        await upstream_engine.create()
        assert upstream_engine.count("GET", r"^/api/events") == 1


class TestEngineState:
    async def test_engine_going_away_sends_engine_down(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """When the engine stops, every page is told engine down (and the stream itself stays open)."""
        user = await gateway_server.login()
        _, stream = await _synced(user)
        await upstream_engine.server.close()
        got = [m for m in await take(stream, 1, timeout=15) if m.event == "engine"]
        assert [m.json() for m in got] == [{"state": "down"}]
