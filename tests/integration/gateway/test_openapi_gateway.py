"""The gateway serves its OpenAPI document to signed-in users only, and it lists exactly its routes."""

from __future__ import annotations

from shared.openapi import router_operations
from tests.integration.gateway.harness import (
    ADMIN,
    GatewayServer,
)


class TestServedDocument:
    async def test_anonymous_gets_401(self, gateway_server: GatewayServer) -> None:
        """Without a session, GET /openapi.json is a JSON 401 (deny by default)."""
        resp = await (await gateway_server.client()).get("/openapi.json")
        assert resp.status == 401
        assert (await resp.json())["code"] == "unauthorized"

    async def test_signed_in_users_get_the_routed_operations(self, gateway_server: GatewayServer) -> None:
        """Any signed-in user (an admin too) gets the 3.1 document, listing exactly the router's operations."""
        for name in ("alice", ADMIN):
            user = await gateway_server.login(name)
            resp = await user.client.get("/openapi.json")
            assert resp.status == 200, name
            assert resp.headers["Cache-Control"] == "no-store"
            doc = await resp.json()
            assert doc["openapi"].startswith("3.1")
            served = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
            assert served == router_operations(gateway_server.app)
