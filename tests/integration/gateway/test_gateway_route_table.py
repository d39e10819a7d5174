"""The gateway's route table is its router, its OpenAPI document and its access matrix.

Every registered route has a row of ``admin_gateway.http.routes.ROUTES`` and
every row is registered; the served document lists exactly those routes; a
rule the gateway cannot check refuses to start the app; and the access
matrix walks the table: anonymous callers are refused unless a route is
``PUBLIC``, an ``admin`` is refused by every ``SUPER_ADMIN`` route, and a
super_admin gets past every rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from admin_gateway.http.access import GATEWAY_RULES, PANEL_PREFIX, PASSWORD_PATH
from admin_gateway.http.app import create_app
from admin_gateway.http.routes import ROUTES
from admin_gateway.settings import Settings
from shared.openapi import Operation, router_operations
from shared.routes import Access, Route
from shared.web import API_ROUTES
from tests.integration.gateway.harness import (
    ADMIN,
    ENGINE_TOKEN,
    SUPER,
    GatewayServer,
    UpstreamEngine,
    User,
)

#: Registered routes the served document leaves out on purpose: none (static files and the favicon are
#: declared too, as binary or text answers).
UNDOCUMENTED: Final[frozenset[tuple[str, str]]] = frozenset()
#: Values for the path parameters of the table's templates (a job id is filled in per test).
STATIC_FILE: Final = "panel.css"


def _path(route: Route, job_id: str) -> str:
    """The route's template with real values: a job id, a shipped static file."""
    return route.path.format(id=job_id, job_id=job_id, path=STATIC_FILE, name=ADMIN)


def _wrong_password_form(route: Route, status: int) -> bool:
    """POST /admin/password with an empty form: the (empty) current password is wrong, 401 by design."""
    return (route.method, route.path, status) == ("POST", PASSWORD_PATH, 401)


def _is_page(route: Route) -> bool:
    return route.path.startswith(PANEL_PREFIX)


async def _call(
    client: TestClient[web.Request, web.Application], route: Route, job_id: str, csrf: str | None = None
) -> tuple[int, str, Any]:
    """Call ``route`` once: (status, Location or "", the JSON body or None)."""
    headers = {"X-CSRF-Token": csrf} if csrf else {}
    json_body: dict[str, Any] | None = {} if route.method == "POST" else None
    resp = await client.request(
        route.method, _path(route, job_id), json=json_body, headers=headers, allow_redirects=False
    )
    body = await resp.json() if resp.content_type == "application/json" else None
    return resp.status, resp.headers.get("Location", ""), body


async def _sweep_signed_in(user: User, job_id: str, expected: Callable[[Route, int, str, Any], bool]) -> list[str]:
    """Call every non-PUBLIC route as ``user`` (with its CSRF token); a line per answer ``expected`` refuses."""
    problems = []
    for route in ROUTES:
        if route.access is Access.PUBLIC:
            continue
        status, location, body = await _call(user.client, route, job_id, user.csrf)
        if not expected(route, status, location, body):
            problems.append(f"{route.method} {route.path}: {status} {location} {body}")
    return problems


def _unused_rule_route(access: Access) -> Route:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    operation = Operation(method="GET", path="/api/admin/extra", operation_id="extra", summary="x", responses={})
    return Route(operation=operation, handler=handler, access=access)


class TestTableIsTheRouter:
    async def test_every_registered_route_has_a_row_and_every_row_is_registered(
        self, gateway_server: GatewayServer
    ) -> None:
        """The router serves exactly the table's (method, path) pairs, registered from the table in its order."""
        assert gateway_server.app[API_ROUTES].table == ROUTES
        assert router_operations(gateway_server.app) == {route.operation.key for route in ROUTES}
        assert len({route.operation.key for route in ROUTES}) == len(ROUTES)

    def test_every_row_has_a_rule_the_gateway_checks(self) -> None:
        """Each row's rule is PUBLIC, SESSION or SUPER_ADMIN; pages and the engine proxy need a super_admin.

        The one exception is the live stream, which any signed-in user may watch (acting still needs the role).
        """
        assert {route.access for route in ROUTES} <= GATEWAY_RULES
        for route in ROUTES:
            if route.path in ("/api/admin/engine/events", PASSWORD_PATH):
                # Every signed-in user changes their own password.
                assert route.access is Access.SESSION
            elif _is_page(route) or route.path.startswith("/api/admin/engine/"):
                assert route.access is Access.SUPER_ADMIN, route.path


