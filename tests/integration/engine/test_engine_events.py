"""``GET /api/events`` on a real engine, both stores: order, ids, resume, reset, slow clients, access.

Ids are checked against the audit records the engine wrote: an event's id is
its change's record seq.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from engine_hub.store.events import EVENTS
from tests.integration.engine.conftest import BOTH_STORES
from tests.integration.engine.harness import CLIENT_TOKEN, EngineServer, MakeEngineServer, auth, wait_until
from tests.sse import Message, messages, take

pytestmark = BOTH_STORES

RUN_ACTIONS = ["job_created", "run_requested", "job_started", "job_finished"]


async def open_stream(server: EngineServer, **headers: str) -> tuple[Any, AsyncIterator[Message]]:
    """Open the stream (admin token plus ``headers``); return the response and its messages."""
    resp = await server.client.get("/api/events", headers={**auth(), **headers})
    assert resp.status == 200, await resp.text()
    return resp, messages(resp.content)


async def job_records(server: EngineServer, job_id: str) -> list[tuple[str, str]]:
    """``(seq, action)`` of the job's audit records, oldest first, as event ids and names."""
    return [(str(r.seq), r.action) for r in await server.records() if r.job_id == job_id]


class TestOrder:
    async def test_a_run_arrives_as_its_changes_in_order_with_their_record_seqs(
        self, make_engine_server: MakeEngineServer
    ) -> None:
        """ready, then created, run requested, started, finished: ids are the records' seqs, data the job."""
        server = await make_engine_server()
        resp, stream = await open_stream(server)
        (ready,) = await take(stream, 1)
        assert ready.event == "ready" and ready.id == str(ready.json()["seq"])
        job = await server.create("test.count")
        await server.run(job["id"])
        events = await take(stream, 4)
        assert [(m.id, m.event) for m in events] == await job_records(server, job["id"])
        assert [m.event for m in events] == RUN_ACTIONS
        assert [int(m.id or 0) for m in events] == list(range(int(ready.id) + 1, int(ready.id) + 5))
        assert {m.json()["id"] for m in events} == {job["id"]}
        assert events[0].json()["status"] == "READY" and events[-1].json() == await server.job(job["id"])
        resp.close()

    async def test_the_stream_is_not_cached_or_buffered(self, make_engine_server: MakeEngineServer) -> None:
        """text/event-stream, no-store, unbuffered by nginx, with a request id."""
        server = await make_engine_server()
        resp, _ = await open_stream(server)
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["X-Accel-Buffering"] == "no"
        assert resp.headers["X-Request-Id"]
        resp.close()


class TestResume:
    async def test_last_event_id_resumes_without_loss_or_duplicate_across_a_disconnect(
        self, make_engine_server: MakeEngineServer
    ) -> None:
        """Drop the connection mid-run; reconnecting with Last-Event-ID gets exactly the changes after it."""
        server = await make_engine_server()
        resp, stream = await open_stream(server)
        await take(stream, 1)
        first = await server.create("test.count")
        (created,) = await take(stream, 1)
        resp.close()
        await server.run(first["id"])
        await server.wait_for(first["id"])
        second = await server.create("test.count")
        resp, stream = await open_stream(server, **{"Last-Event-ID": created.id or ""})
        events = await take(stream, 4)
        expected = (await job_records(server, first["id"]))[1:] + await job_records(server, second["id"])
        assert [(m.id, m.event) for m in events] == expected
        resp.close()

    async def test_after_query_resumes_the_same_way(self, make_engine_server: MakeEngineServer) -> None:
        """?after=N sends the changes after N first, then the live ones."""
        server = await make_engine_server()
        job = await server.create("test.count")
        (seq, _), *_ = await job_records(server, job["id"])
        await server.run(job["id"])
        await server.wait_for(job["id"])
        resp = await server.client.get(f"/api/events?after={seq}", headers=auth())
        events = await take(messages(resp.content), 3)
        assert [(m.id, m.event) for m in events] == (await job_records(server, job["id"]))[1:]
        resp.close()

    async def test_a_cursor_older_than_the_ring_gets_reset_then_live_changes(
        self, make_engine_server: MakeEngineServer
    ) -> None:
        """With a ring of 3, resuming from 5 changes back starts with reset (newest seq), then goes live."""
        server = await make_engine_server(events_ring=3)
        resp, stream = await open_stream(server)
        await take(stream, 1)
        jobs = [await server.create("test.count") for _ in range(5)]
        await take(stream, 5)  # the hub has them all
        resp.close()
        (oldest, _), *_ = await job_records(server, jobs[0]["id"])
        resp, stream = await open_stream(server, **{"Last-Event-ID": oldest})
        (reset,) = await take(stream, 1)
        (newest, _), *_ = await job_records(server, jobs[-1]["id"])
        assert (reset.event, reset.id, reset.json()["seq"]) == ("reset", newest, int(newest))
        late = await server.create("test.count")
        (live,) = await take(stream, 1)
        assert (live.event, live.json()["id"]) == ("job_created", late["id"])
        resp.close()


