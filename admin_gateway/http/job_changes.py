"""The gateway's job changes that may start a process or decide on one (run, plan, approve, reject, withdraw),
and Run again (a copy: a create, which starts nothing).

Each is guarded in order (session and role by the route, then CSRF, then
SAFE_MODE for what may start a process, unless a break-glass window is
open), audited before and after the engine call (:func:`admin_api._mutate`),
and forwarded to the engine. docs/gateway.md lists the routes; docs/governance.md the policy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Final, Literal

from aiohttp import web

from admin_gateway.audit.trail import (
    AUDIT,
    JOB_APPROVE,
    JOB_CREATE,
    JOB_PLAN,
    JOB_REJECT,
    JOB_RUN,
    JOB_WITHDRAW,
    SAFE_MODE_REFUSED,
    outcome_of,
)
from admin_gateway.auth.csrf import check_csrf
from admin_gateway.auth.guards import User
from admin_gateway.errors import GatewayError, SafeModeRefused
from admin_gateway.http.access import request_user
from admin_gateway.http.admin_api import _job_path, _mutate, _optional_str, _refusal_recorded, read_body
from admin_gateway.safe_mode import OVERRIDE_WINDOW
from admin_gateway.settings import SETTINGS
from shared.contract import MAX_REASON_CHARS, PLAN_ANSWER_WITHIN, ErrorCode

_SAFE_MODE_MESSAGES: Final = {
    "run": "SAFE_MODE is on: no job can be started. Turn SAFE_MODE off on the gateway to run jobs, "
    "or have a second super_admin approve a break-glass window.",
    "plan": "SAFE_MODE is on: no plan can be run (a plan is a process, refused like a run). "
    "Turn SAFE_MODE off on the gateway to plan and run jobs, "
    "or have a second super_admin approve a break-glass window.",
    "approve": "SAFE_MODE is on: approving could start the job. Turn SAFE_MODE off on the gateway to approve runs, "
    "or have a second super_admin approve a break-glass window.",
}
#: What a job change may start: a process (a run, a plan, or the approval that completes a request).
_Operation = Literal["run", "plan", "approve", "reject", "withdraw"]


async def _refuse_in_safe_mode(
    request: web.Request, user: User, job_id: str, operation: _Operation, allowed: tuple[str, ...]
) -> dict[str, Any] | None:
    """Under SAFE_MODE with no open break-glass window, record ``safe_mode_refused`` and raise 403 ``safe_mode``.

    Returns the open window (its engine JSON) that lets the request through
    under SAFE_MODE, or ``None`` when SAFE_MODE is off. A plan and an
    approval may start a process too, so they are refused exactly like a run
    (the record's ``operation`` says which); the engine is not called. The
    record keeps the ``reason`` the person typed, read best effort from the
    body (``allowed`` names its fields): a body that cannot be read is not
    a second refusal.
    """
    if not request.app[SETTINGS].safe_mode:
        return None
    window = await request.app[OVERRIDE_WINDOW].open_window(request, user.name)
    if window is not None:
        return window
    refusal = SafeModeRefused(_SAFE_MODE_MESSAGES[operation])
    reason = None
    if "reason" in allowed:
        with contextlib.suppress(GatewayError):
            reason = _optional_str(await read_body(request, allowed), "reason", MAX_REASON_CHARS)
    await request.app[AUDIT].record(
        SAFE_MODE_REFUSED,
        request=request,
        actor=user.name,
        job_id=job_id,
        operation=operation,
        reason=reason,
        **outcome_of(refusal),
    )
    raise refusal


async def _job_change(
    request: web.Request,
    action: str,
    operation: _Operation,
    *,
    allowed: tuple[str, ...],
    reason_required: bool = False,
    success: int = 202,
    answer_data: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    total: float | None = None,
) -> web.Response:
    """Forward a change of the job in the URL (``POST …/{operation}``), guarded and audited.

    In order: CSRF; SAFE_MODE for what may start a process (run, plan,
    approve: its own record; an open break-glass window lets it through and
    a run then carries the window's id, which the engine checks again and
    records); the job id and the body (``reason``, ``planSha256`` where
    ``allowed``; a refusal of either is recorded as ``action``); then the
    engine, through :func:`_mutate`.
    """
    user = request_user(request)
    await check_csrf(request)
    job_id = request.match_info["id"]
    window = None
    if operation in _SAFE_MODE_MESSAGES:
        window = await _refuse_in_safe_mode(request, user, job_id, operation, allowed)
    async with _refusal_recorded(request, user, action, job_id):
        path = _job_path(request, f"/{operation}")
        raw = await read_body(request, allowed)
        reason = _optional_str(raw, "reason", MAX_REASON_CHARS)
        if reason_required and not (reason and reason.strip()):
            raise GatewayError("reason is required (a non-empty string)", code=ErrorCode.INVALID_FIELD)
        plan_sha256 = _optional_str(raw, "planSha256", 64)
    body: dict[str, Any] = {"reason": reason} if reason else {}
    data: dict[str, Any] = {}
    if plan_sha256 is not None:
        body["planSha256"] = data["planSha256"] = plan_sha256
    if window is not None:
        data["overrideId"] = window["id"]
        if operation in ("run", "approve"):  # what may start the job: the engine records the window with it
            body["overrideId"] = window["id"]
    try:
        return await _mutate(
            request,
            user,
            action,
            path,
            body,
            job_id=job_id,
            success=success,
            reason=reason,
            data=data,
            answer_data=answer_data,
            total=total,
        )
    except GatewayError as exc:
        if exc.code == ErrorCode.OVERRIDE_CLOSED:
            request.app[OVERRIDE_WINDOW].forget()  # ended elsewhere meanwhile: ask the engine next time
        raise


async def run_job(request: web.Request) -> web.Response:
    """``POST /api/admin/engine/jobs/{id}/run`` ``{reason?, planSha256?}``: 202, or refused by SAFE_MODE.

    For a type that needs approval the engine opens a run request instead of
    starting the job. Under SAFE_MODE a run goes through only while a
    break-glass window is open (:mod:`admin_gateway.safe_mode`).
    """
    return await _job_change(request, JOB_RUN, "run", allowed=("reason", "planSha256"))


#: Fields of a plan's answer the gateway's ``job_plan`` record keeps (never the output itself).
PLAN_RECORDED: Final = ("sha256", "exitCode", "truncated", "timedOut")


def _plan_fields(answer: dict[str, Any]) -> dict[str, Any]:
    return {name: answer.get(name) for name in PLAN_RECORDED}


async def plan_job(request: web.Request) -> web.Response:
    """``POST /api/admin/engine/jobs/{id}/plan``: 200 with what the job's plan printed, or refused by SAFE_MODE.

    Guarded and audited like a run (intent ``job_plan_requested``, outcome
    ``job_plan`` with the plan's ``sha256``); waits for the engine up to
    :data:`PLAN_ANSWER_WITHIN` seconds, as a plan may take its whole timeout.
    """
    return await _job_change(
        request, JOB_PLAN, "plan", allowed=(), success=200, answer_data=_plan_fields, total=PLAN_ANSWER_WITHIN
    )


async def approve_job(request: web.Request) -> web.Response:
    """``POST /api/admin/engine/jobs/{id}/approve`` ``{reason?, planSha256?}``: 202; refused by SAFE_MODE.

    Refused like a run under SAFE_MODE (unless a break-glass window is open):
    the approval that completes a request starts the job.
    """
    return await _job_change(request, JOB_APPROVE, "approve", allowed=("reason", "planSha256"))


async def reject_job(request: web.Request) -> web.Response:
    """``POST /api/admin/engine/jobs/{id}/reject`` ``{reason}``: 202; never blocked by SAFE_MODE (it starts nothing)."""
    return await _job_change(request, JOB_REJECT, "reject", allowed=("reason",), reason_required=True)


async def withdraw_job(request: web.Request) -> web.Response:
    """``POST /api/admin/engine/jobs/{id}/withdraw`` ``{reason?}``: 202; never blocked by SAFE_MODE."""
    return await _job_change(request, JOB_WITHDRAW, "withdraw", allowed=("reason",))


async def copy_job(request: web.Request) -> web.Response:
    """``POST /api/admin/engine/jobs/{id}/copy`` (no body, or ``{}``): Run again, 201 with the new READY job.

    Guarded and audited like a create (CSRF; allowed under SAFE_MODE, as a
    create is: it starts nothing): ``job_create_requested`` then ``job_create``
    with ``copyOf`` naming the finished job, the outcome's ``jobId`` the new one.
    The engine's 404 and 409 ``not_finished`` pass through.
    """
    user = request_user(request)
    await check_csrf(request)
    job_id = request.match_info["id"]
    async with _refusal_recorded(request, user, JOB_CREATE, None):
        path = _job_path(request, "/copy")
        await read_body(request, ())
    return await _mutate(request, user, JOB_CREATE, path, {}, job_id=None, success=201, data={"copyOf": job_id})
