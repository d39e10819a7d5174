"""The engine's SAFE_MODE override routes (issue 15): read, request, approve and end the window.

The rules are :class:`engine_hub.jobs.override.OverrideService`'s; these
handlers read bodies and answer ``{"window": …}``. The actor is the
admin token's ``X-Engine-Actor`` (the gateway's signed-in user), so the
four-eyes rule compares the people the gateway vouches for.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from engine_hub.errors import EngineError, InvalidField
from engine_hub.http.auth import principal, source
from engine_hub.http.jobs import reject_unknown_query, required_text
from engine_hub.http.schemas import (
    ACTOR,
    ADMIN_AUTH,
    BAD_FIELD,
    BAD_JSON,
    JOURNAL,
    OVERRIDE_BODY,
    OVERRIDE_CLOSED,
    OVERRIDE_PATH,
    SUBMIT_AUTH,
    TOO_LARGE,
    UNKNOWN_FIELD,
    UNKNOWN_QUERY,
    E,
)
from engine_hub.jobs.override import OVERRIDES
from engine_hub.store.override import DEFAULT_MINUTES, MAX_MINUTES, MIN_MINUTES, Window
from shared.contract import MAX_REASON_CHARS
from shared.openapi import ErrorCase, Operation, body, closed_object, errors, ref, response
from shared.routes import Access, Route, RouteTable
from shared.web import Handler, read_json_object

SAFE_MODE: Final = ("safe-mode",)
#: Longest window id accepted in a path (ids are uuids).
MAX_ID_CHARS: Final = 64


def _answer(window: Window | None, now: str, *, status: int = 200) -> web.Response:
    return web.json_response({"window": None if window is None else window.to_json(now)}, status=status)


def _minutes(body: dict[str, Any]) -> int:
    value = body.get("minutes", DEFAULT_MINUTES)
    if value is None:
        return DEFAULT_MINUTES
    if type(value) is not int or not MIN_MINUTES <= value <= MAX_MINUTES:
        raise InvalidField(f"minutes must be an integer from {MIN_MINUTES} to {MAX_MINUTES}")
    return value


def _window_id(request: web.Request) -> str:
    window_id = request.match_info["id"]
    if len(window_id) > MAX_ID_CHARS or not window_id.isprintable():
        raise InvalidField(f"the window id must be 1 to {MAX_ID_CHARS} printable characters")
    return window_id


async def get_override(request: web.Request) -> web.Response:
    """``GET /api/safe-mode/override``: ``{"window"}``, the window requested or open now, or null."""
    reject_unknown_query(request, ())
    overrides = request.app[OVERRIDES]
    return _answer(await overrides.current(), overrides.now())


async def request_override(request: web.Request) -> web.Response:
    """``POST /api/safe-mode/override`` ``{reason, minutes?}``: 201 with the requested window."""
    body = await read_json_object(request, allowed=("reason", "minutes"), required=True, error=EngineError)
    reason = required_text(body, "reason", max_chars=MAX_REASON_CHARS)
    minutes = _minutes(body)
    overrides = request.app[OVERRIDES]
    window = await overrides.request(
        reason=reason, minutes=minutes, actor=principal(request).actor, source=source(request)
    )
    return _answer(window, overrides.now(), status=201)


async def approve_override(request: web.Request) -> web.Response:
    """``POST /api/safe-mode/override/{id}/approve``: 200 with the window, open from now."""
    await read_json_object(request, allowed=(), error=EngineError)
    overrides = request.app[OVERRIDES]
    window = await overrides.approve(
        window_id=_window_id(request), actor=principal(request).actor, source=source(request)
    )
    return _answer(window, overrides.now())


async def end_override(request: web.Request) -> web.Response:
    """``POST /api/safe-mode/override/{id}/end``: 200 with the window, ended (or its request withdrawn)."""
    await read_json_object(request, allowed=(), error=EngineError)
    overrides = request.app[OVERRIDES]
    window = await overrides.end(window_id=_window_id(request), actor=principal(request).actor, source=source(request))
    return _answer(window, overrides.now())


def _window_route(
    verb: str, handler: Handler, operation_id: str, summary: str, answer: str, *refusals: ErrorCase
) -> Route:
    """The row of ``POST /api/safe-mode/override/{id}/<verb>`` (admin token, no body)."""
    return Route(
        name=f"safe_mode_override_{verb}",
        handler=handler,
        access=Access.ADMIN_TOKEN,
        operation=Operation(
            method="POST",
            path=f"/api/safe-mode/override/{{id}}/{verb}",
            operation_id=operation_id,
            tags=SAFE_MODE,
            parameters=(OVERRIDE_PATH, ACTOR),
            summary=summary,
            request_body=body(closed_object({}), required=False),
            responses={
                "200": response(answer, ref("SafeModeOverrideAnswer")),
                **errors(
                    BAD_JSON,
                    UNKNOWN_FIELD,
                    BAD_FIELD,
                    ErrorCase(status=404, code=E.NOT_FOUND, when="no window with this id is pending or open"),
                    *refusals,
                    OVERRIDE_CLOSED,
                    TOO_LARGE,
                    JOURNAL,
                    *ADMIN_AUTH,
                ),
            },
        ),
    )


#: The route table's rows of the override window (in :data:`engine_hub.http.routes.ROUTES`).
ROUTES: Final[RouteTable] = (
    Route(
        name="safe_mode_override",
        handler=get_override,
        access=Access.SUBMIT,
        operation=Operation(
            method="GET",
            path="/api/safe-mode/override",
            operation_id="getSafeModeOverride",
            tags=SAFE_MODE,
            parameters=(ACTOR,),
            summary="The SAFE_MODE override window requested or open now, or null (one past its end is closed).",
            responses={
                "200": response("The window, or null.", ref("SafeModeOverrideAnswer")),
                **errors(UNKNOWN_QUERY, *SUBMIT_AUTH),
            },
        ),
    ),
    Route(
        name="safe_mode_override",
        handler=request_override,
        access=Access.ADMIN_TOKEN,
        operation=Operation(
            method="POST",
            path="/api/safe-mode/override",
            operation_id="requestSafeModeOverride",
            tags=SAFE_MODE,
            parameters=(ACTOR,),
            summary="Ask for a SAFE_MODE override window; it opens only when another actor approves it.",
            request_body=OVERRIDE_BODY,
            responses={
                "201": response("The window, requested.", ref("SafeModeOverrideAnswer")),
                **errors(
                    BAD_JSON,
                    UNKNOWN_FIELD,
                    BAD_FIELD,
                    ErrorCase(status=409, code=E.OVERRIDE_ACTIVE, when="a window is already requested or open"),
                    TOO_LARGE,
                    JOURNAL,
                    *ADMIN_AUTH,
                ),
            },
        ),
    ),
    _window_route(
        "approve",
        approve_override,
        "approveSafeModeOverride",
        "Open a requested window now, for its minutes. Another actor than the requester only.",
        "The window, open.",
        ErrorCase(status=403, code=E.SELF_APPROVAL, when="the actor asked for this window"),
    ),
    _window_route(
        "end",
        end_override,
        "endSafeModeOverride",
        "End an open window now, or withdraw a pending request (any actor).",
        "The window, ended.",
    ),
)
