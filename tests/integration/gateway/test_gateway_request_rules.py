"""The gateway's request rules: sign-in before routing, deep JSON, numbers, request ids (issue 11)."""

from __future__ import annotations

import pytest

from admin_gateway.audit.trail import AUDIT
from shared.contract import MAX_JSON_DEPTH
from tests.integration.gateway.harness import (
    ADMIN,
    GatewayServer,
    UpstreamEngine,
)

#: Paths under /api/admin/ a signed-out prober tries: unknown routes, malformed ids, odd spellings.
API_ODD_PATHS = (
    "/api/admin/engine/jobs/a.b",
    "/api/admin/engine/jobs/a.b/logs",
    "/api/admin/engine/jobs/x/y/z",
    "/api/admin/engine/jobs/%2e%2e",
    "/api/admin/engine/jobs/" + "x" * 300,
    "/api/admin/engine/nope",
    "/api/admin/nope",
    "/api/admin/",
    "/api/admin",
    "/api/admin/engine/jobs/\u00e9",
    "/api/admin/audit/x",
    "/api/admin%2Fengine/jobs",
)
#: Panel paths a signed-out prober tries: they get the login redirect every panel page gives.
PANEL_ODD_PATHS = (
    "/admin/nope",
    "/admin/engine/jobs/a.b",
    "/admin/engine/jobs/x/y",
    "/admin",
    "/admin/",
    "/admin/engine/jobs/" + "x" * 300,
)


def _denials(gateway_server: GatewayServer) -> int:
    """Denials on the record: one per plain record, ``repeated`` per coalesced summary."""
    return sum(int(r.data.get("repeated", 1)) for r in gateway_server.audit_records() if r.action == "access_denied")


class TestSignInComesFirst:
    @pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
    async def test_odd_api_paths_signed_out_are_401_with_a_record(
        self, gateway_server: GatewayServer, upstream_engine: UpstreamEngine, method: str
    ) -> None:
        """Unknown paths, bad ids and wrong methods under /api/admin/ are 401 with an access_denied record."""
        client = await gateway_server.client()
        before = len(upstream_engine.calls)
        for path in API_ODD_PATHS:
            resp = await client.request(method, path)
            assert resp.status == 401, (method, path, resp.status, await resp.text())
            assert await resp.json() == {"error": "sign in first", "code": "unauthorized"}
        # Identical denials are coalesced (a flood costs no disk I/O): each is counted once the windows close.
        await gateway_server.app[AUDIT].flush_windows(everything=True)
        assert _denials(gateway_server) == len(API_ODD_PATHS)
        assert upstream_engine.calls[before:] == []

    async def test_odd_panel_paths_signed_out_redirect_to_login(self, gateway_server: GatewayServer) -> None:
        """Unknown panel pages and bad job ids send a signed-out browser to /login, as known pages do."""
        client = await gateway_server.client()
        for path in PANEL_ODD_PATHS:
            resp = await client.get(path, allow_redirects=False)
            assert resp.status == 303, (path, resp.status)
            assert resp.headers["Location"].startswith("/login?next="), path

    async def test_odd_engine_paths_need_the_super_admin_role(
        self, gateway_server: GatewayServer, upstream_engine: UpstreamEngine
    ) -> None:
        """A signed-in admin gets the role's 401 for unknown paths under /api/admin/engine/, not a 404."""
        user = await gateway_server.login(ADMIN)
        before = len(upstream_engine.calls)
        for path in ("/api/admin/engine/nope", "/api/admin/engine/jobs/a.b"):
            resp = await user.client.get(path)
            assert resp.status == 401, (path, resp.status)
            assert (await resp.json())["code"] == "forbidden"
        assert upstream_engine.calls[before:] == []

    async def test_signed_in_super_admin_still_gets_404(self, gateway_server: GatewayServer) -> None:
        """Once signed in as super_admin, an unknown path or impossible id is the usual JSON 404."""
        user = await gateway_server.login()
        for path in ("/api/admin/engine/nope", "/api/admin/engine/jobs/a.b"):
            resp = await user.client.get(path)
            assert resp.status == 404, (path, resp.status)
            assert (await resp.json())["code"] == "not_found"

    async def test_public_paths_stay_public(self, gateway_server: GatewayServer) -> None:
        """Paths outside the signed-in prefixes answer without a session (health, login page, unknown 404)."""
        client = await gateway_server.client()
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/login")).status == 200
        resp = await client.get("/nope")
        assert (resp.status, (await resp.json())["code"]) == (404, "not_found")


def _nested(depth: int) -> str:
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


class TestDeepJson:
    async def test_deep_create_is_400_and_recorded(
        self, gateway_server: GatewayServer, upstream_engine: UpstreamEngine
    ) -> None:
        """A super_admin's create with a 900-deep body is 400 invalid_json, audited as refused, engine untouched."""
        user = await gateway_server.login()
        before = len(upstream_engine.calls)
        body = '{"type": "demo.echo", "params": ' + _nested(900) + "}"
        resp = await user.client.post(
            "/api/admin/engine/jobs", data=body, headers=user.headers(**{"Content-Type": "application/json"})
        )
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["code"] == "invalid_json"
        assert upstream_engine.calls[before:] == []
        record = gateway_server.audit_records()[-1]
        assert (record.action, record.actor) == ("job_create", user.name)
        assert (record.data["outcome"], record.data["code"], record.data["status"]) == ("refused", "invalid_json", 400)

    @pytest.mark.parametrize("path", ["/api/admin/engine/jobs/x/run", "/api/admin/engine/jobs/x/cancel"])
    async def test_deep_run_and_cancel_bodies_are_400(self, gateway_server: GatewayServer, path: str) -> None:
        """Run and cancel bodies nested past the limit are 400 invalid_json."""
        user = await gateway_server.login()
        resp = await user.client.post(
            path, data=_nested(MAX_JSON_DEPTH + 1), headers=user.headers(**{"Content-Type": "application/json"})
        )
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["code"] == "invalid_json"


class TestNumbers:
    @pytest.mark.parametrize("value", ["\u0665", "1_0", "+5", " 5", "5 ", "\uff15", "-1", "5.0", ""])
    async def test_audit_limit_takes_ascii_digits_only(self, gateway_server: GatewayServer, value: str) -> None:
        """The audit API's limit is 400 unless it is plain ASCII digits (an empty value means the default)."""
        user = await gateway_server.login()
        resp = await user.client.get("/api/admin/audit", params={"limit": value})
        expected = 200 if value == "" else 400
        assert resp.status == expected, (value, await resp.text())

    @pytest.mark.parametrize("value", ["\u0665", "1_0", "+5", " 5", "\uff15"])
    async def test_job_list_limit_takes_ascii_digits_only(self, gateway_server: GatewayServer, value: str) -> None:
        """The job list's limit, passed to the engine, is 400 invalid_field unless plain ASCII digits."""
        user = await gateway_server.login()
        resp = await user.client.get("/api/admin/engine/jobs", params={"limit": value})
        assert resp.status == 400, (value, await resp.text())
        assert (await resp.json())["code"] == "invalid_field"

    async def test_panel_page_size_ignores_non_ascii_digits(
        self, gateway_server: GatewayServer, upstream_engine: UpstreamEngine
    ) -> None:
        """The jobs page asks the engine for its default page size when limit is not ASCII digits."""
        user = await gateway_server.login()
        resp = await user.client.get("/admin/engine/jobs", params={"limit": "\u0665"})
        assert resp.status == 200
        assert any(m == "GET" and p.startswith("/api/jobs?limit=50") for m, p, _ in upstream_engine.calls)
