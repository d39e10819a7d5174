"""Hardening headers on every kind of response the gateway sends."""

from __future__ import annotations

from typing import Any

from tests.integration.gateway.harness import (
    SUPER,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
)

CSP = "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


def _check(resp: Any, what: str) -> list[str]:
    problems = []
    expected = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
    for name, value in expected.items():
        if resp.headers.get(name) != value:
            problems.append(f"{what}: {name} = {resp.headers.get(name)!r}")
    if not resp.headers.get("Cache-Control"):
        problems.append(f"{what}: no Cache-Control")
    return problems


class TestSecurityHeaders:
    async def test_every_kind_of_response(self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer) -> None:
        """Pages, API answers, the live stream, errors, redirects, static files and the favicon carry the headers."""
        anon = await gateway_server.client()
        user = await gateway_server.login()
        job = await user.create()
        responses = {
            "login page": await anon.get("/login"),
            "healthz": await anon.get("/healthz"),
            "api 401": await anon.get("/api/admin/engine/jobs"),
            "unknown route 404": await anon.get("/no/such/page"),
            "method 405": await anon.delete("/api/admin/config"),
            "login redirect 303": await user.client.get("/login", allow_redirects=False),
            "api 200": await user.client.get("/api/admin/engine/jobs"),
            "api job 200": await user.client.get(f"/api/admin/engine/jobs/{job['id']}"),
            "api csrf 403": await user.client.post("/api/admin/engine/jobs", json={}),
            "api 404 from engine": await user.client.get("/api/admin/engine/jobs/00000000-0000-4000-8000-000000000000"),
            "favicon": await anon.get("/favicon.ico"),
            "static": await anon.get("/static/panel.css"),
            "live stream 200": await user.client.get("/api/admin/engine/events"),
        }
        problems: list[str] = []
        for what, resp in responses.items():
            problems += _check(resp, what)
        responses["live stream 200"].close()
        assert problems == []
        assert responses["favicon"].status == 200
        assert responses["static"].status == 200
        assert responses["login redirect 303"].status == 303

    async def test_no_store_on_api_and_pages(self, gateway_server: GatewayServer) -> None:
        """The API and HTML pages are never cached; static assets may be, with revalidation."""
        user = await gateway_server.login()
        for path in ("/api/admin/config", "/api/admin/engine/jobs", "/login"):
            resp = await user.client.get(path, allow_redirects=False)
            assert resp.headers["Cache-Control"] == "no-store", path
        static = await user.client.get("/static/panel.css")
        assert static.headers["Cache-Control"] == "no-cache"

    async def test_headers_on_engine_failures_and_throttling(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer, closed_port: int
    ) -> None:
        """502 (engine down) and 429 (throttled) answers carry the headers too."""
        down = await make_gateway_server(f"http://127.0.0.1:{closed_port}", login_limit_per_hour=1)
        user = await down.login()
        failed = await user.post("/api/admin/engine/jobs", {"type": "demo.echo"})
        assert failed.status == 502
        problems = _check(failed, "502")
        client = await down.client()
        from tests.integration.gateway.harness import login_form_token

        for _ in range(2):
            token = await login_form_token(client)
            last = await client.post(
                "/login",
                data={"username": SUPER, "password": "wrong password!!", "csrf_token": token},
                allow_redirects=False,
            )
        assert last.status == 429
        problems += _check(last, "429")
        assert problems == []
