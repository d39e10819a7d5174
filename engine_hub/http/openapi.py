"""The engine's published contract: its OpenAPI 3.1 document, served at ``GET /openapi.json``.

Every route of :mod:`engine_hub.http.jobs` and :mod:`engine_hub.http.legacy`
is declared here with every answer it can give, errors included. The
document is checked against the real router by the test suite (both
directions) and fuzzed by Schemathesis against a live engine, so a route
without a declaration, a declaration without a route, an undeclared status
or a body that does not match its schema fails the build.

``/openapi.json`` needs a token like every route but ``/healthz`` (deny by
default); submit-scope client tokens may read it (they need the contract too).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from engine_hub.http.jobs import MAX_CURSOR
from shared.contract import DEFAULT_PAGE_LIMIT as DEFAULT_LIMIT
from shared.contract import MAX_NAME_CHARS, MAX_REASON_CHARS
from shared.contract import MAX_PAGE_LIMIT as MAX_LIMIT
from engine_hub.http.legacy import LOGS_DEFAULT_LIMIT, LOGS_MAX_LIMIT, RESULTS_DEFAULT_LIMIT, RESULTS_MAX_LIMIT
from engine_hub.run.logs import MAX_READ_LINES
from engine_hub.settings import ACTOR_HEADER
from shared.contract import MAX_JSON_DEPTH, ErrorCode, JobStatus
from shared.openapi import (
    JOB_ID,
    ErrorCase,
    Operation,
    OperationKey,
    body,
    build_document,
    closed_object,
    contract_schemas,
    errors,
    header,
    header_param,
    path,
    query,
    ref,
    response,
    setup_openapi,
)
from shared.contract import MAX_BODY

TITLE: Final = "Engine Jobs: engine_hub"
VERSION: Final = "1.0.0"

#: Route names of this module open to submit-scope client tokens.
SUBMIT_ROUTES: Final = frozenset({("GET", "openapi")})

# -- failures shared by many routes -----------------------------------------------------------

E = ErrorCode
NO_TOKEN = ErrorCase(
    status=401,
    code=E.UNAUTHORIZED,
    when="no bearer token, or a wrong one",
    headers={"WWW-Authenticate": header('Bearer realm="engine-hub"')},
)
SCOPE = ErrorCase(
    status=403,
    code=E.FORBIDDEN,
    when=f"a submit-scope token on an admin-only route, or {ACTOR_HEADER} sent with a client token",
)
ACTOR_ONLY = ErrorCase(status=403, code=E.FORBIDDEN, when=f"{ACTOR_HEADER} sent with a client token")
BAD_ACTOR = ErrorCase(status=400, code=E.INVALID_FIELD, when=f"{ACTOR_HEADER} is empty, too long or not printable")
UNKNOWN_QUERY = ErrorCase(status=400, code=E.UNKNOWN_FIELD, when="a query parameter the route does not take")
BAD_QUERY = ErrorCase(status=400, code=E.INVALID_FIELD, when="a query parameter out of range or of the wrong type")
BAD_JSON = ErrorCase(
    status=400,
    code=E.INVALID_JSON,
    when=f"the body is not a JSON object, or nests more than {MAX_JSON_DEPTH} levels deep",
)
UNKNOWN_FIELD = ErrorCase(status=400, code=E.UNKNOWN_FIELD, when="the body has a field the route does not take")
BAD_FIELD = ErrorCase(status=400, code=E.INVALID_FIELD, when="a body field has a wrong type or value")
TOO_LARGE = ErrorCase(status=413, code=E.PAYLOAD_TOO_LARGE, when=f"the body is larger than {MAX_BODY} bytes")
NO_JOB = ErrorCase(status=404, code=E.NOT_FOUND, when="no job has this id")
JOURNAL = ErrorCase(
    status=503, code=E.JOURNAL_UNAVAILABLE, when="the journal cannot make the change durable, so nothing changed"
)

#: Failures of every route needing a token: admin-only, and open to client tokens.
ADMIN_AUTH: Final = (NO_TOKEN, SCOPE, BAD_ACTOR)
SUBMIT_AUTH: Final = (NO_TOKEN, ACTOR_ONLY, BAD_ACTOR)

ACTOR = header_param(
    ACTOR_HEADER,
    {"type": "string", "minLength": 1, "maxLength": 128},
    "Admin token only: the human the request acts for, recorded as createdBy/runBy.",
)
LINK = header('`<…>; rel="next"`: the URL of the next (older) page; absent on the last page.', required=False)
LOCATION = header("The new job's URL, `/api/jobs/{id}`.")


def _limit(default: int, high: int) -> dict[str, Any]:
    return query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": high, "default": default},
        f"How many entries (1 to {high}; default {default}).",
    )


_STATUSES = [str(s) for s in JobStatus]
LIST_PARAMS: Final = (
    _limit(DEFAULT_LIMIT, MAX_LIMIT),
    query(
        "status",
        {"type": "string", "enum": _STATUSES + [s.lower() for s in _STATUSES]},
        "Only jobs in this status (any case).",
    ),
    query("type", {"type": "string"}, "Only jobs of this type (a catalog type, or one a stored job has)."),
    query("before", JOB_ID, "Cursor: the page after this job (from the `Link` header)."),
    ACTOR,
)
JOB_PATH = path("id", {"type": "string"}, "The job's id.")
LIST_RESPONSES: Final = {
    "200": response("Jobs, newest first.", {"type": "array", "items": ref("Job")}, headers={"Link": LINK}),
    **errors(UNKNOWN_QUERY, BAD_QUERY, *SUBMIT_AUTH),
}
CREATE_BODY = closed_object(
    {
        "type": {"type": "string", "minLength": 1, "description": "A job type from `GET /api/types`."},
        "name": {
            "type": ["string", "null"],
            "minLength": 1,
            "maxLength": MAX_NAME_CHARS,
            "description": "Single line; defaults to the type's name.",
        },
        "params": {"type": ["object", "null"], "description": "Params declared by the type; defaults filled in."},
    },
    required=("type",),
)


def _ops() -> list[Operation]:
    jobs, compat, ops = ("jobs",), ("compat",), ("operations",)
    return [
        Operation(
            method="GET",
            path="/healthz",
            operation_id="healthz",
            tags=ops,
            security=(),
            summary="Liveness (no token).",
            description="`degraded` while the journal cannot write: reads work, changes answer 503.",
            responses={
                "200": response(
                    "The engine answers.",
                    closed_object({"status": {"type": "string", "enum": ["ok", "degraded"]}}, required=("status",)),
                )
            },
        ),
        Operation(
            method="GET",
            path="/metrics",
            operation_id="metrics",
            tags=ops,
            parameters=(ACTOR,),
            summary="Prometheus metrics (text exposition 0.0.4).",
            responses={
                "200": response(
                    "Jobs by status, runs started/finished/failed, request latency.",
                    {"type": "string"},
                    media="text/plain",
                ),
                **errors(*ADMIN_AUTH),
            },
        ),
        Operation(
            method="GET",
            path="/openapi.json",
            operation_id="openapi",
            tags=ops,
            parameters=(ACTOR,),
            summary="This document.",
            responses={"200": response("The OpenAPI 3.1 document.", {"type": "object"}), **errors(*SUBMIT_AUTH)},
        ),
        Operation(
            method="GET",
            path="/api/types",
            operation_id="listTypes",
            tags=jobs,
            parameters=(ACTOR,),
            summary="The job type catalog with param declarations (never commands).",
            responses={
                "200": response("Every type, by name.", {"type": "array", "items": ref("JobType")}),
                **errors(UNKNOWN_QUERY, *SUBMIT_AUTH),
            },
        ),
        Operation(
            method="GET",
            path="/api/jobs",
            operation_id="listJobs",
            tags=jobs,
            parameters=LIST_PARAMS,
            summary="Jobs, newest first, paged by `before` (see the `Link` header).",
            responses=LIST_RESPONSES,
        ),
        Operation(
            method="POST",
            path="/api/jobs",
            operation_id="createJob",
            tags=jobs,
            parameters=(ACTOR,),
            summary="Create a READY job (runs nothing).",
            request_body=body(CREATE_BODY, example={"type": "demo.echo", "params": {"message": "hi"}}),
            responses={
                "201": response("The new job, READY.", ref("Job"), headers={"Location": LOCATION}),
                **errors(
                    BAD_JSON,
                    UNKNOWN_FIELD,
                    BAD_FIELD,
                    ErrorCase(status=400, code=E.UNKNOWN_TYPE, when="the type is not in the catalog"),
                    ErrorCase(
                        status=400,
                        code=E.INVALID_PARAM,
                        when="params the type does not declare, or of a wrong type or value",
                    ),
                    TOO_LARGE,
                    JOURNAL,
                    *SUBMIT_AUTH,
                ),
            },
        ),
        Operation(
            method="GET",
            path="/api/jobs/{id}",
            operation_id="getJob",
            tags=jobs,
            parameters=(JOB_PATH, ACTOR),
            summary="One job with its status history.",
            responses={"200": response("The job.", ref("Job")), **errors(NO_JOB, UNKNOWN_QUERY, *SUBMIT_AUTH)},
        ),
        Operation(
            method="POST",
            path="/api/jobs/{id}",
            operation_id="refuseJobPost",
            tags=jobs,
            parameters=(JOB_PATH, ACTOR),
            summary="Always 405: only `/run` runs a job (the original system ran it here).",
            responses=errors(
                ErrorCase(
                    status=405,
                    code=E.METHOD_NOT_ALLOWED,
                    when="always; use POST /api/jobs/{id}/run",
                    headers={"Allow": header("`GET, HEAD`")},
                ),
                *ADMIN_AUTH,
            ),
        ),
        Operation(
            method="POST",
            path="/api/jobs/{id}/run",
            operation_id="runJob",
            tags=jobs,
            parameters=(JOB_PATH, ACTOR),
            summary="Run a READY job: at most once, ever. Admin token only.",
            request_body=body(
                closed_object(
                    {
                        "reason": {
                            "type": ["string", "null"],
                            "minLength": 1,
                            "maxLength": MAX_REASON_CHARS,
                            "description": "Why (single line); stored as runReason.",
                        }
                    }
                ),
                required=False,
                example={"reason": "ticket OPS-42"},
            ),
            responses={
                "202": response("Started: the job is RUNNING.", ref("Accepted")),
                **errors(
                    NO_JOB,
                    BAD_JSON,
                    UNKNOWN_FIELD,
                    BAD_FIELD,
                    ErrorCase(status=400, code=E.NOT_READY, when="the job is DONE or FAILED: it never runs again"),
                    ErrorCase(status=400, code=E.UNKNOWN_TYPE, when="the job's type left the catalog"),
                    ErrorCase(status=409, code=E.ALREADY_RUNNING, when="the job is RUNNING or being started"),
                    ErrorCase(status=409, code=E.TYPE_BUSY, when="an exclusive type already has a RUNNING job"),
                    TOO_LARGE,
                    JOURNAL,
                    *ADMIN_AUTH,
                ),
            },
        ),
        Operation(
            method="POST",
            path="/api/jobs/{id}/cancel",
            operation_id="cancelJob",
            tags=jobs,
            parameters=(JOB_PATH, ACTOR),
            summary='Stop a RUNNING job\'s whole process group; it ends FAILED "cancelled by <actor>".',
            request_body=body(closed_object({}), required=False),
            responses={
                "202": response("Cancellation requested.", ref("Accepted")),
                **errors(
                    NO_JOB,
                    BAD_JSON,
                    UNKNOWN_FIELD,
                    ErrorCase(status=400, code=E.NOT_READY, when="the job has already finished"),
                    ErrorCase(status=409, code=E.NOT_RUNNING, when="the job is READY (not running)"),
                    TOO_LARGE,
                    JOURNAL,
                    *ADMIN_AUTH,
                ),
            },
        ),
        Operation(
            method="GET",
            path="/api/jobs/{id}/logs",
            operation_id="getJobLogs",
            tags=jobs,
            parameters=(
                JOB_PATH,
                query(
                    "after",
                    {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR, "default": 0},
                    "Only lines with seq > after (pass the previous answer's `next`).",
                ),
                _limit(MAX_READ_LINES, MAX_READ_LINES),
                ACTOR,
            ),
            summary="A job's captured stdout/stderr, oldest first.",
            responses={
                "200": response("Lines after the cursor.", ref("LogPage")),
                **errors(
                    NO_JOB,
                    UNKNOWN_QUERY,
                    BAD_QUERY,
                    *SUBMIT_AUTH,
                    ErrorCase(
                        status=404, code=E.LOG_EXPIRED, when="log retention deleted the job's output (the job stays)"
                    ),
                ),
            },
        ),
        # -- compatibility with the original system --
        *(
            Operation(
                method="GET",
                path=p,
                operation_id=op_id,
                tags=compat,
                parameters=(_limit(RESULTS_DEFAULT_LIMIT, RESULTS_MAX_LIMIT), ACTOR),
                summary="Legacy: the newest JobResults (finished jobs), oldest first.",
                responses={
                    "200": response("JobResults.", {"type": "array", "items": ref("JobResult")}),
                    **errors(UNKNOWN_QUERY, BAD_QUERY, *SUBMIT_AUTH),
                },
            )
            for p, op_id in (("/api/jobs/results", "jobResults"), ("/engines/jobs/results", "jobResultsLegacy"))
        ),
        *(
            Operation(
                method="GET",
                path=p,
                operation_id=op_id,
                tags=compat,
                parameters=(_limit(LOGS_DEFAULT_LIMIT, LOGS_MAX_LIMIT), ACTOR),
                summary="Legacy: the newest EngineLog entries, oldest first.",
                responses={
                    "200": response("EngineLogs.", {"type": "array", "items": ref("EngineLog")}),
                    **errors(UNKNOWN_QUERY, BAD_QUERY, *SUBMIT_AUTH),
                },
            )
            for p, op_id in (
                ("/api/engines/logs", "engineLogs"),
                ("/engines/logs", "engineLogsLegacy"),
                ("/logs", "logsLegacy"),
            )
        ),
        Operation(
            method="GET",
            path="/engines/jobs",
            operation_id="listJobsLegacy",
            tags=compat,
            parameters=LIST_PARAMS,
            summary="Legacy: the same list as `GET /api/jobs`.",
            responses=LIST_RESPONSES,
        ),
        Operation(
            method="POST",
            path="/engines/jobs/run",
            operation_id="createJobLegacy",
            tags=compat,
            parameters=(ACTOR,),
            summary="Legacy: CREATE a READY job of type `engine`. Despite the name, it never runs it.",
            request_body=body(
                closed_object(
                    {
                        "engine": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
                        "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
                    },
                    required=("engine", "name"),
                ),
                example={"engine": "demo.echo", "name": "nightly greeting"},
            ),
            responses={
                "202": response("The new job, READY (not started).", ref("Job"), headers={"Location": LOCATION}),
                **errors(
                    BAD_JSON,
                    UNKNOWN_FIELD,
                    BAD_FIELD,
                    ErrorCase(status=400, code=E.UNKNOWN_TYPE, when="`engine` is not a catalog type"),
                    ErrorCase(status=400, code=E.INVALID_PARAM, when="the type has a required param"),
                    TOO_LARGE,
                    JOURNAL,
                    *SUBMIT_AUTH,
                ),
            },
        ),
        # -- the journal, read over HTTP (added by the durability work) --
        Operation(
            method="GET",
            path="/api/audit",
            operation_id="listAudit",
            tags=ops,
            parameters=(
                query("jobId", {"type": "string"}, "Only records of this job."),
                query("actor", {"type": "string"}, "Only records by this actor."),
                query("since", {"type": "string", "format": "date-time"}, "Only records at or after this time."),
                query("until", {"type": "string", "format": "date-time"}, "Only records before this time."),
                _limit(100, 1000),
                query("before", {"type": "integer", "minimum": 1}, "Cursor: records with a smaller seq."),
                ACTOR,
            ),
            summary="The engine's hash-chained journal, newest first. Admin token only.",
            responses={
                "200": response("Records.", {"type": "array", "items": ref("AuditRecord")}, headers={"Link": LINK}),
                **errors(UNKNOWN_QUERY, BAD_QUERY, *ADMIN_AUTH),
            },
        ),
    ]


OPERATIONS: Final = tuple(_ops())


def document(routes: set[OperationKey] | None = None) -> dict[str, Any]:
    """Return the engine's OpenAPI document (``routes``: see :func:`shared.openapi.build_document`)."""
    return build_document(
        info={
            "title": TITLE,
            "version": VERSION,
            "description": "The engine's raw HTTP contract. Every answer is JSON (`/metrics` is Prometheus "
            'text); every error is `{"error", "code"}`. Human guide: docs/api.md.',
        },
        operations=OPERATIONS,
        routes=routes,
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
            {"name": "operations", "description": "Health, metrics, journal, this document."},
        ),
        common_headers={"X-Request-Id": header("The request id (also in the engine's request log).")},
    )


def setup(app: web.Application) -> None:
    """Serve the document at ``GET /openapi.json``; call after every other route is added."""
    setup_openapi(app, document)


__all__ = ["OPERATIONS", "SUBMIT_ROUTES", "document", "setup"]
