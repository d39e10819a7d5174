"""The run request routes (two-person rule): approve, reject and withdraw a job's run request.

A RUN of a type that needs approval opens the request (``POST /api/jobs/{id}/run``,
:mod:`engine_hub.http.jobs`); these routes act on it, for the admin token only,
each recording its actor (``X-Engine-Actor``). The logic is
:class:`engine_hub.jobs.approvals.RunRequests`.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from engine_hub.errors import EngineError
from engine_hub.http.auth import principal, source
from engine_hub.http.jobs import accepted, json_bytes, open_override, optional_text, reject_unknown_query, required_text
from engine_hub.http.schemas import (
    ACTOR,
    ADMIN_AUTH,
    APPROVE_BODY,
    BAD_FIELD,
    BAD_JSON,
    BAD_QUERY,
    FINISHED,
    JOB_PATH,
    JOURNAL,
    NO_JOB,
    NO_REQUEST,
    NOT_READY_NODE,
    RAN,
    REJECT_BODY,
    SUBMIT_AUTH,
    TOO_LARGE,
    UNKNOWN_FIELD,
    UNKNOWN_QUERY,
    WITHDRAW_BODY,
    E,
    limit,
)
from engine_hub.jobs.approvals import check_plan_sha256
from engine_hub.jobs.service import SERVICE
from engine_hub.store.requests import has_expired, is_open, request_of
from shared.contract import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, MAX_REASON_CHARS, JobStatus, format_time
from shared.openapi import ErrorCase, Operation, errors, ref, response
from shared.routes import Access, Handler, Route, RouteTable
from shared.web import parse_int_query, read_json_object

JOBS: Final = ("jobs",)
#: What every run request change can answer besides its own refusals.
CHANGE_ERRORS: Final = (
    NO_JOB,
    BAD_JSON,
    UNKNOWN_FIELD,
    BAD_FIELD,
    FINISHED,
    NO_REQUEST,
    RAN,
    TOO_LARGE,
    JOURNAL,
    *ADMIN_AUTH,
)


async def list_requests(request: web.Request) -> web.Response:
    """``GET /api/run-requests?limit=N``: the jobs whose run request is open, the soonest to expire first.

    A request past its expiry that the sweep has not closed yet is left out: nobody can approve it.
    """
    reject_unknown_query(request, ("limit",))
    most = parse_int_query(request, "limit", default=DEFAULT_PAGE_LIMIT, low=1, high=MAX_PAGE_LIMIT, error=EngineError)
    service = request.app[SERVICE]
    now = format_time(service.requests.clock()) or ""
    waiting = sorted((expires, job_id) for job_id, expires in await service.backend.open_requests())
    bodies: list[bytes] = []
    for expires, job_id in waiting:
        if len(bodies) == most:
            break
        entry = await service.backend.get(job_id)
        # Closed or started since the list was read: not waiting any more.
        if entry is not None and not has_expired({"expiresAt": expires}, now) and is_open(request_of(entry)):
            bodies.append(entry.encoded)
    return json_bytes(b"[" + b",".join(bodies) + b"]")


async def approve_job(request: web.Request) -> web.Response:
    """``POST /api/jobs/{id}/approve`` ``{reason?, planSha256?, overrideId?}``: 202; the last approval starts the job.

    ``overrideId`` as for a run (:func:`engine_hub.http.jobs.open_override`): the window the start is made in.
    """
    body = await read_json_object(request, allowed=("reason", "planSha256", "overrideId"), error=EngineError)
    reason = optional_text(body, "reason", max_chars=MAX_REASON_CHARS)
    plan = check_plan_sha256(body.get("planSha256"))
    override_id = await open_override(request, body)
    who = principal(request)
    entry = await request.app[SERVICE].requests.approve(
        job_id=request.match_info["id"],
        reason=reason,
        plan_sha256=plan,
        actor=who.actor,
        source=source(request),
        override_id=override_id,
    )
    if entry.status is JobStatus.READY:
        return accepted(entry, "Approval recorded: more approvals are needed")
    return accepted(entry, "Approved: job execution started")


async def reject_job(request: web.Request) -> web.Response:
    """``POST /api/jobs/{id}/reject`` ``{reason}``: 202; the run request is closed and the job stays READY."""
    body = await read_json_object(request, allowed=("reason",), required=True, error=EngineError)
    reason = required_text(body, "reason", max_chars=MAX_REASON_CHARS)
    who = principal(request)
    entry = await request.app[SERVICE].requests.reject(
        job_id=request.match_info["id"], reason=reason, actor=who.actor, source=source(request)
    )
    return accepted(entry, "Run request rejected")


async def withdraw_job(request: web.Request) -> web.Response:
    """``POST /api/jobs/{id}/withdraw`` ``{reason?}``: 202; the requester closes their run request."""
    body = await read_json_object(request, allowed=("reason",), error=EngineError)
    reason = optional_text(body, "reason", max_chars=MAX_REASON_CHARS)
    who = principal(request)
    entry = await request.app[SERVICE].requests.withdraw(
        job_id=request.match_info["id"], reason=reason, actor=who.actor, source=source(request)
    )
    return accepted(entry, "Run request withdrawn")


def _closing(
    verb: str, handler: Handler, summary: str, request_body: dict[str, Any], done: str, *refusals: ErrorCase
) -> Route:
    """The row of a change that closes a job's run request (``reject``, ``withdraw``)."""
    return Route(
        name=f"job_{verb}",
        handler=handler,
        access=Access.ADMIN_TOKEN,
        operation=Operation(
            method="POST",
            path=f"/api/jobs/{{id}}/{verb}",
            operation_id=f"{verb}Job",
            tags=JOBS,
            parameters=(JOB_PATH, ACTOR),
            summary=summary,
            request_body=request_body,
            responses={
                "202": response(f"{done}: the job is READY, its request closed.", ref("Accepted")),
                **errors(*CHANGE_ERRORS, *refusals),
            },
        ),
    )


