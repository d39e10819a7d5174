"""``GET /api/jobs/{id}/logs.txt``: the raw log download (issue 16), on both stores."""

from __future__ import annotations

from typing import Any

from tests.integration.engine.conftest import BOTH_STORES
from tests.integration.engine.harness import CLIENT_TOKEN, EngineServer, auth

pytestmark = BOTH_STORES


async def all_lines(engine: EngineServer, job_id: str) -> list[dict[str, Any]]:
    """Every line of the job's log through the JSON route, page by page."""
    lines: list[dict[str, Any]] = []
    after = 0
    while True:
        resp = await engine.client.get(f"/api/jobs/{job_id}/logs?after={after}", headers=auth())
        page = await resp.json()
        if not page["lines"]:
            return lines
        lines += page["lines"]
        after = page["next"]


class TestLogText:
    async def test_a_long_log_downloads_as_text_across_pages(self, engine_server: EngineServer) -> None:
        """7,000 lines (more than one read page): text/plain attachment, the lines joined by newlines."""
        job = await engine_server.create("test.chatty", {"lines": 7_000})
        await engine_server.run(job["id"])
        await engine_server.wait_for(job["id"])
        resp = await engine_server.client.get(f"/api/jobs/{job['id']}/logs.txt", headers=auth())
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert resp.headers["Content-Disposition"] == f'attachment; filename="job-{job["id"]}.log"'
        assert resp.headers["Cache-Control"] == "no-store" and resp.headers["X-Request-Id"]
        text = await resp.text()
        assert text == "\n".join(f"line {i}" for i in range(7_000))
        assert text.split("\n") == [line["text"] for line in await all_lines(engine_server, job["id"])]

    async def test_unicode_and_an_empty_log(self, engine_server: EngineServer) -> None:
        """UTF-8 text comes back as written; a job that printed nothing downloads an empty file."""
        job = await engine_server.create("demo.echo", {"message": "café ☕ ‮rtl"})
        await engine_server.run(job["id"])
        await engine_server.wait_for(job["id"])
        resp = await engine_server.client.get(f"/api/jobs/{job['id']}/logs.txt", headers=auth(CLIENT_TOKEN))
        assert resp.status == 200 and "café ☕ ‮rtl" in (await resp.read()).decode()
        ready = await engine_server.create("test.count")
        resp = await engine_server.client.get(f"/api/jobs/{ready['id']}/logs.txt", headers=auth())
        assert resp.status == 200 and await resp.read() == b""

    async def test_unknown_job_and_query_are_json_errors(self, engine_server: EngineServer) -> None:
        """404 not_found for an unknown job and 400 unknown_field for a query, as JSON like the logs route."""
        resp = await engine_server.client.get("/api/jobs/00000000-0000-4000-8000-000000000000/logs.txt", headers=auth())
        assert (resp.status, (await resp.json())["code"]) == (404, "not_found")
        job = await engine_server.create("test.count")
        resp = await engine_server.client.get(f"/api/jobs/{job['id']}/logs.txt?after=1", headers=auth())
        assert (resp.status, (await resp.json())["code"]) == (400, "unknown_field")
        resp = await engine_server.client.get(f"/api/jobs/{job['id']}/logs.txt")
        assert resp.status == 401
