"""The admin JSON API's rows of the gateway's route table: config, the engine proxy, the audit timeline."""

from __future__ import annotations

from typing import Final

from admin_gateway.http import events
from admin_gateway.http.admin_api import (
    cancel_job,
    create_job,
    get_config,
    get_engine_logs,
    get_job,
    get_job_logs,
    get_types,
    list_jobs,
)
from admin_gateway.http.audit_page import export_audit, get_audit
from admin_gateway.http.job_changes import copy_job, run_job
from admin_gateway.http.log_download import get_job_log_text
from admin_gateway.http.routes.governance import GOVERNANCE
from admin_gateway.http.schemas import (
    API_AUTH,
    API_TAGS,
    AUDIT_DOWN,
    AUDIT_FILTER_PARAMS,
    AUDIT_FILTERS,
    CONFIG,
    ENGINE_DOWN,
    ENGINE_READ,
    JOB_PATH,
    JOBS_ENVELOPE,
    LOGS_ENVELOPE,
    MUTATION,
    MUTATION_MEDIA,
    NO_JOB,
    NO_SESSION,
    PASSWORD_FIRST,
    PLAN_SHA256,
    REASON,
    SAFE_MODE_ON,
    SESSION_CSRF,
    TIMELINE,
    TOO_LONG_QUERY,
    E,
    passthrough,
)
from shared.contract import MAX_NAME_CHARS, MAX_PAGE_LIMIT
from shared.openapi import (
    ErrorCase,
    Operation,
    body,
    closed_object,
    errors,
    header,
    query,
    ref,
    response,
)
from shared.routes import Access, Route, RouteTable

