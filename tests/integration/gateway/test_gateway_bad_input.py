"""Bad input the gateway must answer with its JSON 4xx, never a 500 or a plain-text page (found by Schemathesis)."""

from __future__ import annotations

import pytest

from tests.integration.gateway.harness import (
    GatewayServer,
    UpstreamEngine,
)

NO_BOUNDARY = {"Content-Type": "multipart/form-data"}


class TestMalformedForms:
    @pytest.mark.parametrize("path", ["/api/admin/engine/jobs", "/api/admin/engine/jobs/x/cancel"])
    async def test_api_mutation_with_broken_multipart_is_400(
        self, gateway_server: GatewayServer, upstream_engine: UpstreamEngine, path: str
    ) -> None:
        """A multipart body without a boundary on an API mutation is 400 bad_request and reaches no engine."""
        user = await gateway_server.login()
        before = len(upstream_engine.calls)
        resp = await user.client.post(path, data=b"type=demo.echo", headers=user.headers(**NO_BOUNDARY))
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["code"] == "bad_request"
        assert len(upstream_engine.calls) == before

    async def test_login_with_broken_multipart_is_400(self, gateway_server: GatewayServer) -> None:
        """POST /login with an unparseable multipart body (and so no readable CSRF field) is 400, not 500."""
        client = await gateway_server.client()
        await client.get("/login")
        resp = await client.post("/login", data=b"username=a", headers=NO_BOUNDARY)
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["code"] == "bad_request"

    async def test_login_with_undecodable_form_is_400(self, gateway_server: GatewayServer) -> None:
        """A urlencoded body in an unknown charset is 400, not 500."""
        client = await gateway_server.client()
        await client.get("/login")
        resp = await client.post(
            "/login",
            data=b"username=a&password=b",
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=no-such"},
        )
        assert resp.status == 400, await resp.text()


class TestLongRequests:
    async def test_long_filters_reach_the_api(self, gateway_server: GatewayServer) -> None:
        """Four 200-character filters (percent-encoded past 8 KiB) get the API's JSON answer, not the parser's 400."""
        user = await gateway_server.login()
        value = "\U0001f600" * 200
        resp = await user.client.get(
            "/api/admin/engine/jobs", params={"status": value, "type": value, "before": value, "limit": value}
        )
        assert len(str(resp.url)) > 8190
        assert resp.content_type == "application/json"
        assert resp.status == 400
        assert (await resp.json())["code"] == "invalid_field"
