"""Plans through the gateway: proxied for a super_admin, guarded and audited like a run, refused under SAFE_MODE."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path
from typing import Any

from engine_hub.jobs.catalog import Catalog, JobType
from engine_hub.jobs.demo_types import demo_types
from engine_hub.jobs.service import MAX_CONCURRENT_PLANS, PLAN_RETRY_AFTER
from tests.integration.gateway.harness import (
    ADMIN,
    ENGINE_TOKEN,
    SUPER,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
    start_upstream_engine,
)

UNKNOWN_JOB = "00000000-0000-4000-8000-000000000000"


def plan_path(job_id: str) -> str:
    """The gateway's plan route of ``job_id``."""
    return f"/api/admin/engine/jobs/{job_id}/plan"


def new_actions(gw: GatewayServer, before: int) -> list[tuple[str, str]]:
    """(action, outcome) of the gateway's audit records after the first ``before``."""
    return [(r.action, r.data["outcome"]) for r in gw.audit_records()[before:]]


async def engine_records(upstream: UpstreamEngine, job_id: str) -> list[dict[str, Any]]:
    """The engine's own journal records of ``job_id``, oldest first."""
    resp = await upstream.client.get(
        "/api/audit", params={"jobId": job_id}, headers={"Authorization": f"Bearer {ENGINE_TOKEN}"}
    )
    assert resp.status == 200, await resp.text()
    records: list[dict[str, Any]] = await resp.json()
    return records[::-1]


