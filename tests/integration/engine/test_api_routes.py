"""Every route of both processes sits behind the one request wrapper (shared.web.ApiRoutes)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from engine_hub.http.routes import ROUTES
from shared.routes import Access
from shared.web import UNMATCHED_ROUTE
from tests.integration.engine.harness import unstarted_app

JOB = "00000000-0000-4000-8000-000000000000"


async def _sneaky(request: web.Request) -> web.Response:
    return web.json_response({"secret": True})


class TestApiRoutes:
    @pytest.mark.parametrize("process", ["engine", "gateway"])
    async def test_route_added_around_the_wrapper_refuses_to_start(self, tmp_path: Path, process: str) -> None:
        """A route added straight to app.router (no auth, sessions, error mapping or log) stops the start."""
        app = unstarted_app(process, tmp_path)
        app.router.add_post("/api/sneaky", _sneaky)
        runner = web.AppRunner(app)
        with pytest.raises(RuntimeError, match="POST /api/sneaky"):
            await runner.setup()
        await runner.cleanup()

    @pytest.mark.parametrize("process", ["engine", "gateway"])
    async def test_route_added_by_a_cleanup_context_refuses_to_start(self, tmp_path: Path, process: str) -> None:
        """A route a cleanup context adds during start-up, after the first check, stops the start too."""
        app = unstarted_app(process, tmp_path)

        async def add_late(app: web.Application) -> AsyncIterator[None]:
            app.router.add_get("/api/late", _sneaky)
            yield

        app.cleanup_ctx.append(add_late)
        runner = web.AppRunner(app)
        with pytest.raises(RuntimeError, match="GET /api/late"):
            await runner.setup()
        await runner.cleanup()

    async def test_every_engine_route_needs_the_token(self, tmp_path: Path) -> None:
        """Each route the started engine serves, found by walking its router, answers 401 without a token."""
        client = TestClient(TestServer(unstarted_app("engine", tmp_path)))
        await client.start_server()
        try:
            checked = 0
            public = {(row.method, row.router_path) for row in ROUTES if row.access is Access.PUBLIC}
            for route in client.app.router.routes():
                resource = route.resource
                assert resource is not None
                if (route.method, resource.canonical) in public or route.method == "HEAD":
                    continue
                path = re.sub(r"\{[^}]+\}", JOB, resource.canonical)
                method = "PATCH" if route.method == "*" else route.method
                resp = await client.request(method, path)
                assert resp.status == 401, (route.method, resource.canonical, resp.status)
                assert (await resp.json())["code"] == "unauthorized"
                checked += 1
            assert checked >= 15
            assert UNMATCHED_ROUTE in {r.resource.name for r in client.app.router.routes() if r.resource}
        finally:
            await client.close()


async def _raw(port: int, request_line: str, extra: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send one raw request line and ``extra`` header bytes (no checks on our side); return status, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"{request_line}\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n".encode() + extra + b"\r\n"
    )
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


class TestOddRequestTargets:
    @pytest.mark.parametrize("process", ["engine", "gateway"])
    async def test_options_star_gets_the_wrapper_too(self, tmp_path: Path, process: str) -> None:
        """`OPTIONS *` (no leading slash) gets a JSON error with a request id (and the gateway's headers)."""
        app = unstarted_app(process, tmp_path)
        server = TestServer(app)
        await server.start_server()
        try:
            assert server.port is not None
            status, headers, body = await _raw(server.port, "OPTIONS * HTTP/1.1")
        finally:
            await server.close()
        assert status == (401 if process == "engine" else 404)
        assert set(json.loads(body)) == {"error", "code"}
        assert headers["x-request-id"]
        if process == "gateway":
            assert "frame-ancestors 'none'" in headers["content-security-policy"]

    @pytest.mark.parametrize("process", ["engine", "gateway"])
    @pytest.mark.parametrize("target", ["example.com:443", "127.0.0.1:1"])
    async def test_connect_gets_a_json_error(self, tmp_path: Path, process: str, target: str) -> None:
        """`CONNECT host:port` (a target without a path) gets the wrapper's JSON 4xx with a request id."""
        app = unstarted_app(process, tmp_path)
        server = TestServer(app)
        await server.start_server()
        try:
            assert server.port is not None
            status, headers, body = await _raw(server.port, f"CONNECT {target} HTTP/1.1")
        finally:
            await server.close()
        assert status == (401 if process == "engine" else 404)
        assert headers["content-type"].startswith("application/json")
        assert set(json.loads(body)) == {"error", "code"}
        assert headers["x-request-id"]


#: Paths an unauthenticated prober tries on the engine: unknown routes, malformed ids, odd spellings.
ENGINE_ODD_PATHS = (
    "/api/nope",
    "/api/jobs/a.b",
    "/api/jobs/a.b/logs",
    "/api/jobs/x/y/z",
    "/api/jobs/%2e%2e",
    "/api/jobs/" + "x" * 300,
    "/api/jobs/a%2Fb/run",
    "/api/",
    "/api",
    "/api/audit/x",
    "/engines/nope",
    "/nope",
    "/api/jobs/\u00e9",
    "/api//jobs",
)


class TestEngineAuthenticatesFirst:
    @pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
    async def test_odd_paths_without_a_token_are_401(self, tmp_path: Path, method: str) -> None:
        """Unknown paths, malformed ids and wrong methods answer 401 without a token, never 404 or 405."""
        client = TestClient(TestServer(unstarted_app("engine", tmp_path)))
        await client.start_server()
        try:
            for path in ENGINE_ODD_PATHS:
                resp = await client.request(method, path)
                assert resp.status == 401, (method, path, resp.status)
                assert (await resp.json())["code"] == "unauthorized"
        finally:
            await client.close()


#: X-Request-Id values a client may not choose, as raw header bytes: each gets a new id.
BAD_REQUEST_IDS = (
    b"",
    b"A" * 65,
    b"a\x01b",
    b"a\tb",
    b"a b",
    "caf\u00e9".encode(),
    "a\u202eb".encode(),
    "\u0661\u0662".encode(),
    "\uff21".encode(),
    b"id;x=1",
    b"a\x7fb",
    b"../x",
    b"a\xffb",
)


class TestRequestIds:
    @pytest.mark.parametrize("process", ["engine", "gateway"])
    async def test_client_request_ids(self, tmp_path: Path, process: str) -> None:
        """A short id of ASCII letters, digits and dashes is kept; anything else is replaced by a fresh one."""
        server = TestServer(unstarted_app(process, tmp_path))
        await server.start_server()
        try:
            assert server.port is not None
            for good in (b"abc-123", b"A" * 64):
                _, headers, _ = await _raw(server.port, "GET /healthz HTTP/1.1", b"X-Request-Id: " + good + b"\r\n")
                assert headers["x-request-id"] == good.decode()
            seen: list[str] = []
            for bad in BAD_REQUEST_IDS:
                status, headers, _ = await _raw(server.port, "GET /healthz HTTP/1.1", b"X-Request-Id: " + bad + b"\r\n")
                got = headers.get("x-request-id", "")
                if status == 400 and bad in (b"a\x01b", b"a\x7fb"):
                    # aiohttp's HTTP parser refuses control characters in a header before any handler runs.
                    assert got == "", (bad, got)
                    continue
                assert status == 200, (bad, status)
                assert got.isascii() and got.isalnum() and 1 <= len(got) <= 64, (bad, got)
                assert got.encode() != bad.strip()
                seen.append(got)
            assert len(set(seen)) == len(seen) >= len(BAD_REQUEST_IDS) - 2  # each a new one
            # Header injection: a second line is a separate header, never part of the id or the response.
            _, headers, _ = await _raw(server.port, "GET /healthz HTTP/1.1", b"X-Request-Id: a\r\nX-Injected: 1\r\n")
            assert headers["x-request-id"] == "a" and "x-injected" not in headers
        finally:
            await server.close()
