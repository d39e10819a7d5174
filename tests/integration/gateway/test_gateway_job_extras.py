"""Issue 16 through the gateway, in front of a real engine: the name search (``q=``), the job's ``outcome``,
Run again (``/copy``) and the raw log download (``/logs.txt``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from shared.contract import MAX_FILTER_CHARS
from tests.integration.gateway.harness import ENGINE_TOKEN, SUPER, GatewayServer, UpstreamEngine, wait_for_status

JOBS = "/api/admin/engine/jobs"


async def named(upstream_engine: UpstreamEngine, name: str, job_type: str = "demo.echo") -> str:
    """Create a job with ``name`` directly at the engine; return its id."""
    headers = {"Authorization": f"Bearer {ENGINE_TOKEN}", "X-Engine-Actor": "setup"}
    resp = await upstream_engine.client.post("/api/jobs", json={"type": job_type, "name": name}, headers=headers)
    assert resp.status == 201, await resp.text()
    job_id: str = (await resp.json())["id"]
    return job_id


async def answer(resp: Any) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a gateway answer."""
    body: dict[str, Any] = await resp.json()
    return resp.status, body


class TestSearch:
    async def test_q_reaches_the_engine_and_pages_with_next(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """q=reindex (plain or percent-encoded, any case) lists only the matching jobs; `next` pages within them."""
        for name in ("Nightly REINDEX", "cache warm-up", "reindex users", "Re-index? no", "reindex & vacuum"):
            await named(upstream_engine, name)
        user = await gateway_server.login(SUPER)
        status, body = await answer(await user.client.get(f"{JOBS}?q=ReIndex"))
        assert status == 200 and body["engine"] == "up"
        assert [j["name"] for j in body["jobs"]] == ["reindex & vacuum", "reindex users", "Nightly REINDEX"]
        status, body = await answer(await user.client.get(f"{JOBS}?q={quote('x & v')}&limit=1"))
        assert [j["name"] for j in body["jobs"]] == ["reindex & vacuum"] and body["next"] is None
        status, body = await answer(await user.client.get(f"{JOBS}?q=reindex&limit=2&status=ready"))
        assert [j["name"] for j in body["jobs"]] == ["reindex & vacuum", "reindex users"]
        assert body["next"] is not None
        status, body = await answer(await user.client.get(f"{JOBS}?q=reindex&limit=2&before={body['next']}"))
        assert [j["name"] for j in body["jobs"]] == ["Nightly REINDEX"] and body["next"] is None

    async def test_a_bad_q_is_the_engines_400(self, gateway_server: GatewayServer) -> None:
        """An empty q is the engine's 400 invalid_field; one over the limit the gateway's own 400."""
        user = await gateway_server.login(SUPER)
        status, body = await answer(await user.client.get(f"{JOBS}?q="))
        assert (status, body["code"]) == (400, "invalid_field")
        status, body = await answer(await user.client.get(f"{JOBS}?q={'x' * (MAX_FILTER_CHARS + 1)}"))
        assert (status, body["code"]) == (400, "invalid_field")

    async def test_jobs_carry_outcome(self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer) -> None:
        """The engine's outcome, copyOf and copies reach the panel's list and job reads."""
        job_id = await named(upstream_engine, "fails", "demo.fail")
        await upstream_engine.run(job_id)
        user = await gateway_server.login(SUPER)
        job = await wait_for_status(user, job_id, {"FAILED"})
        assert (job["status"], job["outcome"], job["copyOf"], job["copies"]) == ("FAILED", "failed", None, [])
        _, body = await answer(await user.client.get(JOBS))
        assert body["jobs"][0]["outcome"] == "failed"
