"""Schemathesis against both live processes: every answer must be one the published contract declares.

pytest parametrizes at collection time, so the documents are built from the
code then (exactly as the apps build them); the first fixture to touch each
live process asserts that it serves that very document at
``GET /openapi.json``. (``schemathesis.pytest.from_fixture``, which would load
it from the process, does not work with pytest 9: it writes ``Node._nodeid``.)

Every operation is fuzzed in three phases: the declared examples, the
coverage phase (boundary and invalid values, missing and unexpected fields,
undeclared methods and media types) and random generation, in positive and
negative modes, derandomised. The stateful phase is off: it is slow, and
the job pool (see conftest) already brings real ids to the job routes.

Checks: ``not_a_server_error``, ``status_code_conformance``,
``content_type_conformance``, ``response_schema_conformance``,
``response_headers_conformance`` and ``negative_data_rejection``.

Exclusions, each for test mechanics only:

- gateway ``POST /logout``: it would end the session the rest of the run is
  signed in with (its answers are covered by test_gateway_sessions.py).
- engine ``GET /api/events``: a stream never ends, so every accepted case would
  wait out the request timeout (minutes per run); its answers are covered by
  test_engine_events.py.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import hypothesis.strategies as st
import pytest
import requests
import schemathesis
from aiohttp import web

from admin_gateway.http import openapi as gateway_openapi
from admin_gateway.http.app import create_app as create_gateway_app
from admin_gateway.settings import Settings as GatewaySettings
from engine_hub.http import openapi as engine_openapi
from engine_hub.http.app import create_app as create_engine_app
from engine_hub.settings import Settings as EngineSettings
from shared.routes import RouteTable
from shared.web import API_ROUTES
from tests.e2e.harness import Service
from tests.fuzz.harness import MIN_TOTAL_CASES, Stats, engine_headers, login, make_pool, max_examples, seed

if TYPE_CHECKING:
    # The Case of an OpenAPI operation (schemathesis names it only for type checkers).
    from schemathesis.specs.openapi.schemas import OpenApiCase

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
)


def _config(*, excluded_paths: tuple[str, ...] = ()) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": seed(),
            "max-redirects": 0,
            "request-timeout": 10,
            "generation": {
                "mode": "all",
                "max-examples": max_examples(),
                "deterministic": True,
                "database": "none",
                # Credentials come from the session below, never from generated values.
                "with-security-parameters": False,
            },
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "operations": [{"include-path": p, "enabled": False} for p in excluded_paths],
        }
    )


@attrs.define
class Pool:
    """Real job ids for ``{id}``, filled by a fixture once the processes run (read lazily by the hook)."""

    ids: list[str] = attrs.Factory(list)

    def hook(self) -> Callable[..., Any]:
        """A ``flatmap_path_parameters`` hook: the generated ``{id}`` or, as often, a real job id."""

        def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
            if "id" not in (path_parameters or {}):
                return st.just(path_parameters)
            # An index, resolved when drawn: explicit examples are drawn at collection time,
            # before the pool exists, and keep their generated id then.
            real = st.integers(min_value=0, max_value=255).map(
                lambda i: {**path_parameters, "id": self.ids[i % len(self.ids)]} if self.ids else path_parameters
            )
            return st.one_of(st.just(path_parameters), real)

        return flatmap_path_parameters


def _local_document(document: Callable[[RouteTable], dict[str, Any]], app: web.Application) -> dict[str, Any]:
    # Built from the code at collection time (pytest parametrizes then); the fixtures below
    # check that the live processes serve exactly this document.
    return document(app[API_ROUTES].table)


with tempfile.TemporaryDirectory() as _tmp:
    ENGINE_DOCUMENT = _local_document(
        engine_openapi.document,
        create_engine_app(EngineSettings(token="x" * 32, data_dir=Path(_tmp), ephemeral=True), environ={}),
    )
    GATEWAY_DOCUMENT = _local_document(
        gateway_openapi.document, create_gateway_app(GatewaySettings(data_dir=Path(_tmp), engine_token="x" * 32))
    )

ENGINE_POOL = Pool()
GATEWAY_POOL = Pool()
engine_contract = schemathesis.openapi.from_dict(ENGINE_DOCUMENT, config=_config(excluded_paths=("/api/events",)))
engine_contract.hook(ENGINE_POOL.hook())
gateway_contract = schemathesis.openapi.from_dict(GATEWAY_DOCUMENT, config=_config(excluded_paths=("/logout",)))
gateway_contract.hook(GATEWAY_POOL.hook())


def _served(url: str, session: requests.Session) -> dict[str, Any]:
    resp = session.get(f"{url}/openapi.json", timeout=10)
    assert resp.status_code == 200, resp.text
    document: dict[str, Any] = resp.json()
    return document


@pytest.fixture(scope="session")
def engine_session(live_engine: Service) -> requests.Session:
    """Requests carrying the engine's admin token; the engine serves the fuzzed document and has a job pool."""
    session = requests.Session()
    session.headers.update(engine_headers())
    assert _served(live_engine.url, session) == ENGINE_DOCUMENT
    ENGINE_POOL.ids[:] = make_pool(live_engine).ids
    return session


@pytest.fixture(scope="session")
def gateway_session(live_engine: Service, live_gateway: Service) -> requests.Session:
    """Requests carrying a super_admin session cookie and its CSRF header; the gateway serves the fuzzed document."""
    session = login(live_gateway).session()
    assert _served(live_gateway.url, session) == GATEWAY_DOCUMENT
    GATEWAY_POOL.ids[:] = make_pool(live_engine).ids
    return session


@pytest.mark.slow
class TestEngineContract:
    @engine_contract.parametrize()
    def test_engine_answers_as_declared(
        self, case: OpenApiCase, live_engine: Service, engine_session: requests.Session, fuzz_stats: Stats
    ) -> None:
        """Every generated request to the engine gets an answer its OpenAPI document declares."""
        response = case.call(base_url=live_engine.url, session=engine_session)
        fuzz_stats.record("engine", case.operation.label, response.status_code)
        case.validate_response(response)


@pytest.mark.slow
class TestGatewayContract:
    @gateway_contract.parametrize()
    def test_gateway_answers_as_declared(
        self, case: OpenApiCase, live_gateway: Service, gateway_session: requests.Session, fuzz_stats: Stats
    ) -> None:
        """Every generated request to the gateway (as a super_admin) gets an answer its document declares."""
        response = case.call(base_url=live_gateway.url, session=gateway_session)
        fuzz_stats.record("gateway", case.operation.label, response.status_code)
        case.validate_response(response)


@pytest.mark.slow
class TestVolume:
    def test_enough_cases_were_sent(self, fuzz_stats: Stats) -> None:
        """Both processes were fuzzed, with at least MIN_TOTAL_CASES generated cases between them."""
        if not (fuzz_stats.cases["engine"] and fuzz_stats.cases["gateway"]):
            pytest.skip("run with both contract tests to count the cases")
        total = sum(fuzz_stats.cases.values())
        assert total >= MIN_TOTAL_CASES, fuzz_stats.summary()
