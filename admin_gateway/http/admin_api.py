"""The admin JSON API: config, and the engine proxy under ``/api/admin/engine``.

Every engine route needs a super_admin session (the route table's rule,
checked before the handler by :mod:`admin_gateway.http.access`; the handler
reads the user with ``request_user``). Mutations check, in this
order: session and role (401), CSRF (403 ``csrf``), SAFE_MODE for runs and
plans (403 ``safe_mode``, the engine is not called), the request itself (400/404), the
audit journal (503 ``journal_unavailable``: the intent record must be durable
before the engine is called), then the engine's answer: 400, 404,
409 (and 413/422) pass through with their message and code, 429 as 429
``throttled`` with the engine's ``Retry-After``; unreachable is
502 ``engine_unavailable``; no answer in time is 504 ``engine_timeout``.

Reads degrade instead of failing: when the engine is down, slow or broken,
the job list answers 200 with ``engine: "down"`` and a warning, so that an
outage never looks like "no jobs".
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from aiohttp import web

from admin_gateway.audit.trail import (
    ACCEPTED,
    AUDIT,
    JOB_CANCEL,
    JOB_CREATE,
    REQUESTED,
    outcome_of,
    requested,
)
from admin_gateway.auth.csrf import FORM_FIELD, check_csrf, csrf_token
from admin_gateway.auth.guards import User
from admin_gateway.engine_client import ENGINE_CLIENT, EngineResponse, request_id_of
from admin_gateway.errors import EngineFailed, GatewayError, Throttled
from admin_gateway.http.access import request_user
from admin_gateway.safe_mode import OVERRIDE_WINDOW
from admin_gateway.settings import SETTINGS
from shared.contract import MAX_FILTER_CHARS, MAX_REASON_CHARS, ErrorCode
from shared.web import read_form, read_json_object

log = structlog.get_logger("api")

#: Query parameters of the job list passed through to the engine.
LIST_PARAMS = ("limit", "status", "type", "before", "q")
_JOB_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_PLAIN_PARAM = rf"(?:{'|'.join(LIST_PARAMS)})=[A-Za-z0-9._~-]{{1,{MAX_FILTER_CHARS}}}"
#: A list query of known parameters with values that need no quoting, forwarded unchanged.
_PLAIN_LIST_QUERY = re.compile(rf"{_PLAIN_PARAM}(?:&{_PLAIN_PARAM})*")
#: Engine statuses passed on to the client as they are (with the engine's message and code).
PASS_THROUGH = frozenset({400, 404, 409, 413, 422})
#: Engine 403 codes that refuse the user (not the gateway's token): passed on with the engine's message.
PASS_THROUGH_403 = frozenset({ErrorCode.SELF_APPROVAL, ErrorCode.NOT_REQUESTER})

_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def _json_bytes(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, headers=_JSON_HEADERS)


def _job_path(request: web.Request, suffix: str = "") -> str:
    """Return the engine path of the job named in the URL; 404 for ids that cannot exist."""
    job_id = request.match_info["id"]
    if not _JOB_ID.fullmatch(job_id):
        raise GatewayError(f"no job with id {job_id[:64]!r}", status=404, code=ErrorCode.NOT_FOUND)
    return f"api/jobs/{job_id}{suffix}"


def _passthrough_query(request: web.Request, names: tuple[str, ...]) -> dict[str, str]:
    """The query parameters in ``names`` (first value of each); every other parameter is dropped."""
    query: dict[str, str] = {}
    for name, value in request.query.items():
        if name in names and name not in query:
            if len(value) > MAX_FILTER_CHARS:
                raise GatewayError(f"{name} is too long", code=ErrorCode.INVALID_FIELD)
            query[name] = value
    return query


def engine_error(resp: EngineResponse) -> GatewayError:
    """Turn an engine answer that is not a success into the error the client gets."""
    message, code = _error_fields(resp)
    if resp.status == 429:  # the engine is busy (too many plans): the client may retry, so say when
        retry = resp.retry_after if resp.retry_after and resp.retry_after.isdigit() else "5"
        return Throttled(message or "the engine is busy; try again shortly", headers={"Retry-After": retry})
    if resp.status in PASS_THROUGH:
        try:
            parsed = ErrorCode(code) if code else None
        except ValueError:
            parsed = None
        return GatewayError(
            message or f"engine answered {resp.status}",
            status=resp.status,
            code=parsed or _DEFAULT_CODES.get(resp.status, ErrorCode.BAD_REQUEST),
        )
    if resp.status == 403 and code in PASS_THROUGH_403:
        # The engine refusing the signed-in user (two-person rule), not the gateway's token.
        return GatewayError(message or "the engine refused", status=403, code=ErrorCode(code))
    if resp.status in (401, 403):
        log.error("engine_refused_gateway_token", status=resp.status)
        return EngineFailed("the engine refused the gateway's credentials (check the engine token)")
    return EngineFailed(f"the engine failed ({resp.status}{': ' + message if message else ''})")


_DEFAULT_CODES = {
    400: ErrorCode.BAD_REQUEST,
    404: ErrorCode.NOT_FOUND,
    409: ErrorCode.BAD_REQUEST,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    422: ErrorCode.INVALID_FIELD,
}


def _error_fields(resp: EngineResponse) -> tuple[str | None, str | None]:
    if not resp.is_json:
        return None, None
    try:
        body = json.loads(resp.body)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    message, code = body.get("error"), body.get("code")
    return (message[:500] if isinstance(message, str) else None, code if isinstance(code, str) else None)


def _is_json_array(resp: EngineResponse) -> bool:
    return resp.is_json and _delimited(resp.body, b"[", b"]")


def _is_json_object(resp: EngineResponse) -> bool:
    return resp.is_json and _delimited(resp.body, b"{", b"}")


def _delimited(body: bytes, first: bytes, last: bytes) -> bool:
    # The engine writes no surrounding blanks; only if it ever does, pay for a stripped copy.
    if body.startswith(first) and body.endswith(last):
        return True
    body = body.strip()
    return body.startswith(first) and body.endswith(last)


async def _call(
    request: web.Request,
    user: User,
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: Any = None,
    total: float | None = None,
) -> EngineResponse:
    return await request.app[ENGINE_CLIENT].call(
        method, path, actor=user.name, query=query, json_body=body, request_id=request_id_of(request), total=total
    )


# -- reads ------------------------------------------------------------------


async def get_config(request: web.Request) -> web.Response:
    """``GET /api/admin/config``: who I am, my role, SAFE_MODE, its override window, and the CSRF token for fetch.

    ``safeModeOverride`` is the engine's window requested or open now (its requester, approver, reason,
    ``until``: what a banner shows), asked for only while SAFE_MODE is on; ``null`` otherwise, and when the
    engine cannot say (reads degrade, they do not fail).
    """
    user = request_user(request)
    safe_mode = request.app[SETTINGS].safe_mode
    window = None
    if safe_mode:
        with contextlib.suppress(GatewayError):
            window = await request.app[OVERRIDE_WINDOW].current(request, user.name)
    return web.json_response(
        {
            "safeMode": safe_mode,
            "safeModeOverride": window,
            "userRole": user.role,
            "isSuperAdmin": user.is_super_admin,
            "user": user.name,
            "csrfToken": await csrf_token(request),
        }
    )


async def list_jobs(request: web.Request) -> web.Response:
    """``GET /api/admin/engine/jobs``: ``{jobs, engine, safeMode, next}``; 200 even when the engine is down."""
    user = request_user(request)
    app = request.app
    safe_mode = app[SETTINGS].safe_mode
    raw = request.rel_url.raw_query_string
    # A query made only of list parameters with plain values (what the panel sends) is forwarded
    # as it came, which saves parsing and re-encoding it; anything else takes the general path.
    # Same meaning either way: the engine reads the first value of a repeated parameter too.
    plain = raw if not raw or _PLAIN_LIST_QUERY.fullmatch(raw) else None
    query = _passthrough_query(request, LIST_PARAMS) if plain is None else None
    try:
        # The hottest path of the gateway: the client is called directly, not through _call.
        resp = await app[ENGINE_CLIENT].call(
            "GET", "api/jobs", actor=user.name, query=query, raw_query=plain, request_id=request_id_of(request)
        )
    except GatewayError as exc:
        return _jobs_down(safe_mode, exc.message)
    if resp.status in PASS_THROUGH:
        raise engine_error(resp)  # e.g. a bad limit: the client's mistake, not an outage
    if resp.status != 200 or not _is_json_array(resp):
        return _jobs_down(
            safe_mode,
            engine_error(resp).message
            if resp.status != 200
            else "the engine answered with something that is not a job list",
        )
    # The engine's array is spliced in as bytes: re-encoding 50 jobs per request would cost
    # more than everything else the gateway does. It is our own engine's JSON (checked above
    # to be an array); the gateway's own fields come after it and win.
    cursor = resp.next_cursor
    tail = (
        b'"engine":"up","safeMode":'
        + (b"true" if safe_mode else b"false")
        + b',"next":'
        + (_json_string(cursor) if cursor is not None else b"null")
        + b"}"
    )
    return _json_bytes(200, b"".join((b'{"jobs":', resp.body.strip(), b",", tail)))


def _json_string(value: str) -> bytes:
    # Job ids are plain ASCII; anything else goes through the real encoder.
    if _JOB_ID.fullmatch(value):
        return b'"' + value.encode() + b'"'
    return json.dumps(value).encode()


def _jobs_down(safe_mode: bool, reason: str) -> web.Response:
    return web.json_response(
        {
            "jobs": [],
            "engine": "down",
            "safeMode": safe_mode,
            "next": None,
            "warning": f"Engine unreachable: {reason}. The job list is unavailable, "
            "which does not mean there are no jobs.",
        }
    )


async def _proxy_read(request: web.Request, path: str, query: dict[str, str] | None = None) -> web.Response:
    user = request_user(request)
    resp = await _call(request, user, "GET", path, query=query)
    if resp.status != 200:
        raise engine_error(resp)
    if not (_is_json_object(resp) or _is_json_array(resp)):
        raise EngineFailed("the engine answered with something that is not JSON")
    return _json_bytes(200, resp.body)


async def get_job(request: web.Request) -> web.Response:
    """``GET /api/admin/engine/jobs/{id}``: the job with its history, as the engine has it."""
    return await _proxy_read(request, _job_path(request))


async def get_job_logs(request: web.Request) -> web.Response:
    """``GET /api/admin/engine/jobs/{id}/logs?after=N``: ``{lines, next}`` from the engine."""
    return await _proxy_read(request, _job_path(request, "/logs"), _passthrough_query(request, ("after", "limit")))


async def get_run_requests(request: web.Request) -> web.Response:
    """``GET /api/admin/engine/run-requests?limit=N``: the jobs waiting for approval, the soonest to expire first."""
    return await _proxy_read(request, "api/run-requests", _passthrough_query(request, ("limit",)))


async def get_types(request: web.Request) -> web.Response:
    """``GET /api/admin/engine/types``: the engine's job type catalog."""
    return await _proxy_read(request, "api/types")