class TestSlowClient:
    async def test_a_client_that_does_not_read_is_cut_off_with_bounded_memory(
        self, make_engine_server: MakeEngineServer
    ) -> None:
        """A reader that never reads is dropped once 64 KiB wait for it, logged with its reason; others go on."""
        limit = 64 * 1024
        server = await make_engine_server(events_client_buffer=limit)
        hub = server.client.app[EVENTS]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (server.client.host, server.client.port))
        request = f"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth()['Authorization']}\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        await wait_until(lambda: hub.streams == 1, what="the stream open")
        reader, reading = await open_stream(server)
        await take(reading, 1)
        received: list[Message] = []

        async def read() -> None:
            async for message in reading:
                received.append(message)

        follower = asyncio.create_task(read())
        with capture_logs() as logs:
            created = 0
            while hub.streams == 2 and created < 5000:
                await asyncio.gather(*(server.create("test.count", name="x" * 200) for _ in range(10)))
                created += 10
                await asyncio.sleep(0.01)
            assert hub.streams == 1, f"never cut off after {created} changes"
        dropped = [e for e in logs if e["event"] == "event_stream_dropped"]
        assert len(dropped) == 1 and dropped[0]["reason"].startswith("slow consumer")
        assert dropped[0]["peak_bytes"] <= limit + 2048  # the limit plus the one frame that passed it
        # The client that reads got every change.
        await wait_until(lambda: len(received) == created, what="every change at the reading client")
        follower.cancel()
        reader.close()
        sock.close()


class TestAccess:
    async def test_without_a_token_401(self, make_engine_server: MakeEngineServer) -> None:
        """No token: 401, as for the list."""
        server = await make_engine_server()
        resp = await server.client.get("/api/events")
        assert (resp.status, (await resp.json())["code"]) == (401, "unauthorized")

    async def test_a_client_token_may_follow(self, make_engine_server: MakeEngineServer) -> None:
        """A submit-scope client token reads the stream as it reads the list."""
        server = await make_engine_server()
        resp = await server.client.get("/api/events", headers=auth(CLIENT_TOKEN))
        assert resp.status == 200
        resp.close()

    @pytest.mark.parametrize(
        ("query", "headers", "code"),
        [
            ("?after=-1", {}, "invalid_field"),
            ("?after=abc", {}, "invalid_field"),
            ("", {"Last-Event-ID": "1e3"}, "invalid_field"),
            ("?since=3", {}, "unknown_field"),
        ],
    )
    async def test_bad_cursors_are_400(
        self, make_engine_server: MakeEngineServer, query: str, headers: dict[str, str], code: str
    ) -> None:
        """A cursor that is not a seq, or an unknown parameter: 400 with its code, before any stream."""
        server = await make_engine_server()
        resp = await server.client.get(f"/api/events{query}", headers={**auth(), **headers})
        assert (resp.status, (await resp.json())["code"]) == (400, code)

    async def test_streams_above_the_cap_get_429(self, make_engine_server: MakeEngineServer) -> None:
        """With at most 2 streams, a third is refused 429 throttled with Retry-After."""
        server = await make_engine_server(events_max_streams=2)
        opened = [(await open_stream(server))[0] for _ in range(2)]
        resp = await server.client.get("/api/events", headers=auth())
        assert (resp.status, (await resp.json())["code"], resp.headers["Retry-After"]) == (429, "throttled", "5")
        for r in opened:
            r.close()
