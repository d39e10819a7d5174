"""The gateway's four-eyes routes (issue 15): run approvals, plans before a run, break-glass for SAFE_MODE.

Rows of the gateway's one route table (:mod:`admin_gateway.http.routes`), kept
apart from :mod:`.api` by concern; :data:`GOVERNANCE` is spliced into its
:data:`~admin_gateway.http.routes.api.API`. docs/governance.md describes the policy.
"""

from __future__ import annotations

from typing import Final

from admin_gateway.http.admin_api import (
    get_run_requests,
)
from admin_gateway.http.job_changes import approve_job, plan_job, reject_job, withdraw_job
from admin_gateway.http.safe_mode_api import approve_override, end_override, request_override
from admin_gateway.http.schemas import (
    API_AUTH,
    API_TAGS,
    APPROVE_BODY,
    ENGINE_READ,
    FINISHED,
    JOB_PATH,
    MUTATION,
    MUTATION_MEDIA,
    NO_JOB,
    NO_REQUEST,
    RAN,
    REJECT_BODY,
    SAFE_MODE_ON,
    SESSION_CSRF,
    TOO_LONG_QUERY,
    WITHDRAW_BODY,
    E,
    passthrough,
)
from shared.contract import MAX_PAGE_LIMIT, MAX_REASON_CHARS, PLAN_ANSWER_WITHIN
from shared.openapi import (
    PLAN_REFUSALS,
    ErrorCase,
    Operation,
    body,
    closed_object,
    errors,
    path,
    ref,
    response,
)
from shared.routes import Access, Route, RouteTable
from shared.web import Handler

_WINDOW_PATH = path("id", {"type": "string"}, "The override window's id.")
_WINDOW_GONE = ErrorCase(status=404, code=E.NOT_FOUND, when="no override window with this id is pending or open")
_WINDOW_CLOSED = ErrorCase(status=409, code=E.OVERRIDE_CLOSED, when="the window has already ended or expired")


def _window_route(
    verb: str, handler: Handler, operation_id: str, summary: str, answer: str, *refusals: ErrorCase
) -> Route:
    """The row of ``POST /api/admin/safe-mode/override/{id}/<verb>`` (super_admin, CSRF, no body)."""
    return Route(
        access=Access.SUPER_ADMIN,
        handler=handler,
        operation=Operation(
            method="POST",
            path=f"/api/admin/safe-mode/override/{{id}}/{verb}",
            operation_id=operation_id,
            tags=API_TAGS,
            parameters=(_WINDOW_PATH,),
            security=(SESSION_CSRF,),
            summary=summary,
            request_body=body(closed_object({}), required=False, media=MUTATION_MEDIA),
            responses={
                "200": response(answer, ref("SafeModeOverrideAnswer")),
                **errors(*MUTATION, _WINDOW_GONE, _WINDOW_CLOSED, *refusals),
            },
        ),
    )


