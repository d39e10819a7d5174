"""The engine's one route table (engine_hub/http/routes.py) is what the engine serves, documents and guards."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from engine_hub.http.app import create_app
from engine_hub.http.auth import ENGINE_RULES
from engine_hub.http.routes import ROUTES
from engine_hub.settings import Settings
from shared.openapi import Operation, router_operations
from shared.routes import Access, Route
from shared.web import API_ROUTES, UNMATCHED_ROUTE
from tests.integration.engine.harness import ADMIN_TOKEN, CLIENT_TOKEN, EngineServer, auth

JOB = "00000000-0000-4000-8000-000000000000"


def _url(route: Route) -> str:
    """A concrete URL reaching ``route`` (path parameters filled with a well-formed, unknown job id)."""
    return route.path.replace("{id}", JOB)


def _row_id(route: Route) -> str:
    return f"{route.method} {route.path}"


async def _extra(request: web.Request) -> web.Response:
    return web.json_response({"extra": True})


class TestTableIsTheRouter:
    async def test_every_registered_route_is_a_row_and_every_row_is_registered(
        self, engine_server: EngineServer
    ) -> None:
        """Walking the router (catch-all and HEAD twins aside) finds exactly the table's rows, handlers and order."""
        app = engine_server.client.app
        registered: list[tuple[str, str, object]] = []
        for route in app.router.routes():
            resource = route.resource
            assert resource is not None
            if resource.name == UNMATCHED_ROUTE or route.method == "HEAD":
                continue
            # The wrapper keeps the table's handler as __wrapped__ (functools.wraps).
            registered.append((route.method, resource.canonical, route.handler.__wrapped__))  # type: ignore[attr-defined]
        assert registered == [(row.method, row.router_path, row.handler) for row in ROUTES]
        assert app[API_ROUTES].table == ROUTES

    def test_every_row_has_a_rule_the_engine_checks(self) -> None:
        """Each row carries an access rule, one of those the engine's authorize hook knows."""
        assert ROUTES
        for row in ROUTES:
            assert row.access in ENGINE_RULES, _row_id(row)

    def test_each_row_documents_the_refusals_of_its_rule(self) -> None:
        """A row's OpenAPI answers include the 401/403 its rule can give, and a public row's include neither."""
        for row in ROUTES:
            statuses = {str(status) for status in row.operation.responses}
            if row.access is Access.PUBLIC:
                assert not statuses & {"401", "403"}, _row_id(row)
            else:
                assert {"401", "403"} <= statuses, _row_id(row)

    async def test_openapi_lists_exactly_the_registered_routes(self, engine_server: EngineServer) -> None:
        """The served document holds one operation per registered (method, path), in the table's order per path."""
        resp = await engine_server.client.get("/openapi.json", headers=auth())
        assert resp.status == 200
        doc = await resp.json()
        served = [(method.upper(), path) for path, item in doc["paths"].items() for method in item]
        assert set(served) == router_operations(engine_server.client.app) == {(r.method, r.path) for r in ROUTES}
        assert len(served) == len(ROUTES)
        for path, item in doc["paths"].items():
            in_table = [r.operation.operation_id for r in ROUTES if r.path == path]
            assert [op["operationId"] for op in item.values()] == in_table


class TestUncheckableRule:
    @pytest.mark.parametrize("rule", sorted(set(Access) - ENGINE_RULES))
    async def test_a_rule_the_engine_cannot_check_refuses_to_start(self, tmp_path: Path, rule: Access) -> None:
        """A table row with a gateway rule (session, super_admin) stops start-up before the journal is opened."""
        app = create_app(Settings(token=ADMIN_TOKEN, data_dir=tmp_path), environ={})
        operation = Operation(method="GET", path="/api/extra", operation_id="extra", summary="x", responses={})
        app[API_ROUTES].add_table((Route(operation=operation, handler=_extra, access=rule),))
        runner = web.AppRunner(app)
        with pytest.raises(RuntimeError, match=f"GET /api/extra \\({rule}\\)"):
            await runner.setup()
        await runner.cleanup()
        assert not (tmp_path / "journal").exists()


class TestAccessMatrix:
    @pytest.mark.parametrize("row", ROUTES, ids=_row_id)
    async def test_without_a_token(self, engine_server: EngineServer, row: Route) -> None:
        """Every row but the public ones answers 401 without a token; a public one answers."""
        resp = await engine_server.client.request(row.method, _url(row))
        if row.access is Access.PUBLIC:
            assert resp.status not in (401, 403), resp.status
        else:
            assert resp.status == 401
            assert (await resp.json())["code"] == "unauthorized"

    @pytest.mark.parametrize("row", ROUTES, ids=_row_id)
    async def test_with_a_submit_scope_token(self, engine_server: EngineServer, row: Route) -> None:
        """A submit-scope client token is 403 on admin-token rows and passes on submit and public rows."""
        resp = await engine_server.client.request(row.method, _url(row), headers=auth(CLIENT_TOKEN))
        if row.access is Access.ADMIN_TOKEN:
            assert resp.status == 403
            assert (await resp.json())["code"] == "forbidden"
        else:
            assert resp.status not in (401, 403), resp.status

    @pytest.mark.parametrize("row", ROUTES, ids=_row_id)
    async def test_with_the_admin_token(self, engine_server: EngineServer, row: Route) -> None:
        """The admin token passes authorization on every row."""
        resp = await engine_server.client.request(row.method, _url(row), headers=auth())
        assert resp.status not in (401, 403), resp.status

    async def test_unknown_paths_need_the_admin_token(self, engine_server: EngineServer) -> None:
        """The catch-all (no row): 401 without a token, 403 for a client token, 404/405 for the admin."""
        assert (await engine_server.client.get("/api/nope")).status == 401
        assert (await engine_server.client.get("/api/nope", headers=auth(CLIENT_TOKEN))).status == 403
        assert (await engine_server.client.get("/api/nope", headers=auth())).status == 404
        assert (await engine_server.client.delete("/api/jobs", headers=auth(CLIENT_TOKEN))).status == 403
        assert (await engine_server.client.delete("/api/jobs", headers=auth())).status == 405
