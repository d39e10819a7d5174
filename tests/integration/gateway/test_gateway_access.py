"""The access matrix: every admin API route (from the route table) × role × method, and the guard order."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from admin_gateway.http.access import API_PREFIX
from admin_gateway.http.routes import ROUTES as TABLE
from shared.routes import Access
from tests.integration.gateway.harness import (
    ADMIN,
    SUPER,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
    wait_for_status,
)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _sweep_template(path: str) -> str:
    # The ids the sweep fills in: cancel needs a RUNNING job, every other job route a READY one.
    return path.replace("{id}", "{running}" if path.endswith("/cancel") else "{ready}")


def _api_matrix() -> dict[str, dict[str, str]]:
    """The admin API rows of the route table as path template -> {method: "user" (SESSION) or "super"}."""
    matrix: dict[str, dict[str, str]] = {}
    for route in TABLE:
        if route.path.startswith(API_PREFIX):
            who = "user" if route.access is Access.SESSION else "super"
            matrix.setdefault(_sweep_template(route.path), {})[route.method] = who
    return matrix


#: path template -> {method: who may use it ("user" = any signed-in user, "super" = super_admin only)},
#: derived from the gateway's route table (admin_gateway.http.routes).
ROUTES: dict[str, dict[str, str]] = _api_matrix()
#: What a super_admin gets from each allowed route (SAFE_MODE off, valid CSRF).
SUPER_STATUS = {
    ("/api/admin/engine/jobs", "POST"): 201,
    ("/api/admin/engine/jobs/{ready}/run", "POST"): 202,
    ("/api/admin/engine/jobs/{running}/cancel", "POST"): 202,
    # Break-glass: nothing to override with SAFE_MODE off, and a job id names no window.
    ("/api/admin/safe-mode/override", "POST"): 409,
    ("/api/admin/safe-mode/override/{ready}/approve", "POST"): 404,
    ("/api/admin/safe-mode/override/{ready}/end", "POST"): 404,
    # The ready job has no run request: the engine says so (409); a rejection needs a reason (400).
    ("/api/admin/engine/jobs/{ready}/approve", "POST"): 409,
    ("/api/admin/engine/jobs/{ready}/reject", "POST"): 400,
    ("/api/admin/engine/jobs/{ready}/withdraw", "POST"): 409,
    # Run again needs a finished job; the sweep's ready job is running by then (the engine's 409 not_finished).
    ("/api/admin/engine/jobs/{ready}/copy", "POST"): 409,
}


async def _prepare(upstream_engine: UpstreamEngine) -> dict[str, str]:
    ready = await upstream_engine.create("demo.echo")
    running = await upstream_engine.create("demo.sleep", {"seconds": 60})
    await upstream_engine.run(running)
    return {"ready": ready, "running": running}


async def _sweep(
    client: TestClient[web.Request, web.Application], csrf: str | None, ids: dict[str, str], role: str
) -> list[str]:
    """Call every route with every method; return a line per unexpected status."""
    problems: list[str] = []
    for template, allowed in ROUTES.items():
        path = template.format(**ids)
        for method in METHODS:
            headers = {"X-CSRF-Token": csrf} if csrf else {}
            body: Any = {"type": "demo.echo"} if path == "/api/admin/engine/jobs" else {}
            resp = await client.request(method, path, json=body if method != "GET" else None, headers=headers)
            who = allowed.get(method)
            # Sign-in and role come first, also for a method the path does not take (no 405 leaks a path).
            needs = "user" if "user" in allowed.values() else "super"
            if role == "anonymous" or (role == "admin" and needs == "super"):
                expected = 401
            elif who is None:
                expected = 405
            else:
                expected = SUPER_STATUS.get((template, method), 200)
            if resp.status != expected:
                problems.append(f"{role} {method} {template}: {resp.status} (expected {expected}) {await resp.text()}")
            elif resp.status >= 400:
                body = await resp.json()
                if set(body) != {"error", "code"}:
                    problems.append(f"{role} {method} {template}: error body {body}")
    return problems


class TestAccessMatrix:
    async def test_anonymous_gets_401_everywhere_and_the_engine_is_never_called(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """Without a session every API route answers 401, for any method; nothing reaches the engine."""
        ids = await _prepare(upstream_engine)
        before = len(upstream_engine.calls)
        client = await gateway_server.client()
        assert await _sweep(client, None, ids, "anonymous") == []
        assert upstream_engine.calls[before:] == []
        assert await upstream_engine.status(ids["ready"]) == "READY"

    async def test_admin_role_sees_config_only(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """An ``admin`` may read /api/admin/config and nothing under /api/admin/engine (401), even with CSRF."""
        ids = await _prepare(upstream_engine)
        user = await gateway_server.login(ADMIN)
        before = len(upstream_engine.calls)
        assert await _sweep(user.client, user.csrf, ids, "admin") == []
        # Any role may watch the live stream: the gateway's one stream of the engine's changes is not the admin's.
        assert [call for call in upstream_engine.calls[before:] if call[:2] != ("GET", "/api/events")] == []
        assert await upstream_engine.status(ids["ready"]) == "READY"
        assert await upstream_engine.status(ids["running"]) == "RUNNING"

    async def test_super_admin_may_use_every_route(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """A super_admin gets 200/201/202 from every route it may use and 405 for other methods."""
        ids = await _prepare(upstream_engine)
        user = await gateway_server.login(SUPER)
        assert await _sweep(user.client, user.csrf, ids, "super") == []
        job = await wait_for_status(user, ids["running"], {"FAILED"})
        assert job["error"] == f"cancelled by {SUPER}"

    async def test_admin_config_says_not_super_admin(self, gateway_server: GatewayServer) -> None:
        """/api/admin/config tells an admin who they are and that they are not super_admin."""
        user = await gateway_server.login(ADMIN)
        resp = await user.client.get("/api/admin/config")
        assert await resp.json() == {
            "safeMode": False,
            "safeModeOverride": None,
            "userRole": "admin",
            "isSuperAdmin": False,
            "user": ADMIN,
            "csrfToken": user.csrf,
        }

    async def test_admin_is_refused_with_401(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """A signed-in admin trying to run a job gets 401 and the job stays READY."""
        job_id = await upstream_engine.create()
        user = await gateway_server.login(ADMIN)
        resp = await user.post(f"/api/admin/engine/jobs/{job_id}/run")
        assert resp.status == 401
        assert (await resp.json())["code"] == "forbidden"
        assert await upstream_engine.status(job_id) == "READY"


class TestGuardOrder:
    async def test_role_is_checked_before_csrf(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """An admin with a wrong CSRF token gets 401, not 403: who you are comes first."""
        job_id = await upstream_engine.create()
        user = await gateway_server.login(ADMIN)
        resp = await user.client.post(
            f"/api/admin/engine/jobs/{job_id}/run", json={}, headers={"X-CSRF-Token": "wrong"}
        )
        assert resp.status == 401

    async def test_csrf_is_checked_before_safe_mode(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """With SAFE_MODE on, a bad CSRF token is still reported as 403 ``csrf``."""
        gw = await make_gateway_server(upstream_engine.url, safe_mode=True)
        job_id = await upstream_engine.create()
        user = await gw.login(SUPER)
        resp = await user.client.post(
            f"/api/admin/engine/jobs/{job_id}/run", json={}, headers={"X-CSRF-Token": "wrong"}
        )
        assert resp.status == 403
        assert (await resp.json())["code"] == "csrf"

    async def test_safe_mode_is_checked_before_the_engine(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """With SAFE_MODE on, running even an unknown job is 403 ``safe_mode``: the engine is not asked."""
        gw = await make_gateway_server(upstream_engine.url, safe_mode=True)
        user = await gw.login(SUPER)
        before = len(upstream_engine.calls)
        resp = await user.post("/api/admin/engine/jobs/00000000-0000-4000-8000-000000000000/run")
        assert resp.status == 403
        assert (await resp.json())["code"] == "safe_mode"
        assert upstream_engine.calls[before:] == []

    @pytest.mark.parametrize(
        ("setup", "status", "code"),
        [
            ("unknown", 404, "not_found"),
            ("running", 409, "already_running"),
            ("done", 400, "not_ready"),
        ],
    )
    async def test_engine_refusals_pass_through(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer, setup: str, status: int, code: str
    ) -> None:
        """The engine's 404/409/400 reach the client with the engine's status, message and code."""
        user = await gateway_server.login(SUPER)
        if setup == "unknown":
            job_id = "00000000-0000-4000-8000-000000000000"
        elif setup == "running":
            job_id = await upstream_engine.create("demo.sleep", {"seconds": 60})
            await upstream_engine.run(job_id)
        else:
            job_id = await upstream_engine.create("demo.echo")
            await upstream_engine.run(job_id)
            await wait_for_status(user, job_id, {"DONE"})
        resp = await user.post(f"/api/admin/engine/jobs/{job_id}/run")
        assert resp.status == status
        body = await resp.json()
        assert body["code"] == code
        assert body["error"]
