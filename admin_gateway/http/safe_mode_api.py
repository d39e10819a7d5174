"""The admin API's break-glass routes (issue 15): ask for, approve and end a SAFE_MODE override window.

Each is a proxy to the engine's ``/api/safe-mode/override…`` routes, which
keep the window and enforce its rules (one at a time, a second person to
approve, time closes it), guarded here like every mutation: super_admin and
CSRF (route table), then the audit intent record, then the engine
(:func:`admin_gateway.http.admin_api._mutate`). The acting user is the
session's, so the engine's four-eyes rule compares signed-in people.
Asking for a window is refused (409 ``safe_mode_off``) while this gateway's
SAFE_MODE is off: there is nothing to override.
"""

from __future__ import annotations

import re
from typing import Any, Final

from aiohttp import web

from admin_gateway.audit.trail import SAFE_MODE_OVERRIDE_APPROVE, SAFE_MODE_OVERRIDE_END, SAFE_MODE_OVERRIDE_REQUEST
from admin_gateway.auth.csrf import check_csrf
from admin_gateway.errors import GatewayError
from admin_gateway.http.access import request_user
from admin_gateway.http.admin_api import _mutate, _optional_str, _refusal_recorded, read_body
from admin_gateway.safe_mode import ENGINE_PATH, OVERRIDE_WINDOW
from admin_gateway.settings import SETTINGS
from shared.contract import MAX_REASON_CHARS, ErrorCode

#: What a window id (a uuid) may look like: anything else names no window and never reaches the engine's URL.
_WINDOW_ID: Final = re.compile(r"[A-Za-z0-9-]{1,64}")


def _window_fields(answer: Any) -> dict[str, Any]:
    """The outcome record's fields from the engine's ``{"window"}`` answer: its id, state and end."""
    window = answer.get("window") if isinstance(answer, dict) else None
    if not isinstance(window, dict):
        return {}
    return {"windowId": window.get("id"), "windowState": window.get("state"), "until": window.get("until")}


def _minutes(raw: dict[str, Any]) -> int | None:
    value = raw.get("minutes")
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 2:  # a form posts text
        value = int(value)
    if type(value) is not int:
        raise GatewayError("minutes must be an integer from 1 to 60", code=ErrorCode.INVALID_FIELD)
    return value


async def request_override(request: web.Request) -> web.Response:
    """``POST /api/admin/safe-mode/override`` ``{reason, minutes?}``: 201 with the requested window."""
    user = request_user(request)
    await check_csrf(request)
    async with _refusal_recorded(request, user, SAFE_MODE_OVERRIDE_REQUEST, None):
        if not request.app[SETTINGS].safe_mode:
            raise GatewayError(
                "SAFE_MODE is off on this gateway: runs are allowed, there is nothing to override",
                status=409,
                code=ErrorCode.SAFE_MODE_OFF,
            )
        raw = await read_body(request, ("reason", "minutes"), required=True)
        reason = _optional_str(raw, "reason", MAX_REASON_CHARS)
        if not reason or not reason.strip():
            raise GatewayError("reason is required: say why SAFE_MODE must be overridden", code=ErrorCode.INVALID_FIELD)
        body: dict[str, Any] = {"reason": reason}
        minutes = _minutes(raw)
        if minutes is not None:
            body["minutes"] = minutes
    try:
        return await _mutate(
            request,
            user,
            SAFE_MODE_OVERRIDE_REQUEST,
            ENGINE_PATH,
            body,
            job_id=None,
            success=201,
            reason=reason,
            data={"minutes": minutes},
            answer_data=_window_fields,
        )
    finally:
        request.app[OVERRIDE_WINDOW].forget()


async def _change(request: web.Request, action: str, verb: str) -> web.Response:
    user = request_user(request)
    await check_csrf(request)
    window_id = request.match_info["id"]
    async with _refusal_recorded(request, user, action, None):
        if not _WINDOW_ID.fullmatch(window_id):
            raise GatewayError(f"no override window {window_id[:64]!r}", status=404, code=ErrorCode.NOT_FOUND)
        await read_body(request, ())
    try:
        return await _mutate(
            request,
            user,
            action,
            f"{ENGINE_PATH}/{window_id}/{verb}",
            {},
            job_id=None,
            success=200,
            data={"windowId": window_id},
            answer_data=_window_fields,
        )
    finally:
        request.app[OVERRIDE_WINDOW].forget()


async def approve_override(request: web.Request) -> web.Response:
    """``POST /api/admin/safe-mode/override/{id}/approve``: 200, the window open from now (not by its requester)."""
    return await _change(request, SAFE_MODE_OVERRIDE_APPROVE, "approve")


async def end_override(request: web.Request) -> web.Response:
    """``POST /api/admin/safe-mode/override/{id}/end``: 200, the window ended (or its request withdrawn)."""
    return await _change(request, SAFE_MODE_OVERRIDE_END, "end")
