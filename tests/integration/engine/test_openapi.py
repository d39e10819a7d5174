"""The published OpenAPI documents: held to the real routers, served, and matching real answers.

The parity tests fail when a route exists without a declaration or a
declaration without a route. The shape tests validate real answers
of a real engine against the declared schemas with a JSON Schema validator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from aiohttp import web

from admin_gateway.http import openapi as gateway_openapi
from engine_hub.http import openapi as engine_openapi
from shared.contract import MAX_JSON_DEPTH, ErrorCode
from shared.openapi import Operation, router_operations
from tests.integration.engine.harness import CLIENT_TOKEN, EngineServer, auth, unstarted_app


def _parity(app: web.Application, operations: tuple[Operation, ...]) -> tuple[set[Any], set[Any]]:
    """(routes without a declaration, declarations without a route)."""
    routes = router_operations(app)
    declared = {op.key for op in operations}
    return routes - declared, declared - routes


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A JSON Schema 2020-12 validator for ``schema`` that resolves the document's component refs."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})


def _check(document: dict[str, Any], name: str, value: Any) -> None:
    errors = [e.message for e in _validator(document, {"$ref": f"#/components/schemas/{name}"}).iter_errors(value)]
    assert not errors, f"{name} does not match its schema: {errors}"


class TestParity:
    def test_engine_routes_and_declarations_match(self, tmp_path: Path) -> None:
        """Every engine route is declared, and every declaration has a route (HEAD twins aside)."""
        undeclared, unrouted = _parity(unstarted_app("engine", tmp_path), engine_openapi.OPERATIONS)
        assert not undeclared, f"routes without an OpenAPI operation in engine_hub/http/routes.py: {undeclared}"
        assert not unrouted, f"declared in engine_hub/http/routes.py but not routed: {unrouted}"

    def test_gateway_routes_and_declarations_match(self, tmp_path: Path) -> None:
        """Every gateway route (API, sign-in, panel, static) is declared, and every declaration has a route."""
        undeclared, unrouted = _parity(unstarted_app("gateway", tmp_path), gateway_openapi.OPERATIONS)
        assert not undeclared, f"routes without an OpenAPI declaration in admin_gateway/http/openapi.py: {undeclared}"
        assert not unrouted, f"declared in admin_gateway/http/openapi.py but not routed: {unrouted}"

    def test_parity_sees_a_new_route(self, tmp_path: Path) -> None:
        """A route added without a declaration shows up as undeclared (the check can fail)."""
        app = unstarted_app("engine", tmp_path)

        async def handler(request: web.Request) -> web.Response:
            return web.Response()

        app.router.add_delete("/api/jobs/{id}", handler)
        undeclared, _ = _parity(app, engine_openapi.OPERATIONS)
        assert undeclared == {("DELETE", "/api/jobs/{id}")}

    def test_explicit_head_route_must_be_declared(self, tmp_path: Path) -> None:
        """A HEAD route without a GET twin counts as a route of its own; HEAD twins of GETs do not."""
        app = unstarted_app("engine", tmp_path)

        async def handler(request: web.Request) -> web.Response:
            return web.Response()

        app.router.add_route("HEAD", "/ping", handler)
        assert ("HEAD", "/ping") in router_operations(app)
        assert ("HEAD", "/api/jobs") not in router_operations(app)


class TestDocuments:
    @pytest.mark.parametrize("module", [engine_openapi, gateway_openapi], ids=["engine", "gateway"])
    def test_every_error_response_uses_the_shared_error_shape(self, module: Any) -> None:
        """Each JSON 4xx/5xx declares {error, code} with codes drawn from shared.contract.ErrorCode."""
        doc = module.document()
        known = {str(c) for c in ErrorCode}
        count = 0
        for item in doc["paths"].values():
            for op in item.values():
                for status, resp in op["responses"].items():
                    media = resp.get("content", {}).get("application/json")
                    if int(status) < 400 or media is None:
                        continue
                    schema = media["schema"]
                    assert schema["required"] == ["error", "code"], (op["operationId"], status)
                    assert set(schema["properties"]["code"]["enum"]) <= known
                    count += 1
        assert count > 20

    @pytest.mark.parametrize("module", [engine_openapi, gateway_openapi], ids=["engine", "gateway"])
    def test_every_operation_declares_an_answer_and_an_id(self, module: Any) -> None:
        """Every operation has a unique operationId and at least one response."""
        full = module.document()
        ids = [op["operationId"] for item in full["paths"].values() for op in item.values()]
        assert len(ids) == len(set(ids))

    @pytest.mark.parametrize("module", [engine_openapi, gateway_openapi], ids=["engine", "gateway"])
    def test_json_bodies_state_the_nesting_limit(self, module: Any) -> None:
        """Every operation taking a JSON body states MAX_JSON_DEPTH, and its 400 invalid_json says so too."""
        doc = module.document()
        checked = 0
        for item in doc["paths"].values():
            for op in item.values():
                request_body = op.get("requestBody")
                if request_body is None or "application/json" not in request_body["content"]:
                    continue
                assert f"at most {MAX_JSON_DEPTH} levels deep" in request_body["description"], op["operationId"]
                bad_request = op["responses"]["400"]
                assert f"nests more than {MAX_JSON_DEPTH} levels deep" in bad_request["description"]
                codes = bad_request["content"]["application/json"]["schema"]["properties"]["code"]["enum"]
                assert "invalid_json" in codes
                checked += 1
        assert checked >= 3


class TestServed:
    async def test_engine_serves_its_document_to_token_holders(self, engine_server: EngineServer) -> None:
        """GET /openapi.json needs a token (submit scope is enough) and lists exactly the routed operations."""
        anonymous = await engine_server.client.get("/openapi.json")
        assert anonymous.status == 401
        assert (await anonymous.json())["code"] == "unauthorized"
        client = await engine_server.client.get("/openapi.json", headers=auth(CLIENT_TOKEN))
        assert client.status == 200
        resp = await engine_server.client.get("/openapi.json", headers=auth())
        assert resp.status == 200
        assert resp.content_type == "application/json"
        doc = await resp.json()
        assert doc["openapi"].startswith("3.1")
        served = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
        assert served == router_operations(engine_server.client.app)


@pytest.fixture
def engine_document() -> dict[str, Any]:
    """The engine's document."""
    return engine_openapi.document()


