"""The engine's published contract: its OpenAPI 3.1 document, served at ``GET /openapi.json``.

The operations are the route table's (:data:`engine_hub.http.routes.ROUTES`),
in its order; this module adds the document's frame (info, security scheme,
tags, common headers). The document is checked against the real router by
the test suite (both directions) and fuzzed by Schemathesis against a live
engine, so an undeclared status or a body that does not match its schema
fails the build.

``/openapi.json`` needs a token like every route but ``/healthz`` (deny by
default); submit-scope client tokens may read it (they need the contract too).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from aiohttp import web

from engine_hub.http.routes import ROUTES
from shared.openapi import build_document, build_openapi_on_startup, contract_schemas, header
from shared.routes import Route
from shared.web import API_ROUTES

TITLE: Final = "Engine Jobs: engine_hub"
VERSION: Final = "1.0.0"

#: The operations of the route table, in its order.
OPERATIONS: Final = tuple(route.operation for route in ROUTES)


def document(table: Iterable[Route] = ROUTES) -> dict[str, Any]:
    """Return the OpenAPI document of ``table``'s routes, in its order (default: the whole route table)."""
    return build_document(
        info={
            "title": TITLE,
            "version": VERSION,
            "description": "The engine's raw HTTP contract. Every answer is JSON (`/metrics` is Prometheus "
            'text); every error is `{"error", "code"}`. Human guide: docs/api.md.',
        },
        operations=(route.operation for route in table),
        components={
            "schemas": contract_schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token (all routes), or a catalog client token with scope `submit` "
                    "(create and read only).",
                }
            },
        },
        security=({"bearer": []},),
        tags=(
            {"name": "jobs", "description": "Jobs, runs, cancels, logs, types."},
            {"name": "compat", "description": "Routes kept for clients of the original system."},
            {"name": "safe-mode", "description": "Break-glass: the SAFE_MODE override window every gateway obeys."},
            {"name": "operations", "description": "Health, metrics, journal, this document."},
        ),
        common_headers={"X-Request-Id": header("The request id (also in the engine's request log).")},
    )


def serve(app: web.Application) -> None:
    """Build the document of the routes ``app`` registered, once, when it starts (served by its ``openapi`` row)."""
    build_openapi_on_startup(app, lambda app: document(app[API_ROUTES].table))


__all__ = ["OPERATIONS", "document", "serve"]
