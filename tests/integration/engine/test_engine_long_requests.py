"""Long request lines and headers reach the engine's API (JSON errors), not the HTTP parser's plain-text 400."""

from __future__ import annotations

from tests.integration.engine.harness import EngineServer, auth


class TestLongRequests:
    async def test_long_query_gets_a_json_error(self, engine_server: EngineServer) -> None:
        """A 20 KB type filter is the API's JSON 400 invalid_field."""
        resp = await engine_server.client.get("/api/jobs", params={"type": "t" * 20_000}, headers=auth())
        assert resp.status == 400
        assert (await resp.json())["code"] == "invalid_field"

    async def test_long_actor_header_gets_a_json_error(self, engine_server: EngineServer) -> None:
        """A 20 KB X-Engine-Actor is the API's JSON 400, not a parser refusal."""
        resp = await engine_server.client.get("/api/jobs", headers=auth(actor="a" * 20_000))
        assert resp.status == 400
        assert (await resp.json())["code"] == "invalid_field"