class TestShapes:
    async def test_jobs_in_every_state_match_the_job_schema(
        self, engine_server: EngineServer, engine_document: dict[str, Any]
    ) -> None:
        """READY, RUNNING, DONE and FAILED jobs, the run answer and the log page validate against their schemas."""
        ready = await engine_server.create("demo.echo", {"message": "hi"})
        _check(engine_document, "Job", ready)
        resp = await engine_server.client.post(
            f"/api/jobs/{ready['id']}/run", json={"reason": "because"}, headers=auth(actor="alice")
        )
        accepted = await resp.json()
        _check(engine_document, "Accepted", accepted)
        _check(engine_document, "Job", await engine_server.wait_for(ready["id"]))
        failed = await engine_server.create("demo.fail", {"code": 3})
        await engine_server.run(failed["id"])
        done = await engine_server.wait_for(failed["id"])
        assert done["exitCode"] == 3
        _check(engine_document, "Job", done)
        logs = await (await engine_server.client.get(f"/api/jobs/{failed['id']}/logs", headers=auth())).json()
        assert logs["lines"]
        _check(engine_document, "LogPage", logs)

    async def test_catalog_and_legacy_shapes_match(
        self, engine_server: EngineServer, engine_document: dict[str, Any]
    ) -> None:
        """The type catalog, JobResults and EngineLogs match their declared item schemas."""
        job = await engine_server.create("demo.echo")
        await engine_server.run(job["id"])
        await engine_server.wait_for(job["id"])
        for url, name in (
            ("/api/types", "JobType"),
            ("/api/jobs/results", "JobResult"),
            ("/api/engines/logs", "EngineLog"),
        ):
            items = await (await engine_server.client.get(url, headers=auth())).json()
            assert items, url
            for item in items:
                _check(engine_document, name, item)

    def test_schemas_refuse_a_drifted_job(self, engine_document: dict[str, Any]) -> None:
        """A job with an undeclared field, a missing field or an unknown status fails the Job schema."""
        job: dict[str, Any] = {
            "id": "0b0e4b7c-5d5e-4c3b-9a51-6f7d0f1f2a3b",
            "type": "t",
            "engine": "t",
            "name": "n",
            "params": {},
            "status": "READY",
            "createdAt": "2025-01-01T00:00:00.000Z",
            "createdBy": "a",
            "startedAt": None,
            "runBy": None,
            "runReason": None,
            "endedAt": None,
            "exitCode": None,
            "error": None,
            "history": [],
            "runRequest": None,
            "outcome": None,
            "copyOf": None,
            "copies": [],
        }
        validator = _validator(engine_document, {"$ref": "#/components/schemas/Job"})
        assert validator.is_valid(job)
        assert validator.is_valid({**job, "outcome": "timed_out", "copyOf": job["id"], "copies": [job["id"]]})
        assert not validator.is_valid({**job, "outcome": "paused"})
        assert not validator.is_valid({**job, "surprise": 1})
        assert not validator.is_valid({k: v for k, v in job.items() if k != "history"})
        assert not validator.is_valid({**job, "status": "PAUSED"})