API: Final[RouteTable] = (
    Route(
        access=Access.SESSION,
        handler=get_config,
        operation=Operation(
            method="GET",
            path="/api/admin/config",
            operation_id="config",
            tags=API_TAGS,
            summary="Who I am, my role, SAFE_MODE, and the CSRF token for fetch (any signed-in user).",
            responses={"200": response("The panel's configuration.", CONFIG), **errors(NO_SESSION, PASSWORD_FIRST)},
        ),
    ),
    Route(access=Access.SESSION, handler=events.stream_events, operation=events.OPERATION),
    Route(
        access=Access.SUPER_ADMIN,
        handler=list_jobs,
        operation=Operation(
            method="GET",
            path="/api/admin/engine/jobs",
            operation_id="listJobs",
            tags=API_TAGS,
            parameters=(
                passthrough("limit", f"Page size (1 to {MAX_PAGE_LIMIT})."),
                passthrough("status", "READY, RUNNING, DONE or FAILED."),
                passthrough("type", "A job type."),
                passthrough("before", "Cursor: `next` of a page."),
                passthrough("q", "Only jobs whose name contains this text, in any case (1 to 200 characters)."),
            ),
            summary='Jobs, newest first. 200 even when the engine is down (`engine: "down"`, a `warning`).',
            responses={
                "200": response("A page of jobs, or an empty list and why.", JOBS_ENVELOPE),
                **errors(
                    TOO_LONG_QUERY,
                    ErrorCase(status=400, code=E.INVALID_FIELD, when="the engine refused a filter value"),
                    *API_AUTH,
                ),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=create_job,
        operation=Operation(
            method="POST",
            path="/api/admin/engine/jobs",
            operation_id="createJob",
            tags=API_TAGS,
            security=(SESSION_CSRF,),
            summary="Create a READY job (allowed under SAFE_MODE: creating runs nothing).",
            request_body=body(
                closed_object(
                    {
                        "type": {"type": "string", "minLength": 1},
                        "name": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_NAME_CHARS},
                        "params": {"type": ["object", "null"]},
                    },
                    required=("type",),
                ),
                media=MUTATION_MEDIA,
                example={"type": "demo.echo", "params": {"message": "hi"}},
            ),
            responses={
                "201": response("The new job, READY.", ref("Job")),
                **errors(
                    *MUTATION,
                    ErrorCase(status=400, code=E.UNKNOWN_TYPE, when="the engine has no such type"),
                    ErrorCase(status=400, code=E.INVALID_PARAM, when="the engine refused the params"),
                ),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=get_job,
        operation=Operation(
            method="GET",
            path="/api/admin/engine/jobs/{id}",
            operation_id="getJob",
            tags=API_TAGS,
            parameters=(JOB_PATH,),
            summary="One job with its status history, as the engine has it.",
            responses={"200": response("The job.", ref("Job")), **errors(NO_JOB, *API_AUTH, *ENGINE_READ)},
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=get_job_log_text,
        operation=Operation(
            method="GET",
            path="/api/admin/engine/jobs/{id}/logs.txt",
            operation_id="getJobLogText",
            tags=API_TAGS,
            parameters=(JOB_PATH,),
            summary="A job's captured output as a plain-text download (`job-<id>.log`), streamed from the engine.",
            responses={
                "200": {
                    "description": "The job's output, its lines joined by a newline (empty when it printed nothing).",
                    "headers": {"Content-Disposition": header('`attachment; filename="job-<id>.log"`.')},
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **errors(
                    NO_JOB,
                    ErrorCase(
                        status=404, code=E.LOG_EXPIRED, when="the engine's log retention deleted the job's output"
                    ),
                    *API_AUTH,
                    *ENGINE_READ,
                ),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=get_job_logs,
        operation=Operation(
            method="GET",
            path="/api/admin/engine/jobs/{id}/logs",
            operation_id="getJobLogs",
            tags=API_TAGS,
            parameters=(
                JOB_PATH,
                passthrough("after", "Only lines after this seq."),
                passthrough("limit", "At most this many lines (1 to 5000)."),
            ),
            summary="A job's captured output after a cursor.",
            responses={
                "200": response("Lines.", ref("LogPage")),
                **errors(
                    NO_JOB,
                    TOO_LONG_QUERY,
                    ErrorCase(status=400, code=E.INVALID_FIELD, when="the engine refused `after` or `limit`"),
                    ErrorCase(
                        status=404, code=E.LOG_EXPIRED, when="the engine's log retention deleted the job's output"
                    ),
                    *API_AUTH,
                    *ENGINE_READ,
                ),
            },
        ),
    ),
    # Before /run: the access matrix walks the table in order, and these expect the job not yet run.
    *GOVERNANCE,
    Route(
        access=Access.SUPER_ADMIN,
        handler=run_job,
        operation=Operation(
            method="POST",
            path="/api/admin/engine/jobs/{id}/run",
            operation_id="runJob",
            tags=API_TAGS,
            parameters=(JOB_PATH,),
            security=(SESSION_CSRF,),
            summary="Run a READY job. Guards in order: session and role, CSRF, SAFE_MODE, then the engine.",
            description="For a type that needs approval the engine opens a run request instead (the job stays "
            "READY); other super_admins approve it (`/approve`).",
            request_body=body(
                closed_object({"reason": REASON, "planSha256": PLAN_SHA256}),
                required=False,
                media=MUTATION_MEDIA,
                example={"reason": "ticket OPS-42"},
            ),
            responses={
                "202": response("Started.", ref("Accepted")),
                **errors(
                    *MUTATION,
                    NO_JOB,
                    SAFE_MODE_ON,
                    ErrorCase(
                        status=409,
                        code=E.OVERRIDE_CLOSED,
                        when="the window this gateway saw open was ended at another gateway a moment ago",
                    ),
                    ErrorCase(status=400, code=E.NOT_READY, when="the job is DONE or FAILED"),
                    ErrorCase(status=400, code=E.UNKNOWN_TYPE, when="the job's type left the catalog"),
                    ErrorCase(status=409, code=E.ALREADY_RUNNING, when="the job is already running"),
                    ErrorCase(status=409, code=E.TYPE_BUSY, when="an exclusive type is busy"),
                    ErrorCase(status=409, code=E.APPROVAL_REQUIRED, when="a run request waits for approval"),
                ),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=copy_job,
        operation=Operation(
            method="POST",
            path="/api/admin/engine/jobs/{id}/copy",
            operation_id="copyJob",
            tags=API_TAGS,
            parameters=(JOB_PATH,),
            security=(SESSION_CSRF,),
            summary="Run again: a new READY job with the type, name and params of a finished one (runs nothing; "
            "allowed under SAFE_MODE like a create). Audited as `job_create` with `copyOf`.",
            request_body=body(closed_object({}), required=False, media=MUTATION_MEDIA),
            responses={
                "201": response("The new job, READY, its `copyOf` the old job.", ref("Job")),
                **errors(
                    *MUTATION,
                    NO_JOB,
                    ErrorCase(status=409, code=E.NOT_FINISHED, when="the job is READY or RUNNING"),
                    ErrorCase(status=400, code=E.UNKNOWN_TYPE, when="the job's type left the catalog"),
                    ErrorCase(status=400, code=E.INVALID_PARAM, when="the job's params no longer fit its type"),
                ),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=cancel_job,
        operation=Operation(
            method="POST",
            path="/api/admin/engine/jobs/{id}/cancel",
            operation_id="cancelJob",
            tags=API_TAGS,
            parameters=(JOB_PATH,),
            security=(SESSION_CSRF,),
            summary="Cancel a RUNNING job (never blocked by SAFE_MODE).",
            request_body=body(closed_object({"reason": REASON}), required=False, media=MUTATION_MEDIA),
            responses={
                "202": response("Cancellation requested.", ref("Accepted")),
                **errors(
                    *MUTATION,
                    NO_JOB,
                    ErrorCase(status=400, code=E.NOT_READY, when="the job has already finished"),
                    ErrorCase(status=409, code=E.NOT_RUNNING, when="the job is READY"),
                ),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=get_types,
        operation=Operation(
            method="GET",
            path="/api/admin/engine/types",
            operation_id="listTypes",
            tags=API_TAGS,
            summary="The engine's job type catalog.",
            responses={
                "200": response("Every type.", {"type": "array", "items": ref("JobType")}),
                **errors(*API_AUTH, *ENGINE_READ),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=get_engine_logs,
        operation=Operation(
            method="GET",
            path="/api/admin/engine/logs",
            operation_id="engineLogs",
            tags=API_TAGS,
            parameters=(passthrough("limit", "How many entries (1 to 500)."),),
            summary="The engine's log; when the engine is down, 200 with `engineDown` and a `warning`.",
            responses={
                "200": response("Entries, oldest first.", LOGS_ENVELOPE),
                **errors(
                    TOO_LONG_QUERY,
                    ErrorCase(status=400, code=E.INVALID_FIELD, when="the engine refused `limit`"),
                    *API_AUTH,
                ),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=get_audit,
        operation=Operation(
            method="GET",
            path="/api/admin/audit",
            operation_id="listAudit",
            tags=API_TAGS,
            summary="The audit trail: the engine's and the gateway's records in one timeline, newest first.",
            description="Each record is a journal record plus `journal`. If the engine cannot be asked, the "
            'gateway\'s records still come, with `engine: "down"` and a `warning`.',
            parameters=AUDIT_FILTERS,
            responses={
                "200": response("One page of the timeline.", TIMELINE),
                **errors(
                    ErrorCase(status=400, code=E.INVALID_FIELD, when="a bad filter value or cursor"),
                    ErrorCase(status=400, code=E.UNKNOWN_FIELD, when="a parameter it does not take"),
                    *API_AUTH,
                ),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=export_audit,
        operation=Operation(
            method="GET",
            path="/api/admin/audit/export",
            operation_id="exportAudit",
            tags=API_TAGS,
            summary="Download the audit trail of a filter as CSV or JSON Lines, newest first (streamed).",
            description="Recorded in the gateway's journal first (`audit_export_requested`: who, filter, format), "
            "then `audit_export` with `count`. CSV text cells that start with = + - @ get a leading `'`. "
            "An export never leaves out the engine's records silently: 502 when they cannot be read.",
            parameters=(
                query("format", {"type": "string", "enum": ["csv", "jsonl"]}, "csv (the default) or jsonl."),
                *AUDIT_FILTER_PARAMS,
            ),
            responses={
                "200": response(
                    "The records as a file (`Content-Disposition: attachment`).",
                    {"type": "string"},
                    media=("text/csv", "application/jsonl"),
                    headers={"Content-Disposition": header('attachment; filename="audit-<UTC time>.<format>"')},
                ),
                **errors(
                    ErrorCase(status=400, code=E.INVALID_FIELD, when="a bad format or filter value"),
                    ErrorCase(status=400, code=E.UNKNOWN_FIELD, when="a parameter it does not take"),
                    ENGINE_DOWN,
                    AUDIT_DOWN,
                    *API_AUTH,
                ),
            },
        ),
    ),
)