async def get_engine_logs(request: web.Request) -> web.Response:
    """``GET /api/admin/engine/logs``: ``{logs}``, or ``{logs: [], engineDown: true, warning}``."""
    user = request_user(request)
    query = _passthrough_query(request, ("limit",))
    try:
        resp = await _call(request, user, "GET", "api/engines/logs", query=query)
    except GatewayError as exc:
        return _logs_down(exc.message)
    if resp.status in PASS_THROUGH:
        raise engine_error(resp)
    if resp.status != 200 or not _is_json_array(resp):
        return _logs_down(engine_error(resp).message if resp.status != 200 else "unexpected answer")
    return _json_bytes(200, b"".join((b'{"logs":', resp.body.strip(), b"}")))


def _logs_down(reason: str) -> web.Response:
    return web.json_response(
        {"logs": [], "engineDown": True, "warning": f"Engine unreachable: {reason}. The engine log is unavailable."}
    )


# -- mutations ----------------------------------------------------------------


async def _mutate(
    request: web.Request,
    user: User,
    action: str,
    path: str,
    body: dict[str, Any],
    *,
    job_id: str | None,
    success: int,
    reason: str | None = None,
    data: dict[str, Any] | None = None,
    answer_data: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    total: float | None = None,
) -> web.Response:
    """Call the engine for a mutation, recorded before (intent) and after (outcome).

    ``data`` goes into both records; ``answer_data`` (given the engine's
    answer, a JSON object) adds fields to the accepted outcome record, such as
    a plan's ``sha256`` (what the person was shown), instead of taking a
    created job's id as the record's ``jobId``; ``total`` is the engine
    call's own total timeout, for a mutation that takes long.

    The intent record (``<action>_requested``) must be durable before the
    engine is called: if it cannot be written the answer is 503
    ``journal_unavailable`` and the engine is not called. The outcome record
    (``<action>``, with ``intentSeq``) follows whatever the engine answered;
    if it cannot be written the engine's answer still stands (the change was
    made) and the failure is logged at ERROR. A crash between the two leaves
    an intent without an outcome: the engine's own journal says what happened.
    """
    audit = request.app[AUDIT]
    extra: dict[str, Any] = {"reason": reason, **(data or {})}
    intent = await audit.record(
        requested(action), request=request, actor=user.name, job_id=job_id, outcome=REQUESTED, fail_closed=True, **extra
    )
    assert intent is not None  # fail_closed: a record or an exception
    extra["intentSeq"] = intent.seq
    try:
        resp = await _call(request, user, "POST", path, body=body, total=total)
    except GatewayError as exc:
        await audit.record(action, request=request, actor=user.name, job_id=job_id, **outcome_of(exc), **extra)
        raise
    if resp.status != success or not _is_json_object(resp):
        error = (
            engine_error(resp)
            if resp.status != success
            else EngineFailed("the engine answered with something that is not JSON")
        )
        await audit.record(
            action,
            request=request,
            actor=user.name,
            job_id=job_id,
            **outcome_of(error),
            engineStatus=resp.status,
            **extra,
        )
        raise error
    if job_id is None or answer_data is not None:
        try:
            answer = json.loads(resp.body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            answer = {}
        if answer_data is not None:
            extra.update(answer_data(answer))
        elif job_id is None:
            job_id = answer.get("id")
    await audit.record(
        action, request=request, actor=user.name, job_id=job_id, outcome=ACCEPTED, status=success, **extra
    )
    return _json_bytes(success, resp.body)


@contextlib.asynccontextmanager
async def _refusal_recorded(request: web.Request, user: User, action: str, job_id: str | None) -> AsyncIterator[None]:
    """Record a mutation refused before it reached the engine (bad id, bad body) as its one record."""
    try:
        yield
    except GatewayError as exc:
        await request.app[AUDIT].record(action, request=request, actor=user.name, job_id=job_id, **outcome_of(exc))
        raise


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def read_body(request: web.Request, allowed: tuple[str, ...], *, required: bool = False) -> dict[str, Any]:
    """Read a mutation's body: a JSON object, or form fields (a page without JavaScript posts a form).

    The form's ``csrf_token`` field was consumed by the CSRF check and is not a body field.
    """
    if request.content_type not in _FORM_TYPES:
        return await read_json_object(request, allowed=allowed, required=required, error=GatewayError)
    form = await read_form(request, error=GatewayError)
    body = {k: v for k, v in form.items() if k != FORM_FIELD}
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise GatewayError(
            f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            code=ErrorCode.UNKNOWN_FIELD,
        )
    if any(not isinstance(v, str) for v in body.values()):
        raise GatewayError("file uploads are not accepted", code=ErrorCode.INVALID_FIELD)
    if required and not body:
        raise GatewayError("a body is required", code=ErrorCode.INVALID_JSON)
    return body


def _optional_str(body: dict[str, Any], name: str, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise GatewayError(f"{name} must be a string", code=ErrorCode.INVALID_FIELD)
    if len(value) > limit:
        raise GatewayError(f"{name} must be at most {limit} characters", code=ErrorCode.INVALID_FIELD)
    return value


async def create_job(request: web.Request) -> web.Response:
    """``POST /api/admin/engine/jobs`` ``{type, name?, params?}``: 201 with a READY job (allowed in SAFE_MODE)."""
    user = request_user(request)
    await check_csrf(request)
    async with _refusal_recorded(request, user, JOB_CREATE, None):
        raw = await read_body(request, ("type", "name", "params"), required=True)
        job_type = raw.get("type")
        if not isinstance(job_type, str) or not job_type:
            raise GatewayError("type is required and must be a string", code=ErrorCode.INVALID_FIELD)
        body: dict[str, Any] = {"type": job_type}
        name = _optional_str(raw, "name", 200)
        if name is not None:
            body["name"] = name
        params = raw.get("params")
        if params is not None:
            if not isinstance(params, dict):
                raise GatewayError("params must be an object", code=ErrorCode.INVALID_FIELD)
            body["params"] = params
    return await _mutate(request, user, JOB_CREATE, "api/jobs", body, job_id=None, success=201)


async def cancel_job(request: web.Request) -> web.Response:
    """``POST /api/admin/engine/jobs/{id}/cancel`` ``{reason?}``: 202; never blocked by SAFE_MODE."""
    user = request_user(request)
    await check_csrf(request)
    job_id = request.match_info["id"]
    async with _refusal_recorded(request, user, JOB_CANCEL, job_id):
        path = _job_path(request, "/cancel")
        raw = await read_body(request, ("reason",))
        reason = _optional_str(raw, "reason", MAX_REASON_CHARS)
    # The engine's cancel takes no body (it records "cancelled by <user>"); the reason is the audit's.
    return await _mutate(request, user, JOB_CANCEL, path, {}, job_id=job_id, success=202, reason=reason)