#: The rows of :data:`engine_hub.http.routes.ROUTES` for run requests.
ROUTES: Final[RouteTable] = (
    Route(
        name="run_requests",
        handler=list_requests,
        access=Access.SUBMIT,
        operation=Operation(
            method="GET",
            path="/api/run-requests",
            operation_id="listRunRequests",
            tags=JOBS,
            parameters=(limit(DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT), ACTOR),
            summary="The jobs whose run request waits for approval, the soonest to expire first.",
            responses={
                "200": response("Jobs, each with its open `runRequest`.", {"type": "array", "items": ref("Job")}),
                **errors(UNKNOWN_QUERY, BAD_QUERY, *SUBMIT_AUTH),
            },
        ),
    ),
    Route(
        name="job_approve",
        handler=approve_job,
        access=Access.ADMIN_TOKEN,
        operation=Operation(
            method="POST",
            path="/api/jobs/{id}/approve",
            operation_id="approveJob",
            tags=JOBS,
            parameters=(JOB_PATH, ACTOR),
            summary="Approve the job's open run request; the approval that completes it starts the job.",
            description="Never by the requester. With `planSha256` differing from the request's, the request "
            "is closed as superseded (409 `plan_changed`).",
            request_body=APPROVE_BODY,
            responses={
                "202": response("Approved: the job is RUNNING, or READY waiting for more approvals.", ref("Accepted")),
                **errors(
                    *CHANGE_ERRORS,
                    ErrorCase(status=400, code=E.UNKNOWN_TYPE, when="the job's type left the catalog"),
                    ErrorCase(status=403, code=E.SELF_APPROVAL, when="the actor requested this run"),
                    ErrorCase(status=409, code=E.ALREADY_APPROVED, when="the actor has already approved it"),
                    ErrorCase(status=409, code=E.PLAN_CHANGED, when="the approved plan is not the requested one"),
                    ErrorCase(
                        status=409, code=E.OVERRIDE_CLOSED, when="`overrideId` names no SAFE_MODE window open now"
                    ),
                    ErrorCase(status=409, code=E.TYPE_BUSY, when="an exclusive type already has a RUNNING job"),
                    NOT_READY_NODE,
                ),
            },
        ),
    ),
    _closing(
        "reject",
        reject_job,
        "Reject the job's open run request, with a reason; the job stays READY.",
        REJECT_BODY,
        "Rejected",
    ),
    _closing(
        "withdraw",
        withdraw_job,
        "Withdraw one's own open run request; the job stays READY.",
        WITHDRAW_BODY,
        "Withdrawn",
        ErrorCase(status=403, code=E.NOT_REQUESTER, when="the actor is not the requester"),
    ),
)