GOVERNANCE: Final[RouteTable] = (
    Route(
        access=Access.SUPER_ADMIN,
        handler=approve_job,
        operation=Operation(
            method="POST",
            path="/api/admin/engine/jobs/{id}/approve",
            operation_id="approveJob",
            tags=API_TAGS,
            parameters=(JOB_PATH,),
            security=(SESSION_CSRF,),
            summary="Approve a job's open run request as the signed-in user; the last approval starts the job. "
            "Refused under SAFE_MODE like a run.",
            request_body=APPROVE_BODY,
            responses={
                "202": response("Approved: RUNNING, or READY waiting for more approvals.", ref("Accepted")),
                **errors(
                    *MUTATION,
                    NO_JOB,
                    ErrorCase(status=403, code=E.SAFE_MODE, when="SAFE_MODE is on; the engine is not called"),
                    ErrorCase(status=403, code=E.SELF_APPROVAL, when="the signed-in user requested this run"),
                    ErrorCase(status=409, code=E.ALREADY_APPROVED, when="the signed-in user already approved it"),
                    ErrorCase(status=409, code=E.PLAN_CHANGED, when="another plan than the requested one"),
                    ErrorCase(status=409, code=E.TYPE_BUSY, when="an exclusive type is busy"),
                    ErrorCase(status=400, code=E.UNKNOWN_TYPE, when="the job's type left the catalog"),
                    NO_REQUEST,
                    RAN,
                    FINISHED,
                ),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=reject_job,
        operation=Operation(
            method="POST",
            path="/api/admin/engine/jobs/{id}/reject",
            operation_id="rejectJob",
            tags=API_TAGS,
            parameters=(JOB_PATH,),
            security=(SESSION_CSRF,),
            summary="Reject a job's open run request, with a reason (allowed under SAFE_MODE: it starts nothing).",
            request_body=REJECT_BODY,
            responses={
                "202": response("Rejected: the job stays READY.", ref("Accepted")),
                **errors(*MUTATION, NO_JOB, NO_REQUEST, RAN, FINISHED),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=withdraw_job,
        operation=Operation(
            method="POST",
            path="/api/admin/engine/jobs/{id}/withdraw",
            operation_id="withdrawJob",
            tags=API_TAGS,
            parameters=(JOB_PATH,),
            security=(SESSION_CSRF,),
            summary="Withdraw one's own open run request (allowed under SAFE_MODE: it starts nothing).",
            request_body=WITHDRAW_BODY,
            responses={
                "202": response("Withdrawn: the job stays READY.", ref("Accepted")),
                **errors(
                    *MUTATION,
                    NO_JOB,
                    ErrorCase(status=403, code=E.NOT_REQUESTER, when="the signed-in user did not request this run"),
                    NO_REQUEST,
                    RAN,
                    FINISHED,
                ),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=plan_job,
        operation=Operation(
            method="POST",
            path="/api/admin/engine/jobs/{id}/plan",
            operation_id="planJob",
            tags=API_TAGS,
            parameters=(JOB_PATH,),
            security=(SESSION_CSRF,),
            summary="Show what a READY job's run would do: run its type's plan (dry run). Guarded like a run.",
            description="Guards in order: session and role, CSRF, SAFE_MODE (a plan is a process: refused like a "
            "run, recorded as `safe_mode_refused` with `operation: plan`), then the engine, which runs the plan and "
            "answers its output and the SHA-256 of it; the job does not change. The gateway waits for the engine "
            f"up to {PLAN_ANSWER_WITHIN:g} s. Recorded as `job_plan_requested` and `job_plan` (with `sha256`).",
            request_body=body(closed_object({}), required=False, media=MUTATION_MEDIA),
            responses={
                "200": response("What the plan printed and how it ended.", ref("Plan")),
                **errors(
                    *MUTATION,
                    NO_JOB,
                    SAFE_MODE_ON,
                    *PLAN_REFUSALS,
                ),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=request_override,
        operation=Operation(
            method="POST",
            path="/api/admin/safe-mode/override",
            operation_id="requestSafeModeOverride",
            tags=API_TAGS,
            security=(SESSION_CSRF,),
            summary="Ask for a break-glass window under SAFE_MODE (1–60 minutes, default 15); "
            "a second super_admin must approve it.",
            request_body=body(
                closed_object(
                    {
                        "reason": {"type": "string", "minLength": 1, "maxLength": MAX_REASON_CHARS},
                        "minutes": {"type": ["integer", "string", "null"], "description": "1 to 60; default 15."},
                    },
                    required=("reason",),
                ),
                media=MUTATION_MEDIA,
                example={"reason": "INC-1234: rebuild the search index now", "minutes": 15},
            ),
            responses={
                "201": response("The window, waiting for approval.", ref("SafeModeOverrideAnswer")),
                **errors(
                    *MUTATION,
                    ErrorCase(status=409, code=E.SAFE_MODE_OFF, when="SAFE_MODE is off on this gateway"),
                    ErrorCase(status=409, code=E.OVERRIDE_ACTIVE, when="a window is already requested or open"),
                ),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=get_run_requests,
        operation=Operation(
            method="GET",
            path="/api/admin/engine/run-requests",
            operation_id="listRunRequests",
            tags=API_TAGS,
            parameters=(passthrough("limit", f"At most this many (1 to {MAX_PAGE_LIMIT})."),),
            summary="The jobs whose run request waits for approval, the soonest to expire first (the engine's).",
            responses={
                "200": response("Jobs, each with its open `runRequest`.", {"type": "array", "items": ref("Job")}),
                **errors(
                    TOO_LONG_QUERY,
                    ErrorCase(status=400, code=E.INVALID_FIELD, when="the engine refused `limit`"),
                    *API_AUTH,
                    *ENGINE_READ,
                ),
            },
        ),
    ),
    _window_route(
        "approve",
        approve_override,
        "approveSafeModeOverride",
        "Approve a break-glass window: it opens now for its minutes. Never by its requester.",
        "The window, open.",
        ErrorCase(status=403, code=E.SELF_APPROVAL, when="you asked for this window"),
    ),
    _window_route(
        "end",
        end_override,
        "endSafeModeOverride",
        "End a break-glass window now (any super_admin), or withdraw a pending request.",
        "The window, ended.",
    ),
)
