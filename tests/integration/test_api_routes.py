"""Every route of both processes sits behind the one request wrapper (shared.web.ApiRoutes)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from engine_hub.routes import PUBLIC_ROUTES
from shared.web import UNMATCHED_ROUTE
from tests.conftest import unstarted_app

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

    async def test_every_engine_route_needs_the_token(self, tmp_path: Path) -> None:
        """Each route the started engine serves, found by walking its router, answers 401 without a token."""
        client = TestClient(TestServer(unstarted_app("engine", tmp_path)))
        await client.start_server()
        try:
            checked = 0
            for route in client.app.router.routes():
                resource = route.resource
                assert resource is not None
                if resource.name in PUBLIC_ROUTES or route.method == "HEAD":
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


async def _raw(port: int, request_line: str) -> tuple[int, dict[str, str], bytes]:
    """Send one raw request line (no path checks on our side) and return status, headers and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{request_line}\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
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
