"""Every route of both processes sits behind the one request wrapper (shared.web.ApiRoutes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from admin_gateway.app import create_app as create_gateway
from admin_gateway.settings import Settings as GatewaySettings
from engine_hub.app import create_app as create_engine
from engine_hub.routes import PUBLIC_ROUTES
from engine_hub.settings import Settings as EngineSettings
from shared.web import UNMATCHED_ROUTE
from tests.conftest import ADMIN_TOKEN

JOB = "00000000-0000-4000-8000-000000000000"


def _engine_app(tmp_path: Path) -> web.Application:
    return create_engine(EngineSettings(token=ADMIN_TOKEN, ephemeral=True, data_dir=tmp_path), environ={})


async def _sneaky(request: web.Request) -> web.Response:
    return web.json_response({"secret": True})


class TestApiRoutes:
    @pytest.mark.parametrize("process", ["engine", "gateway"])
    async def test_route_added_around_the_wrapper_refuses_to_start(self, tmp_path: Path, process: str) -> None:
        """A route added straight to app.router (no auth, sessions, error mapping or log) stops the start."""
        app = _engine_app(tmp_path) if process == "engine" else create_gateway(GatewaySettings(
            engine_url="http://127.0.0.1:9", engine_token=ADMIN_TOKEN, data_dir=tmp_path))
        app.router.add_post("/api/sneaky", _sneaky)
        runner = web.AppRunner(app)
        with pytest.raises(RuntimeError, match="POST /api/sneaky"):
            await runner.setup()
        await runner.cleanup()

    async def test_every_engine_route_needs_the_token(self, tmp_path: Path) -> None:
        """Each route the started engine serves, found by walking its router, answers 401 without a token."""
        client = TestClient(TestServer(_engine_app(tmp_path)))
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
