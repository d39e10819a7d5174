"""CSRF: every POST needs the session's token and a same-origin request; refusals change nothing."""

from __future__ import annotations

import pytest

from tests.integration.gateway.harness import (
    PASSWORD,
    SUPER,
    GatewayServer,
    UpstreamEngine,
    login_form_token,
    session_cookie,
)


class TestRunCsrf:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"X-CSRF-Token": ""},
            {"X-CSRF-Token": "wrong-token"},
            {"X-CSRF-Token": "é-not-ascii"},
        ],
        ids=["missing", "empty", "wrong", "non-ascii"],
    )
    async def test_bad_token_is_refused_and_nothing_runs(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer, headers: dict[str, str]
    ) -> None:
        """A run without the right token is 403 ``csrf``; the engine is not called and the job stays READY."""
        job_id = await upstream_engine.create()
        user = await gateway_server.login()
        before = len(upstream_engine.calls)
        resp = await user.client.post(f"/api/admin/engine/jobs/{job_id}/run", json={}, headers=headers)
        assert resp.status == 403
        assert (await resp.json())["code"] == "csrf"
        assert upstream_engine.calls[before:] == []
        assert await upstream_engine.status(job_id) == "READY"

    async def test_token_of_another_session_is_refused(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """A valid token from someone else's session does not work in mine."""
        job_id = await upstream_engine.create()
        alice = await gateway_server.login()
        other = await gateway_server.login()
        resp = await alice.client.post(
            f"/api/admin/engine/jobs/{job_id}/run", json={}, headers={"X-CSRF-Token": other.csrf}
        )
        assert resp.status == 403
        assert await upstream_engine.status(job_id) == "READY"

    @pytest.mark.parametrize(
        "headers",
        [
            {"Origin": "http://evil.example"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {"Origin": "null"},
            {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        ],
        ids=["foreign-origin", "cross-site", "same-site", "null-origin-alone", "null-origin-cross-site"],
    )
    async def test_cross_origin_is_refused_even_with_the_token(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer, headers: dict[str, str]
    ) -> None:
        """A request from another origin is 403 ``csrf`` even when it carries the right token."""
        job_id = await upstream_engine.create()
        user = await gateway_server.login()
        resp = await user.post(f"/api/admin/engine/jobs/{job_id}/run", **headers)
        assert resp.status == 403
        assert (await resp.json())["code"] == "csrf"
        assert await upstream_engine.status(job_id) == "READY"

    @pytest.mark.parametrize("kind", ["own-origin", "null-origin-same-origin-fetch", "same-origin-fetch"])
    async def test_same_origin_is_accepted(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer, kind: str
    ) -> None:
        """The gateway's own origin, and Chromium's ``Origin: null`` with ``Sec-Fetch-Site: same-origin``, pass."""
        headers = {
            "own-origin": {"Origin": gateway_server.origin},
            "null-origin-same-origin-fetch": {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
            "same-origin-fetch": {"Sec-Fetch-Site": "same-origin"},
        }[kind]
        user = await gateway_server.login()
        job = await user.create()
        resp = await user.post(f"/api/admin/engine/jobs/{job['id']}/run", **headers)
        assert resp.status == 202, await resp.text()

    async def test_create_and_cancel_need_the_token_too(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """Create and cancel are refused without the token; no job appears, the running one keeps running."""
        running = await upstream_engine.create("demo.sleep", {"seconds": 60})
        await upstream_engine.run(running)
        user = await gateway_server.login()
        created = await user.client.post("/api/admin/engine/jobs", json={"type": "demo.echo"})
        assert created.status == 403
        cancelled = await user.client.post(f"/api/admin/engine/jobs/{running}/cancel", json={})
        assert cancelled.status == 403
        listing = await (await user.client.get("/api/admin/engine/jobs")).json()
        assert [j["id"] for j in listing["jobs"]] == [running]
        assert await upstream_engine.status(running) == "RUNNING"

    async def test_form_field_token_is_accepted(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """A form post may carry the token as the ``csrf_token`` field, and its other fields are the body."""
        user = await gateway_server.login()
        job = await user.create()
        wrong = await user.client.post(
            f"/api/admin/engine/jobs/{job['id']}/run", data={"csrf_token": "nope", "reason": "form"}
        )
        assert wrong.status == 403
        resp = await user.client.post(
            f"/api/admin/engine/jobs/{job['id']}/run", data={"csrf_token": user.csrf, "reason": "from a form"}
        )
        assert resp.status == 202, await resp.text()
        assert (await upstream_engine.job(job["id"]))["runReason"] == "from a form"

    async def test_get_never_runs(self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer) -> None:
        """GET on the run route is 405 and runs nothing."""
        user = await gateway_server.login()
        job = await user.create()
        resp = await user.client.get(f"/api/admin/engine/jobs/{job['id']}/run")
        assert resp.status == 405
        assert await upstream_engine.status(job["id"]) == "READY"


class TestLoginLogoutCsrf:
    async def test_login_without_token_is_refused(self, gateway_server: GatewayServer) -> None:
        """POST /login without the form's token is 403 and signs nobody in."""
        client = await gateway_server.client()
        await login_form_token(client)
        resp = await client.post("/login", data={"username": SUPER, "password": PASSWORD}, allow_redirects=False)
        assert resp.status == 403
        assert (await client.get("/api/admin/config")).status == 401

    async def test_cross_site_login_is_refused(self, gateway_server: GatewayServer) -> None:
        """A login posted from another site (login CSRF) is refused even with a token."""
        client = await gateway_server.client()
        token = await login_form_token(client)
        resp = await client.post(
            "/login",
            data={"username": SUPER, "password": PASSWORD, "csrf_token": token},
            headers={"Sec-Fetch-Site": "cross-site"},
            allow_redirects=False,
        )
        assert resp.status == 403
        assert (await client.get("/api/admin/config")).status == 401

    async def test_browser_form_login_with_null_origin(self, gateway_server: GatewayServer) -> None:
        """Chromium's same-origin form post (``Origin: null``, ``Sec-Fetch-Site: same-origin``) signs in."""
        client = await gateway_server.client()
        token = await login_form_token(client)
        resp = await client.post(
            "/login",
            data={"username": SUPER, "password": PASSWORD, "csrf_token": token},
            headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
            allow_redirects=False,
        )
        assert resp.status == 303

    async def test_logout_without_token_is_refused(self, gateway_server: GatewayServer) -> None:
        """A forged logout (no token) is 403 and the session lives on."""
        user = await gateway_server.login()
        resp = await user.client.post("/logout", allow_redirects=False)
        assert resp.status == 403
        assert (await resp.json())["code"] == "csrf"
        assert (await user.client.get("/api/admin/config")).status == 200
        assert session_cookie(user.client)
