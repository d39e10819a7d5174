"""The panel's static files: the shipped ones are served, anything else is the gateway's JSON 404."""

from __future__ import annotations

import pytest

from tests.integration.gateway.harness import (
    GatewayServer,
)


class TestStaticFiles:
    @pytest.mark.parametrize(
        ("path", "content_type"),
        [
            ("/static/panel.css", "text/css"),
            ("/static/js/main.js", "javascript"),
            ("/static/icons/check.svg", "image/svg+xml"),
        ],
    )
    async def test_shipped_files_are_served(self, gateway_server: GatewayServer, path: str, content_type: str) -> None:
        """Files of admin_gateway/static are served with their type, to anyone, revalidated."""
        resp = await (await gateway_server.client()).get(path)
        assert resp.status == 200
        assert content_type in resp.headers["Content-Type"]
        assert resp.headers["Cache-Control"] == "no-cache"
        assert await resp.read()

    @pytest.mark.parametrize(
        "path",
        [
            "/static/0",
            "/static/nope.css",
            "/static/js",
            "/static/js/",
            "/static/..%2fapp.py",
            "/static/..%2f..%2fpyproject.toml",
        ],
    )
    async def test_anything_else_is_a_json_404(self, gateway_server: GatewayServer, path: str) -> None:
        """A missing file, a directory or a traversal attempt is a JSON 404 (not an empty untyped body)."""
        resp = await (await gateway_server.client()).get(path)
        assert resp.status == 404, path
        assert resp.content_type == "application/json"
        assert (await resp.json())["code"] == "not_found"
