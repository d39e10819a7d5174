"""The engine's request rules: deep JSON and numbers from clients (issue 11)."""

from __future__ import annotations

import pytest

from shared.contract import MAX_JSON_DEPTH
from tests.integration.engine.harness import EngineServer, auth

JSON = {"Content-Type": "application/json"}


def _nested(depth: int) -> str:
    """An object ``depth`` levels deep (``{}`` is one)."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


class TestDeepJson:
    @pytest.mark.parametrize("depth", [900, 100_000 // 6, MAX_JSON_DEPTH + 1])
    async def test_deep_create_is_400_invalid_json(self, engine_server: EngineServer, depth: int) -> None:
        """A create body nested past the limit (up to as deep as fits the body cap) is 400 invalid_json."""
        body = '{"type": "test.count", "params": ' + _nested(depth) + "}"
        resp = await engine_server.client.post("/api/jobs", data=body[: 64 * 1024], headers={**auth(), **JSON})
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["code"] == "invalid_json"

    async def test_deep_arrays_inside_strings_do_not_count(self, engine_server: EngineServer) -> None:
        """Brackets inside a JSON string are text: such a body reaches the usual field checks."""
        body = '{"type": "test.count", "name": "' + "[" * 900 + '"}'
        resp = await engine_server.client.post("/api/jobs", data=body, headers={**auth(), **JSON})
        assert resp.status == 400
        assert (await resp.json())["code"] == "invalid_field"  # the name is too long, not bad JSON

    async def test_body_at_the_limit_is_decoded(self, engine_server: EngineServer) -> None:
        """A body exactly at the limit passes the depth check and meets the usual param checks."""
        body = '{"type": "test.count", "params": {"counter": ' + _nested(MAX_JSON_DEPTH - 2) + "}}"
        resp = await engine_server.client.post("/api/jobs", data=body, headers={**auth(), **JSON})
        assert resp.status in (400, 422)
        assert (await resp.json())["code"] != "invalid_json"

    @pytest.mark.parametrize(
        "path", ["/engines/jobs/run", "/api/jobs/{id}/run", "/api/jobs/{id}/cancel", "/api/jobs/{id}/plan"]
    )
    async def test_every_body_reader_refuses_deep_json(self, engine_server: EngineServer, path: str) -> None:
        """The legacy create, run, cancel and plan refuse a 5,000-deep object as 400 invalid_json."""
        created = await engine_server.client.post("/api/jobs", json={"type": "test.count"}, headers=auth())
        job_id = (await created.json())["id"]
        resp = await engine_server.client.post(path.format(id=job_id), data=_nested(5000), headers={**auth(), **JSON})
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["code"] == "invalid_json"


NOT_NUMBERS = ("\u0665", "1_0", "+5", " 5", "5 ", "\uff15", "-1", "5.0", "0x5", "", "1" * 30)


class TestNumbers:
    @pytest.mark.parametrize("value", NOT_NUMBERS)
    @pytest.mark.parametrize("path", ["/api/jobs", "/api/audit", "/api/engines/logs", "/api/jobs/results"])
    async def test_limit_takes_ascii_digits_only(self, engine_server: EngineServer, path: str, value: str) -> None:
        """``limit`` is 400 invalid_field unless it is plain ASCII digits."""
        resp = await engine_server.client.get(path, params={"limit": value}, headers=auth())
        assert resp.status == 400, (path, value, await resp.text())
        assert (await resp.json())["code"] == "invalid_field"

    @pytest.mark.parametrize("name", ["after", "limit"])
    async def test_log_cursor_takes_ascii_digits_only(self, engine_server: EngineServer, name: str) -> None:
        """A job log's ``after`` and ``limit`` are 400 for non-ASCII digits."""
        created = await engine_server.client.post("/api/jobs", json={"type": "test.count"}, headers=auth())
        job_id = (await created.json())["id"]
        resp = await engine_server.client.get(f"/api/jobs/{job_id}/logs", params={name: "\u0661"}, headers=auth())
        assert resp.status == 400
        assert (await resp.json())["code"] == "invalid_field"

    async def test_plain_digits_still_work(self, engine_server: EngineServer) -> None:
        """``limit=5`` (and a leading zero) is a number as before."""
        for value in ("5", "05"):
            resp = await engine_server.client.get("/api/jobs", params={"limit": value}, headers=auth())
            assert resp.status == 200, value
