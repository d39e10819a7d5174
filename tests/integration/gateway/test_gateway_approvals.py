"""The gateway's run approval routes (issue 15) in front of a real engine: the signed-in user is the actor,
the engine's two-person rule answers pass through, and role, CSRF and SAFE_MODE guard them like a run."""

from __future__ import annotations

from typing import Any

from tests.integration.gateway.harness import (
    ADMIN,
    ENGINE_TOKEN,
    SUPER,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
)

JOBS = "/api/admin/engine/jobs"


async def requested_by(upstream_engine: UpstreamEngine, actor: str) -> str:
    """A demo.guarded job whose run ``actor`` requested at the engine directly; return its id."""
    job_id = await upstream_engine.create("demo.guarded")
    headers = {"Authorization": f"Bearer {ENGINE_TOKEN}", "X-Engine-Actor": actor}
    resp = await upstream_engine.client.post(f"/api/jobs/{job_id}/run", json={"reason": "ticket"}, headers=headers)
    assert resp.status == 202, await resp.text()
    return job_id


async def answer(resp: Any) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a gateway answer."""
    body: dict[str, Any] = await resp.json()
    return resp.status, body


class TestApprove:
    async def test_a_super_admin_approves_another_persons_request_and_the_job_runs(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """carol requested at the engine; alice approves through the gateway, as herself, and the job runs."""
        job_id = await requested_by(upstream_engine, "carol")
        user = await gateway_server.login(SUPER)
        status, body = await answer(await user.post(f"{JOBS}/{job_id}/approve", {"reason": "plan checked"}))
        assert status == 202 and body["job"]["status"] in ("RUNNING", "DONE")
        approval = body["job"]["runRequest"]["approvals"][0]
        assert (approval["by"], approval["reason"]) == (SUPER, "plan checked")
        records = [(r.action, r.data["outcome"]) for r in gateway_server.audit_records() if r.job_id == job_id]
        assert records == [("job_approve_requested", "requested"), ("job_approve", "accepted")]

    async def test_the_waiting_list_is_proxied(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """GET /api/admin/engine/run-requests is the engine's list of open requests; an admin gets 401."""
        job_id = await requested_by(upstream_engine, "carol")
        user = await gateway_server.login(SUPER)
        resp = await user.client.get("/api/admin/engine/run-requests")
        assert resp.status == 200
        assert [(job["id"], job["runRequest"]["by"]) for job in await resp.json()] == [(job_id, "carol")]
        admin = await gateway_server.login(ADMIN)
        assert (await admin.client.get("/api/admin/engine/run-requests")).status == 401

    async def test_self_approval_is_the_engines_403_passed_through(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """alice requests through the gateway (her plan's hash forwarded) and approves it herself: 403 self_approval."""
        user = await gateway_server.login(SUPER)
        job_id = await upstream_engine.create("demo.guarded")
        plan = "c" * 64
        status, body = await answer(await user.post(f"{JOBS}/{job_id}/run", {"reason": "ticket", "planSha256": plan}))
        assert status == 202 and body["job"]["runRequest"]["by"] == SUPER
        assert body["job"]["runRequest"]["planSha256"] == plan
        status, body = await answer(await user.post(f"{JOBS}/{job_id}/approve"))
        assert (status, body["code"]) == (403, "self_approval")
        assert await upstream_engine.status(job_id) == "READY"
        refused = [r for r in gateway_server.audit_records() if r.action == "job_approve"][-1]
        assert (refused.data["outcome"], refused.data["code"]) == ("refused", "self_approval")

    async def test_an_admin_is_refused_and_csrf_is_required(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """bob (admin) gets 401 forbidden, a super_admin without the CSRF token 403 csrf: the engine is not asked."""
        job_id = await requested_by(upstream_engine, "carol")
        before = upstream_engine.count("POST", r"/(approve|reject|withdraw)$")
        admin = await gateway_server.login(ADMIN)
        for verb in ("approve", "reject", "withdraw"):
            status, body = await answer(await admin.post(f"{JOBS}/{job_id}/{verb}", {"reason": "x"}))
            assert (status, body["code"]) == (401, "forbidden"), verb
        user = await gateway_server.login(SUPER)
        for verb in ("approve", "reject", "withdraw"):
            resp = await user.client.post(f"{JOBS}/{job_id}/{verb}", json={"reason": "x"})
            assert (await answer(resp))[1]["code"] == "csrf", verb
            assert resp.status == 403
        assert upstream_engine.count("POST", r"/(approve|reject|withdraw)$") == before
        assert (await upstream_engine.job(job_id))["runRequest"]["state"] == "open"


class TestRejectAndWithdraw:
    async def test_reject_needs_a_reason_and_keeps_the_job_ready(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """A rejection without a reason is 400 (engine not asked); with one the request is rejected by alice."""
        job_id = await requested_by(upstream_engine, "carol")
        user = await gateway_server.login(SUPER)
        status, body = await answer(await user.post(f"{JOBS}/{job_id}/reject"))
        assert (status, body["code"]) == (400, "invalid_field")
        status, body = await answer(await user.post(f"{JOBS}/{job_id}/reject", {"reason": "not today"}))
        assert status == 202 and body["job"]["status"] == "READY"
        assert (body["job"]["runRequest"]["state"], body["job"]["runRequest"]["closedBy"]) == ("rejected", SUPER)

    async def test_only_the_requester_withdraws(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """alice cannot withdraw carol's request (403 not_requester) but can withdraw her own."""
        user = await gateway_server.login(SUPER)
        theirs = await requested_by(upstream_engine, "carol")
        status, body = await answer(await user.post(f"{JOBS}/{theirs}/withdraw"))
        assert (status, body["code"]) == (403, "not_requester")
        mine = await requested_by(upstream_engine, SUPER)
        status, body = await answer(await user.post(f"{JOBS}/{mine}/withdraw", {"reason": "wrong job"}))
        assert status == 202 and body["job"]["runRequest"]["state"] == "withdrawn"


class TestSafeMode:
    async def test_safe_mode_refuses_approving_but_not_rejecting_or_withdrawing(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Under SAFE_MODE an approval (it may start the job) is 403 safe_mode; reject and withdraw still work."""
        gateway = await make_gateway_server(upstream_engine.url, safe_mode=True)
        user = await gateway.login(SUPER)
        first = await requested_by(upstream_engine, "carol")
        status, body = await answer(await user.post(f"{JOBS}/{first}/approve"))
        assert (status, body["code"]) == (403, "safe_mode")
        assert upstream_engine.count("POST", r"/approve$") == 0
        status, _ = await answer(await user.post(f"{JOBS}/{first}/reject", {"reason": "frozen"}))
        assert status == 202
        mine = await requested_by(upstream_engine, SUPER)
        status, _ = await answer(await user.post(f"{JOBS}/{mine}/withdraw"))
        assert status == 202
        assert next(r.action for r in gateway.audit_records() if r.job_id == first) == "safe_mode_refused"
