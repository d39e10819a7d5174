"""The gateway's published contract: its OpenAPI 3.1 document, served at ``GET /openapi.json``.

The document is made from the route table (:mod:`admin_gateway.http.routes`),
one operation per route: the admin JSON API, sign-in and sign-out, the
panel's pages (HTML), its static files, ``/healthz`` and this document, with
every answer each can give. The test suite holds it to the real router and
fuzzes it with Schemathesis against a live gateway in front of a live engine.

The document needs a signed-in session (any role; the route's rule): deny
by default, and the contract is no secret either way (docs/api.md
describes it too).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from admin_gateway.auth.csrf import FORM_FIELD
from admin_gateway.auth.csrf import HEADER as CSRF_HEADER
from admin_gateway.auth.sessions import COOKIE_NAME, SECURE_COOKIE_NAME
from admin_gateway.http.routes import ROUTES
from admin_gateway.http.schemas import API_TAGS, OPERATIONS_TAGS, PANEL_TAGS, SESSION, SIGN_IN_TAGS
from shared.openapi import build_document, contract_schemas, header
from shared.routes import RouteTable
from shared.web import API_ROUTES

TITLE: Final = "Engine Jobs: admin_gateway"
VERSION: Final = "1.0.0"

#: Every operation of the gateway: one per row of the route table.
OPERATIONS: Final = tuple(route.operation for route in ROUTES)


def document(table: RouteTable = ROUTES) -> dict[str, Any]:
    """Return the OpenAPI document of ``table``'s routes, in its order (default: the whole route table)."""
    return build_document(
        info={
            "title": TITLE,
            "version": VERSION,
            "description": "The admin gateway: sign-in, sessions, roles, CSRF, SAFE_MODE, the admin JSON API "
            '(errors are `{"error", "code"}`) and the panel. Human guide: docs/api.md.',
        },
        operations=(route.operation for route in table),
        components={
            "schemas": contract_schemas(),
            "securitySchemes": {
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": COOKIE_NAME,
                    "description": f"The session cookie set by POST /login (`{SECURE_COOKIE_NAME}` over "
                    "HTTPS). The engine routes need the super_admin role.",
                },
                "csrf": {
                    "type": "apiKey",
                    "in": "header",
                    "name": CSRF_HEADER,
                    "description": f"The session's CSRF token (`csrfToken` of /api/admin/config, or the "
                    f"`{FORM_FIELD}` field of a form); required on every POST.",
                },
            },
        },
        security=(SESSION,),
        tags=(
            {"name": API_TAGS[0], "description": "JSON API for the panel and scripts."},
            {"name": SIGN_IN_TAGS[0], "description": "Sessions."},
            {"name": PANEL_TAGS[0], "description": "Server-rendered pages and their assets."},
            {"name": OPERATIONS_TAGS[0], "description": "Health and this document."},
        ),
        common_headers={
            "X-Request-Id": header("The request id (also sent on to the engine)."),
            "Content-Security-Policy": header("The panel's CSP (on every response)."),
        },
    )


def served_document(app: web.Application) -> dict[str, Any]:
    """The document ``app`` serves: that of the routes it registered (built once, when it starts)."""
    return document(app[API_ROUTES].table)


__all__ = ["OPERATIONS", "document", "served_document"]
