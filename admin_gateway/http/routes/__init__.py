"""The gateway's one route table: every route once, in registration order, with its access rule and OpenAPI operation.

From :data:`ROUTES` derive the app's routes and their order
(``ApiRoutes.add_table`` in :func:`admin_gateway.http.app.create_app`), the
access check (:mod:`admin_gateway.http.access` gets each route's rule), the
OpenAPI document (:mod:`admin_gateway.http.openapi`) and the route list the
access-matrix tests walk. A new route is a new row here (in the module of
its kind: :mod:`.api` for the JSON API, :mod:`.panel` for what browsers
load), with one of the gateway's rules: ``PUBLIC``, ``SESSION`` or
``SUPER_ADMIN``.

May import: the handlers and schemas of ``admin_gateway.http``, ``admin_gateway.auth`` (names for
the document) and ``shared``. Only ``admin_gateway.http`` (the app, the document) imports it.
"""

from __future__ import annotations

from typing import Final

from admin_gateway.http.health import healthz
from admin_gateway.http.routes.api import API
from admin_gateway.http.routes.panel import ASSETS, PAGES, SIGN_IN
from admin_gateway.http.routes.users import USERS
from admin_gateway.http.schemas import NO_SESSION, OPERATIONS_TAGS, PASSWORD_FIRST, SESSION
from shared.openapi import Operation, closed_object, errors, openapi_json, response
from shared.routes import Access, Route, RouteTable

OPERATIONS: Final[RouteTable] = (
    Route(
        access=Access.PUBLIC,
        handler=healthz,
        operation=Operation(
            method="GET",
            path="/healthz",
            operation_id="healthz",
            tags=OPERATIONS_TAGS,
            security=(),
            summary="The gateway process answers (says nothing about the engine); `degraded` while the audit "
            "journal cannot be written.",
            responses={
                "200": response(
                    "Alive.",
                    closed_object(
                        {
                            "status": {"type": "string", "enum": ["ok", "degraded"]},
                            "audit": {"const": "unavailable"},
                            "detail": {"type": "string"},
                        },
                        required=("status",),
                    ),
                )
            },
        ),
    ),
    Route(
        access=Access.SESSION,
        handler=openapi_json,
        name="openapi",
        operation=Operation(
            method="GET",
            path="/openapi.json",
            operation_id="openapi",
            tags=OPERATIONS_TAGS,
            security=(SESSION,),
            summary="This document (any signed-in user).",
            responses={
                "200": response("The OpenAPI 3.1 document.", {"type": "object"}),
                **errors(NO_SESSION, PASSWORD_FIRST),
            },
        ),
    ),
)

#: Every route of the gateway, in registration order.
ROUTES: Final[RouteTable] = (*OPERATIONS, *SIGN_IN, *API, *USERS, *PAGES, *ASSETS)

__all__ = ["ROUTES"]