class TestPlanProxied:
    async def test_super_admin_gets_the_plan_and_both_trails_record_it(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """A super_admin's plan reaches the engine as them; the gateway records intent and outcome with sha256."""
        user = await gateway_server.login()
        job_id = await upstream_engine.create("demo.sleep", {"seconds": 5})
        before = len(gateway_server.audit_records())
        resp = await user.post(plan_path(job_id))
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["output"] == "would sleep 5 s\n"
        assert body["sha256"] == hashlib.sha256(b"would sleep 5 s\n").hexdigest()
        assert await upstream_engine.status(job_id) == "READY"
        assert new_actions(gateway_server, before) == [("job_plan_requested", "requested"), ("job_plan", "accepted")]
        intent, outcome = gateway_server.audit_records()[before:]
        assert outcome.job_id == intent.job_id == job_id and outcome.actor == SUPER
        assert outcome.data["intentSeq"] == intent.seq and outcome.data["status"] == 200
        assert (outcome.data["sha256"], outcome.data["exitCode"]) == (body["sha256"], 0)
        assert (outcome.data["truncated"], outcome.data["timedOut"]) == (False, False)
        planned = [r for r in await engine_records(upstream_engine, job_id) if r["action"] == "job_planned"]
        assert [(r["actor"], r["data"]["sha256"]) for r in planned] == [(SUPER, body["sha256"])]

    async def test_engine_refusal_passes_through_and_is_recorded(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """A type without a plan: the engine's 409 no_plan reaches the client and the job_plan record."""
        user = await gateway_server.login()
        job_id = await upstream_engine.create("demo.fail")
        before = len(gateway_server.audit_records())
        resp = await user.post(plan_path(job_id))
        assert resp.status == 409
        assert (await resp.json())["code"] == "no_plan"
        outcome = gateway_server.audit_records()[-1]
        assert (outcome.action, outcome.data["outcome"], outcome.data["code"]) == ("job_plan", "refused", "no_plan")
        assert new_actions(gateway_server, before)[0] == ("job_plan_requested", "requested")


class TestPlanGuards:
    async def test_read_only_role_is_refused_and_the_engine_not_called(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """An admin (not super_admin) gets 401 forbidden; the engine never hears of the plan."""
        job_id = await upstream_engine.create("demo.sleep")
        user = await gateway_server.login(ADMIN)
        resp = await user.post(plan_path(job_id))
        assert resp.status == 401
        assert (await resp.json())["code"] == "forbidden"
        assert upstream_engine.count("POST", "/plan$") == 0

    async def test_csrf_is_required(self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer) -> None:
        """Without the CSRF token a super_admin's plan is 403 csrf, recorded, and the engine is not called."""
        job_id = await upstream_engine.create("demo.sleep")
        user = await gateway_server.login()
        before = len(gateway_server.audit_records())
        resp = await user.client.post(plan_path(job_id), json={})
        assert resp.status == 403
        assert (await resp.json())["code"] == "csrf"
        assert new_actions(gateway_server, before) == [("csrf_refused", "refused")]
        assert upstream_engine.count("POST", "/plan$") == 0

    async def test_safe_mode_refuses_a_plan_like_a_run_and_records_it(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Under SAFE_MODE a plan is 403 safe_mode (as a run is), one safe_mode_refused record, no engine call."""
        gw = await make_gateway_server(upstream_engine.url, safe_mode=True)
        user = await gw.login()
        job_id = await upstream_engine.create("demo.sleep")
        before = len(gw.audit_records())
        plan = await user.post(plan_path(job_id))
        run = await user.post(f"/api/admin/engine/jobs/{job_id}/run")
        assert plan.status == run.status == 403
        assert (await plan.json())["code"] == (await run.json())["code"] == "safe_mode"
        refusals = gw.audit_records()[before:]
        assert [(r.action, r.job_id, r.data["operation"]) for r in refusals] == [
            ("safe_mode_refused", job_id, "plan"),
            ("safe_mode_refused", job_id, "run"),
        ]
        assert refusals[0].data["code"] == "safe_mode" and refusals[0].data["outcome"] == "refused"
        assert upstream_engine.count("POST", "/plan$") == 0
        assert await upstream_engine.status(job_id) == "READY"

    async def test_safe_mode_refuses_before_looking_at_the_job(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Even for a job that does not exist, SAFE_MODE answers first: the engine is not asked."""
        gw = await make_gateway_server(upstream_engine.url, safe_mode=True)
        user = await gw.login()
        before = len(upstream_engine.calls)
        resp = await user.post(plan_path(UNKNOWN_JOB))
        assert resp.status == 403
        assert upstream_engine.calls[before:] == []


def slow_plan_catalog() -> Catalog:
    """The demo types and ``plan.slow``, whose plan takes a second and a half."""
    slow = JobType(
        name="plan.slow",
        command=(sys.executable, "-c", "pass"),
        timeout=30.0,
        plan=(sys.executable, "-c", "import time; time.sleep(1.5); print('slow plan')"),
    )
    return Catalog(types={t.name: t for t in (*demo_types(), slow)})


class TestSlowPlans:
    async def test_gateway_waits_for_a_plan_longer_than_its_total_timeout(
        self, aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, make_gateway_server: MakeGatewayServer
    ) -> None:
        """A plan taking longer than the gateway's total timeout still answers 200 (the plan's own bound applies)."""
        upstream = await start_upstream_engine(aiohttp_server, aiohttp_client, tmp_path, catalog=slow_plan_catalog())
        gw = await make_gateway_server(upstream.url, total_timeout=0.5)
        user = await gw.login()
        job_id = await upstream.create("plan.slow")
        resp = await user.post(plan_path(job_id))
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["output"] == "slow plan\n"

    async def test_engine_busy_is_429_with_retry_after(
        self, aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, make_gateway_server: MakeGatewayServer
    ) -> None:
        """When the engine runs as many plans as it allows, the gateway answers 429 throttled with Retry-After."""
        upstream = await start_upstream_engine(aiohttp_server, aiohttp_client, tmp_path, catalog=slow_plan_catalog())
        gw = await make_gateway_server(upstream.url)
        user = await gw.login()
        job_id = await upstream.create("plan.slow")
        answers = await asyncio.gather(*(user.post(plan_path(job_id)) for _ in range(MAX_CONCURRENT_PLANS + 1)))
        assert sorted(resp.status for resp in answers) == [200] * MAX_CONCURRENT_PLANS + [429]
        (busy,) = [resp for resp in answers if resp.status == 429]
        assert (await busy.json())["code"] == "throttled"
        assert busy.headers["Retry-After"] == str(PLAN_RETRY_AFTER)
