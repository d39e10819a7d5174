"""The limits both processes apply come from shared/contract.py, and the gateway refuses what the engine would."""

from __future__ import annotations

from typing import Any

import pytest

from admin_gateway.audit.timeline import TimelineQuery
from admin_gateway.errors import GatewayError
from admin_gateway.http.openapi import document as gateway_document
from engine_hub.http.openapi import document as engine_document
from shared import contract
from tests.integration.engine.harness import EngineServer, auth


def _schemas(node: Any, key: str) -> list[Any]:
    """Every value of ``key`` found anywhere in a JSON document (a crude but total walk)."""
    found: list[Any] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            found.extend(_schemas(v, key))
    elif isinstance(node, list):
        for item in node:
            found.extend(_schemas(item, key))
    return found


def _reason_limits(doc: dict[str, Any]) -> set[int]:
    """The maxLength of every ``reason`` property in an OpenAPI document."""
    reasons = [p["reason"] for p in _schemas(doc, "properties") if isinstance(p, dict) and "reason" in p]
    return {r["maxLength"] for r in reasons if isinstance(r, dict) and "maxLength" in r}


class TestOneSource:
    def test_web_plumbing_takes_its_limits_from_the_contract(self) -> None:
        """shared.web reads bodies against the contract's MAX_BODY, and no longer defines its own."""
        import shared.web

        # vars(): shared.web imports the name for its own use, it does not re-export it.
        assert vars(shared.web)["MAX_BODY"] is contract.MAX_BODY
        assert not hasattr(shared.web, "HTTP_LIMITS")
        assert contract.HTTP_LIMITS == {"max_line_size": contract.MAX_BODY, "max_field_size": contract.MAX_BODY}

    def test_both_openapi_documents_state_the_same_reason_limit(self) -> None:
        """The engine's and the gateway's OpenAPI documents give reason the contract's maxLength."""
        assert _reason_limits(engine_document()) == {contract.MAX_REASON_CHARS}
        assert _reason_limits(gateway_document()) == {contract.MAX_REASON_CHARS}

    def test_both_openapi_documents_state_the_same_body_limit(self) -> None:
        """Both documents describe 413 at the contract's MAX_BODY."""
        for doc in (engine_document(), gateway_document()):
            assert f"larger than {contract.MAX_BODY} bytes" in str(doc)


class TestSameRefusals:
    @pytest.mark.parametrize(
        ("length", "refused"), [(contract.MAX_FILTER_CHARS, False), (contract.MAX_FILTER_CHARS + 1, True)]
    )
    async def test_actor_filter(self, engine_server: EngineServer, length: int, refused: bool) -> None:
        """An actor filter one character past the limit is refused by the engine and by the gateway's timeline."""
        resp = await engine_server.client.get("/api/audit", params={"actor": "a" * length}, headers=auth())
        assert (resp.status == 400) is refused, await resp.text()
        if refused:
            with pytest.raises(GatewayError, match="actor must be 1 to"):
                TimelineQuery.from_params({"actor": "a" * length})
        else:
            assert TimelineQuery.from_params({"actor": "a" * length}).actor == "a" * length

    @pytest.mark.parametrize(
        ("limit", "refused"), [(contract.MAX_PAGE_LIMIT, False), (contract.MAX_PAGE_LIMIT + 1, True)]
    )
    async def test_page_limit(self, engine_server: EngineServer, limit: int, refused: bool) -> None:
        """The engine's job list takes limit up to the contract's MAX_PAGE_LIMIT, as the gateway documents."""
        resp = await engine_server.client.get("/api/jobs", params={"limit": str(limit)}, headers=auth())
        assert (resp.status == 400) is refused, await resp.text()
        assert f"Page size (1 to {contract.MAX_PAGE_LIMIT})." in str(gateway_document())

    @pytest.mark.parametrize(
        ("length", "refused"), [(contract.MAX_REASON_CHARS, False), (contract.MAX_REASON_CHARS + 1, True)]
    )
    async def test_reason(self, engine_server: EngineServer, length: int, refused: bool) -> None:
        """A run reason one character past the contract's limit is 400 at the engine."""
        job = await engine_server.create("demo.echo")
        resp = await engine_server.client.post(
            f"/api/jobs/{job['id']}/run", json={"reason": "r" * length}, headers=auth()
        )
        assert resp.status == (400 if refused else 202), await resp.text()

    @pytest.mark.parametrize(
        ("length", "refused"), [(contract.MAX_NAME_CHARS, False), (contract.MAX_NAME_CHARS + 1, True)]
    )
    async def test_job_name(self, engine_server: EngineServer, length: int, refused: bool) -> None:
        """A job name one character past the contract's limit is 400 at the engine, as the gateway documents."""
        resp = await engine_server.client.post(
            "/api/jobs", json={"type": "demo.echo", "name": "n" * length}, headers=auth()
        )
        assert resp.status == (400 if refused else 201), await resp.text()
        names = [p["name"] for p in _schemas(gateway_document(), "properties") if isinstance(p, dict) and "name" in p]
        assert any(isinstance(n, dict) and n.get("maxLength") == contract.MAX_NAME_CHARS for n in names)
