"""Issue 16 through the gateway, in front of a real engine: the name search (``q=``), the job's ``outcome``,
Run again (``/copy``) and the raw log download (``/logs.txt``)."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from shared.contract import MAX_FILTER_CHARS
from tests.integration.gateway.harness import (
    ADMIN,
    ENGINE_TOKEN,
    SUPER,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
    wait_for_status,
)
from tests.integration.gateway.test_gateway_approvals import answer

JOBS = "/api/admin/engine/jobs"


async def named(upstream_engine: UpstreamEngine, name: str, job_type: str = "demo.echo") -> str:
    """Create a job with ``name`` directly at the engine; return its id."""
    headers = {"Authorization": f"Bearer {ENGINE_TOKEN}", "X-Engine-Actor": "setup"}
    resp = await upstream_engine.client.post("/api/jobs", json={"type": job_type, "name": name}, headers=headers)
    assert resp.status == 201, await resp.text()
    job_id: str = (await resp.json())["id"]
    return job_id


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


async def finished_job(upstream_engine: UpstreamEngine, name: str = "nightly") -> str:
    """A demo.echo job named ``name``, run to DONE at the engine; its id."""
    job_id = await named(upstream_engine, name)
    await upstream_engine.run(job_id)
    for _ in range(500):
        if await upstream_engine.status(job_id) == "DONE":
            return job_id
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


class TestRunAgain:
    async def test_a_super_admin_copies_a_finished_job_under_safe_mode_and_it_is_audited(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """201 with a READY copy (copyOf, creator the user) even under SAFE_MODE; audited as job_create with copyOf."""
        gateway = await make_gateway_server(upstream_engine.url, safe_mode=True)
        old_id = await finished_job(upstream_engine)
        user = await gateway.login(SUPER)
        status, new = await answer(await user.post(f"{JOBS}/{old_id}/copy"))
        assert status == 201
        assert (new["status"], new["name"], new["copyOf"], new["createdBy"]) == ("READY", "nightly", old_id, SUPER)
        assert (await user.job(old_id))["copies"] == [new["id"]]
        records = [(r.action, r.job_id, r.data.get("outcome"), r.data.get("copyOf")) for r in gateway.audit_records()]
        assert records[-2:] == [
            ("job_create_requested", None, "requested", old_id),
            ("job_create", new["id"], "accepted", old_id),
        ]
        assert await upstream_engine.status(new["id"]) == "READY"

    async def test_guards_and_engine_refusals(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """No CSRF token: 403 csrf; an admin: 401; a READY job: the engine's 409 not_finished; nothing is created."""
        ready_id = await named(upstream_engine, "not yet")
        done_id = await finished_job(upstream_engine)
        user = await gateway_server.login(SUPER)
        resp = await user.client.post(f"{JOBS}/{done_id}/copy", json={})
        assert (resp.status, (await resp.json())["code"]) == (403, "csrf")
        admin = await gateway_server.login(ADMIN)
        assert (await admin.post(f"{JOBS}/{done_id}/copy")).status == 401
        status, body = await answer(await user.post(f"{JOBS}/{ready_id}/copy"))
        assert (status, body["code"]) == (409, "not_finished")
        status, body = await answer(await user.post(f"{JOBS}/{done_id}/copy", {"name": "x"}))
        assert (status, body["code"]) == (400, "unknown_field")
        assert (await upstream_engine.job(done_id))["copies"] == []
        refused = [r for r in gateway_server.audit_records() if r.action == "job_create"]
        assert [r.data["outcome"] for r in refused] == ["refused", "refused"]


class TestLogDownload:
    async def test_the_raw_log_is_relayed_as_an_attachment(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """200 text/plain, job-<id>.log, the engine's bytes; the hardening headers; an admin gets 401."""
        job_id = await upstream_engine.create("demo.echo", {"message": "héllo ☕"})
        await upstream_engine.run(job_id)
        user = await gateway_server.login(SUPER)
        await wait_for_status(user, job_id, {"DONE"})
        direct = await upstream_engine.client.get(
            f"/api/jobs/{job_id}/logs.txt", headers={"Authorization": f"Bearer {ENGINE_TOKEN}"}
        )
        expected = await direct.read()
        assert "héllo ☕" in expected.decode()
        resp = await user.client.get(f"{JOBS}/{job_id}/logs.txt")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert resp.headers["Content-Disposition"] == f'attachment; filename="job-{job_id}.log"'
        assert resp.headers["Cache-Control"] == "no-store" and resp.headers["X-Content-Type-Options"] == "nosniff"
        assert await resp.read() == expected
        admin = await gateway_server.login(ADMIN)
        assert (await admin.client.get(f"{JOBS}/{job_id}/logs.txt")).status == 401

    async def test_unknown_job_is_json_404_and_an_engine_down_is_502(
        self, gateway_server: GatewayServer, make_gateway_server: MakeGatewayServer, closed_port: int
    ) -> None:
        """The engine's 404 not_found passes through as JSON; no engine is 502 engine_unavailable."""
        user = await gateway_server.login(SUPER)
        resp = await user.client.get(f"{JOBS}/00000000-0000-4000-8000-000000000000/logs.txt")
        assert (resp.status, (await resp.json())["code"]) == (404, "not_found")
        down = await make_gateway_server(f"http://127.0.0.1:{closed_port}/")
        user = await down.login(SUPER)
        resp = await user.client.get(f"{JOBS}/00000000-0000-4000-8000-000000000000/logs.txt")
        assert (resp.status, (await resp.json())["code"]) == (502, "engine_unavailable")