class TestDocumentIsTheTable:
    async def test_served_document_lists_exactly_the_registered_routes(self, gateway_server: GatewayServer) -> None:
        """GET /openapi.json declares every registered route but UNDOCUMENTED (none), and nothing else."""
        user = await gateway_server.login()
        doc = await (await user.client.get("/openapi.json")).json()
        served = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
        registered = router_operations(gateway_server.app)
        assert frozenset() == UNDOCUMENTED
        assert served == registered - UNDOCUMENTED

    async def test_document_security_follows_each_rule(self, gateway_server: GatewayServer) -> None:
        """A PUBLIC route declares no credentials (``security: []``); every other one needs the session."""
        user = await gateway_server.login()
        doc = await (await user.client.get("/openapi.json")).json()
        for route in ROUTES:
            security = doc["paths"][route.path][route.method.lower()].get("security", doc["security"])
            if route.access is Access.PUBLIC:
                assert security == [], route.path
            else:
                assert all("session" in scheme for scheme in security), route.path


class TestUnhandledRule:
    @pytest.mark.parametrize("access", [Access.ADMIN_TOKEN, Access.SUBMIT])
    async def test_a_route_with_an_engine_rule_refuses_to_start(
        self, access: Access, aiohttp_server: Any, tmp_path: Path
    ) -> None:
        """A row with a rule the gateway does not check (the engine's) stops the app from starting."""
        app = create_app(Settings(data_dir=tmp_path, engine_token=ENGINE_TOKEN))
        app[API_ROUTES].add_table([_unused_rule_route(access)])
        with pytest.raises(RuntimeError, match=re.escape(f"GET /api/admin/extra ({access})")):
            await aiohttp_server(app)


class TestAccessMatrix:
    async def test_anonymous_is_refused_unless_public(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """Without a session: 401 ``unauthorized`` from the API, 303 to /login from pages; PUBLIC routes answer."""
        job_id = await upstream_engine.create("demo.echo")
        client = await gateway_server.client()
        problems = []
        for route in ROUTES:
            status, location, body = await _call(client, route, job_id)
            if route.access is Access.PUBLIC:
                refused = status == 401
            elif _is_page(route):
                refused = status == 303 and location.startswith("/login")
            else:
                refused = status == 401 and body == {"error": "sign in first", "code": "unauthorized"}
            if refused != (route.access is not Access.PUBLIC):
                problems.append(f"{route.method} {route.path}: {status} {location} {body}")
        assert problems == []

    async def test_admin_role_is_refused_by_super_admin_routes(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """An ``admin`` passes SESSION routes; SUPER_ADMIN ones refuse it (API: 401 ``forbidden``, pages: 403)."""
        job_id = await upstream_engine.create("demo.echo")

        def expected(route: Route, status: int, location: str, body: Any) -> bool:
            if route.access is Access.SESSION:
                return status == 200 or _wrong_password_form(route, status)
            if _is_page(route):
                return status == 403 and body is None
            return status == 401 and body is not None and body["code"] == "forbidden"

        assert await _sweep_signed_in(await gateway_server.login(ADMIN), job_id, expected) == []
        assert await upstream_engine.status(job_id) == "READY"

    async def test_super_admin_passes_every_rule(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """A super_admin is refused by no route: no 401/403 and no redirect to /login."""
        job_id = await upstream_engine.create("demo.echo")

        def expected(route: Route, status: int, location: str, body: Any) -> bool:
            return (status not in (401, 403) or _wrong_password_form(route, status)) and not location.startswith(
                "/login"
            )

        assert await _sweep_signed_in(await gateway_server.login(SUPER), job_id, expected) == []

    @pytest.mark.parametrize(
        ("who", "method", "path", "status"),
        [
            ("anonymous", "GET", "/api/admin/nope", 401),
            ("anonymous", "PUT", "/api/admin/config", 401),
            ("anonymous", "GET", "/admin/nope", 303),
            ("admin", "GET", "/api/admin/nope", 401),
            ("admin", "PUT", "/api/admin/config", 405),
            ("admin", "GET", "/admin/nope", 404),
            ("super", "GET", "/api/admin/nope", 404),
            ("anonymous", "GET", "/nope", 404),
        ],
    )
    async def test_unknown_paths_get_the_rule_of_their_prefix(
        self, gateway_server: GatewayServer, who: str, method: str, path: str, status: int
    ) -> None:
        """Unmatched paths and methods are refused as their prefix's routes are, before any 404 or 405."""
        client = (
            await gateway_server.client()
            if who == "anonymous"
            else (await gateway_server.login(ADMIN if who == "admin" else SUPER)).client
        )
        resp = await client.request(method, path, allow_redirects=False)
        assert resp.status == status
