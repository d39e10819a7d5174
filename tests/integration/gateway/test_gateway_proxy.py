"""The engine proxy: pass-through, header stripping, SAFE_MODE, and an engine that is down, hung or broken."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp import web

from tests.integration.gateway.harness import (
    ENGINE_TOKEN,
    SUPER,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
    wait_for_status,
)


class TestJobList:
    async def test_list_wraps_the_engine_page(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """The list is ``{jobs, engine: "up", safeMode, next}`` with the engine's jobs, newest first."""
        first = await upstream_engine.create("demo.echo")
        second = await upstream_engine.create("demo.fail")
        user = await gateway_server.login()
        resp = await user.client.get("/api/admin/engine/jobs")
        assert resp.status == 200
        body = await resp.json()
        assert [j["id"] for j in body["jobs"]] == [second, first]
        assert body["engine"] == "up"
        assert body["safeMode"] is False
        assert body["next"] is None
        assert "warning" not in body

    async def test_paging_follows_the_engine_cursor(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """``next`` carries the engine's ``before`` cursor; following it gives the rest, without overlap."""
        ids = [await upstream_engine.create() for _ in range(5)]
        user = await gateway_server.login()
        page1 = await (await user.client.get("/api/admin/engine/jobs", params={"limit": "3"})).json()
        assert [j["id"] for j in page1["jobs"]] == ids[::-1][:3]
        assert page1["next"]
        page2 = await (
            await user.client.get("/api/admin/engine/jobs", params={"limit": "3", "before": page1["next"]})
        ).json()
        assert [j["id"] for j in page2["jobs"]] == ids[::-1][3:]
        assert page2["next"] is None

    async def test_filters_pass_through(self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer) -> None:
        """``status`` and ``type`` reach the engine; other query parameters do not."""
        echo = await upstream_engine.create("demo.echo")
        await upstream_engine.create("demo.fail")
        running = await upstream_engine.create("demo.sleep", {"seconds": 60})
        await upstream_engine.run(running)
        user = await gateway_server.login()
        by_type = await (await user.client.get("/api/admin/engine/jobs", params={"type": "demo.echo"})).json()
        assert [j["id"] for j in by_type["jobs"]] == [echo]
        by_status = await (
            await user.client.get("/api/admin/engine/jobs", params={"status": "RUNNING", "foo": "bar"})
        ).json()
        assert [j["id"] for j in by_status["jobs"]] == [running]
        assert all("foo" not in path for _, path, _ in upstream_engine.calls)

    @pytest.mark.parametrize(
        ("query", "forwarded"),
        [
            ("limit=2&status=READY", "limit=2&status=READY"),  # plain: forwarded as it came
            ("status=READY&limit=2&limit=500", "status=READY&limit=2&limit=500"),  # the engine takes the first
            ("limit=2&foo=bar&status=READY", "limit=2&status=READY"),  # unknown parameter dropped
            ("limit=2&status=READY&limit=500&x=1", "limit=2&status=READY"),  # general path: first value
            ("status=%52EADY&limit=2", "status=READY&limit=2"),  # percent-encoded: general path, decoded once
        ],
    )
    async def test_list_query_reaches_the_engine_with_one_meaning(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer, query: str, forwarded: str
    ) -> None:
        """Plain list queries are forwarded unchanged, others re-encoded; either way a page of 2 READY jobs."""
        for _ in range(3):
            await upstream_engine.create("demo.echo")
        user = await gateway_server.login()
        resp = await user.client.get(f"/api/admin/engine/jobs?{query}")
        assert resp.status == 200
        body = await resp.json()
        assert len(body["jobs"]) == 2 and {j["status"] for j in body["jobs"]} == {"READY"}
        assert [p for m, p, _ in upstream_engine.calls if p.startswith("/api/jobs?")][-1] == f"/api/jobs?{forwarded}"

    async def test_a_large_page_arrives_whole(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """A page far larger than one network read (400 jobs) reaches the client complete and valid."""
        for _ in range(400):
            await upstream_engine.create("demo.echo", {"message": "x" * 200})
        user = await gateway_server.login()
        resp = await user.client.get("/api/admin/engine/jobs", params={"limit": "400"})
        assert resp.status == 200
        body = await resp.json()
        assert len(body["jobs"]) == 400 and body["engine"] == "up"

    async def test_bad_query_is_the_engines_400(self, gateway_server: GatewayServer) -> None:
        """A bad ``limit`` is a 400 with the engine's message and code, not an "engine down"."""
        user = await gateway_server.login()
        resp = await user.client.get("/api/admin/engine/jobs", params={"limit": "0"})
        assert resp.status == 400
        body = await resp.json()
        assert body["code"] == "invalid_field"
        assert "limit" in body["error"]

    async def test_safe_mode_is_reported(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """The list says whether SAFE_MODE is on."""
        gw = await make_gateway_server(upstream_engine.url, safe_mode=True)
        user = await gw.login()
        body = await (await user.client.get("/api/admin/engine/jobs")).json()
        assert body["safeMode"] is True


class TestReads:
    async def test_job_logs_types_and_engine_log(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """Job detail, its log lines, the type catalog and the engine log come from the engine."""
        user = await gateway_server.login()
        job = await user.create("demo.echo", {"message": "hi there"})
        resp = await user.post(f"/api/admin/engine/jobs/{job['id']}/run")
        assert resp.status == 202
        done = await wait_for_status(user, job["id"], {"DONE"})
        assert done["history"][-1]["status"] == "DONE"
        logs = await (await user.client.get(f"/api/admin/engine/jobs/{job['id']}/logs")).json()
        assert "hi there" in [line["text"] for line in logs["lines"]]
        later = await (
            await user.client.get(f"/api/admin/engine/jobs/{job['id']}/logs", params={"after": str(logs["next"])})
        ).json()
        assert later["lines"] == []
        types = await (await user.client.get("/api/admin/engine/types")).json()
        assert "demo.sleep" in str(types)
        engine_log = await (await user.client.get("/api/admin/engine/logs")).json()
        assert any(entry["jobId"] == job["id"] for entry in engine_log["logs"])
        assert "engineDown" not in engine_log

    async def test_unknown_job_is_404(self, gateway_server: GatewayServer) -> None:
        """An unknown id is the engine's 404; an id that cannot exist is refused without asking it."""
        user = await gateway_server.login()
        resp = await user.client.get("/api/admin/engine/jobs/00000000-0000-4000-8000-000000000000")
        assert resp.status == 404
        assert (await resp.json())["code"] == "not_found"
        odd = await user.client.get("/api/admin/engine/jobs/..%2F..%2Fmetrics")
        assert odd.status == 404


class TestMutations:
    async def test_create_run_with_reason(self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer) -> None:
        """Create answers 201 READY; run answers 202 and the reason is stored with the run."""
        user = await gateway_server.login()
        job = await user.create("demo.echo")
        assert job["status"] == "READY"
        resp = await user.post(f"/api/admin/engine/jobs/{job['id']}/run", {"reason": "monthly report"})
        assert resp.status == 202
        assert (await resp.json())["status"] == "accepted"
        done = await wait_for_status(user, job["id"], {"DONE"})
        assert done["runReason"] == "monthly report"

    async def test_bad_bodies_are_400(self, gateway_server: GatewayServer) -> None:
        """Malformed JSON, unknown fields and wrong types are 400 with a code; nothing is created."""
        user = await gateway_server.login()
        cases: list[tuple[Any, str]] = [
            ({"type": 5}, "invalid_field"),
            ({"type": "demo.echo", "x": 1}, "unknown_field"),
            ({"type": "demo.echo", "params": []}, "invalid_field"),
        ]
        for body, code in cases:
            resp = await user.post("/api/admin/engine/jobs", body)
            assert resp.status == 400, body
            assert (await resp.json())["code"] == code
        raw = await user.client.post(
            "/api/admin/engine/jobs", data=b"{not json", headers={**user.headers(), "Content-Type": "application/json"}
        )
        assert raw.status == 400
        assert (await raw.json())["code"] == "invalid_json"
        unknown = await user.post("/api/admin/engine/jobs", {"type": "no.such.type"})
        assert unknown.status == 400
        listing = await (await user.client.get("/api/admin/engine/jobs")).json()
        assert listing["jobs"] == []

    async def test_cancel_stops_a_running_job(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """Cancel answers 202 and the job ends FAILED, cancelled by the session user."""
        user = await gateway_server.login()
        job = await user.create("demo.sleep", {"seconds": 60})
        assert (await user.post(f"/api/admin/engine/jobs/{job['id']}/run")).status == 202
        resp = await user.post(f"/api/admin/engine/jobs/{job['id']}/cancel")
        assert resp.status == 202
        ended = await wait_for_status(user, job["id"], {"FAILED"})
        assert ended["error"] == f"cancelled by {SUPER}"

    async def test_cancel_with_a_reason(self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer) -> None:
        """A cancel may carry a reason: the engine still cancels, the gateway's audit event keeps the reason."""
        user = await gateway_server.login()
        job = await user.create("demo.sleep", {"seconds": 60})
        assert (await user.post(f"/api/admin/engine/jobs/{job['id']}/run")).status == 202
        resp = await user.post(f"/api/admin/engine/jobs/{job['id']}/cancel", {"reason": "wrong target"})
        assert resp.status == 202, await resp.text()
        cancel = [r for r in gateway_server.audit_records() if r.action == "job_cancel"]
        assert [(r.data["reason"], r.data["outcome"]) for r in cancel] == [("wrong target", "accepted")]
        await wait_for_status(user, job["id"], {"FAILED"})

    async def test_cancel_of_a_ready_job_is_refused_by_the_engine(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """Cancelling a READY job passes the engine's refusal through and the job stays READY."""
        user = await gateway_server.login()
        job = await user.create("demo.echo")
        resp = await user.post(f"/api/admin/engine/jobs/{job['id']}/cancel")
        assert resp.status in (400, 409)
        assert (await resp.json())["code"]
        assert await upstream_engine.status(job["id"]) == "READY"


class TestHeaderStripping:
    async def test_client_identity_headers_never_reach_the_engine(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """A client's X-Engine-Actor, Authorization, Cookie and X-Forwarded-* are dropped; the session user acts."""
        user = await gateway_server.login()
        forged = {
            "X-Engine-Actor": "mallory",
            "Authorization": "Bearer stolen",
            "X-Forwarded-For": "10.9.9.9",
            "X-Forwarded-User": "mallory",
            "X-Forwarded-Proto": "https",
        }
        before = len(upstream_engine.calls)
        resp = await user.post("/api/admin/engine/jobs", {"type": "demo.echo"}, **forged)
        assert resp.status == 201
        job = await resp.json()
        assert job["createdBy"] == SUPER
        run = await user.post(f"/api/admin/engine/jobs/{job['id']}/run", **forged)
        assert run.status == 202
        done = await wait_for_status(user, job["id"], {"DONE"})
        assert done["runBy"] == SUPER
        assert [h["by"] for h in done["history"][:2]] == [SUPER, SUPER]
        seen = upstream_engine.calls[before:]
        assert seen
        for _, _, headers in seen:
            lowered = {k.lower(): v for k, v in headers.items()}
            assert lowered["x-engine-actor"] == SUPER
            assert lowered["authorization"] == f"Bearer {ENGINE_TOKEN}"
            assert "cookie" not in lowered
            assert not [k for k in lowered if k.startswith("x-forwarded")]


class TestSafeMode:
    async def test_every_run_is_refused_without_calling_the_engine(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """SAFE_MODE on, no window open: runs are 403 ``safe_mode``, the engine is only asked for the override
        window (issue 15), sees no run request, and the job stays READY."""
        gw = await make_gateway_server(upstream_engine.url, safe_mode=True)
        job_id = await upstream_engine.create("demo.echo")
        user = await gw.login()
        runs_before = upstream_engine.count("POST", r"/run$")
        calls_before = len(upstream_engine.calls)
        for body in ({}, {"reason": "please"}):
            resp = await user.post(f"/api/admin/engine/jobs/{job_id}/run", body)
            assert resp.status == 403
            assert await resp.json() == {
                "error": "SAFE_MODE is on: no job can be started. Turn SAFE_MODE off on the gateway to run jobs, "
                "or have a second super_admin approve a break-glass window.",
                "code": "safe_mode",
            }
        assert upstream_engine.count("POST", r"/run$") == runs_before
        asked = {(method, path) for method, path, _ in upstream_engine.calls[calls_before:]}
        assert asked <= {("GET", "/api/safe-mode/override")}
        assert await upstream_engine.status(job_id) == "READY"

    async def test_create_and_cancel_are_allowed(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """SAFE_MODE on: creating (runs nothing) and cancelling (stops work) still work."""
        gw = await make_gateway_server(upstream_engine.url, safe_mode=True)
        user = await gw.login()
        created = await user.create("demo.echo")
        assert created["status"] == "READY"
        running = await upstream_engine.create("demo.sleep", {"seconds": 60})
        await upstream_engine.run(running)
        resp = await user.post(f"/api/admin/engine/jobs/{running}/cancel")
        assert resp.status == 202
        await wait_for_status(user, running, {"FAILED"})


async def _broken_engine(aiohttp_server: Any, status: int) -> str:
    """A stand-in for an engine that fails (answers every request with ``status``): outside the gateway."""

    async def fail(request: web.Request) -> web.Response:
        return web.json_response({"error": "journal unavailable", "code": "internal"}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fail)
    server = await aiohttp_server(app)
    return str(server.make_url("/"))


class TestEngineDown:
    async def test_refused_connection(self, make_gateway_server: MakeGatewayServer, closed_port: int) -> None:
        """Engine port closed: the list is 200 ``engine: "down"`` within 1.5× the connect timeout; runs are 502."""
        gw = await make_gateway_server(f"http://127.0.0.1:{closed_port}", connect_timeout=1.0)
        user = await gw.login()
        started = time.monotonic()
        resp = await user.client.get("/api/admin/engine/jobs")
        elapsed = time.monotonic() - started
        assert resp.status == 200
        body = await resp.json()
        assert body["jobs"] == [] and body["engine"] == "down" and body["safeMode"] is False
        assert "unreachable" in body["warning"].lower()
        assert elapsed < 1.5
        logs = await (await user.client.get("/api/admin/engine/logs")).json()
        assert logs["logs"] == [] and logs["engineDown"] is True and logs["warning"]
        for path in (
            "/api/admin/engine/jobs/00000000-0000-4000-8000-000000000000/run",
            "/api/admin/engine/jobs/00000000-0000-4000-8000-000000000000/cancel",
            "/api/admin/engine/jobs",
        ):
            failed = await user.post(path, {"type": "demo.echo"} if path.endswith("jobs") else {})
            assert failed.status == 502, path
            assert (await failed.json())["code"] == "engine_unavailable"
        detail = await user.client.get("/api/admin/engine/jobs/00000000-0000-4000-8000-000000000000")
        assert detail.status == 502

    async def test_hung_engine(self, make_gateway_server: MakeGatewayServer, hung_port: int) -> None:
        """An engine that never answers: the list is 200 ``down`` after the total timeout; a run is 504."""
        gw = await make_gateway_server(f"http://127.0.0.1:{hung_port}", total_timeout=0.5)
        user = await gw.login()
        started = time.monotonic()
        resp = await user.client.get("/api/admin/engine/jobs")
        elapsed = time.monotonic() - started
        assert resp.status == 200
        body = await resp.json()
        assert body["engine"] == "down" and body["jobs"] == []
        assert 0.4 < elapsed < 1.5
        run = await user.post("/api/admin/engine/jobs/00000000-0000-4000-8000-000000000000/run")
        assert run.status == 504
        assert (await run.json())["code"] == "engine_timeout"

    async def test_engine_5xx(self, aiohttp_server: Any, make_gateway_server: MakeGatewayServer) -> None:
        """An engine answering 5xx: the list is 200 ``down``; a run is 502 ``engine_error``."""
        gw = await make_gateway_server(await _broken_engine(aiohttp_server, 500))
        user = await gw.login()
        body = await (await user.client.get("/api/admin/engine/jobs")).json()
        assert body["engine"] == "down" and body["jobs"] == [] and body["warning"]
        run = await user.post("/api/admin/engine/jobs/00000000-0000-4000-8000-000000000000/run")
        assert run.status == 502
        assert (await run.json())["code"] == "engine_error"

    async def test_wrong_engine_token(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """A gateway with the wrong engine token shows the engine as down with a token hint; runs are 502."""
        gw = await make_gateway_server(upstream_engine.url, engine_token="not-the-engine-token")
        user = await gw.login()
        body = await (await user.client.get("/api/admin/engine/jobs")).json()
        assert body["engine"] == "down"
        assert "token" in body["warning"]
        job_id = await upstream_engine.create()
        run = await user.post(f"/api/admin/engine/jobs/{job_id}/run")
        assert run.status == 502
        assert await upstream_engine.status(job_id) == "READY"

    @pytest.mark.parametrize("status", [502, 503])
    async def test_engine_log_when_engine_fails(
        self, aiohttp_server: Any, make_gateway_server: MakeGatewayServer, status: int
    ) -> None:
        """The engine log answers ``engineDown`` rather than an error when the engine fails."""
        gw = await make_gateway_server(await _broken_engine(aiohttp_server, status))
        user = await gw.login()
        body = await (await user.client.get("/api/admin/engine/logs")).json()
        assert body["logs"] == [] and body["engineDown"] is True
