"""The engine's one route table: every route, once, in registration order.

Each row of :data:`ROUTES` is a :class:`~shared.routes.Route`: its OpenAPI
operation (method, path, operation id, every answer it can give), its
handler, its access rule and its aiohttp resource name. From this table
alone derive:

- registration and its order (``create_app`` calls ``add_table(ROUTES)``;
  fixed ``/api/jobs/<word>`` paths come before ``/api/jobs/{id}`` so they win);
- access: :func:`engine_hub.http.auth.authorize` is given each row's rule
  (``public``, ``admin_token``, or ``submit``: the admin token or a catalog
  client token of scope ``submit``); a rule the engine cannot check refuses
  to start the app;
- the OpenAPI document (:mod:`engine_hub.http.openapi`);
- the route list the access-matrix tests walk.

A new route is a new row here, with its handler in the module of its area.
"""

from __future__ import annotations

from typing import Final

from engine_hub.http import approvals, audit, copies, events, jobs, legacy, override, plans, raw_logs
from engine_hub.http.schemas import (
    ACTOR,
    ADMIN_AUTH,
    AUDIT_PARAMS,
    BAD_FIELD,
    BAD_JSON,
    BAD_QUERY,
    CREATE_BODY,
    JOB_PATH,
    JOURNAL,
    LEGACY_CREATE_BODY,
    LINK,
    LIST_PARAMS,
    LIST_RESPONSES,
    LOCATION,
    LOG_PARAMS,
    NO_JOB,
    NOT_READY_NODE,
    RUN_BODY,
    SUBMIT_AUTH,
    TOO_LARGE,
    UNKNOWN_FIELD,
    UNKNOWN_QUERY,
    E,
)
from shared.openapi import ErrorCase, Operation, body, closed_object, errors, header, openapi_json, ref, response
from shared.routes import Access, Route, RouteTable

JOBS, COMPAT, OPS = ("jobs",), ("compat",), ("operations",)


#: Every engine route, in registration order (see the module docstring).
ROUTES: Final[RouteTable] = (
    Route(
        name="readyz",
        handler=jobs.readyz,
        access=Access.PUBLIC,
        operation=Operation(
            method="GET",
            path="/readyz",
            operation_id="readyz",
            tags=OPS,
            security=(),
            summary="Readiness (no token): whether this engine can take changes and start runs.",
            description="503 `node_not_ready` while a node of a PostgreSQL store holds no registration (it fenced "
            "itself and is re-registering) or the store cannot be written; a load balancer sends elsewhere.",
            responses={
                "200": response("Ready.", closed_object({"status": {"type": "string", "enum": ["ready"]}})),
                **errors(NOT_READY_NODE),
            },
        ),
    ),
    Route(
        name="healthz",
        handler=jobs.healthz,
        access=Access.PUBLIC,
        operation=Operation(
            method="GET",
            path="/healthz",
            operation_id="healthz",
            tags=OPS,
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
    ),
    Route(
        name="metrics",
        handler=jobs.metrics,
        access=Access.ADMIN_TOKEN,
        operation=Operation(
            method="GET",
            path="/metrics",
            operation_id="metrics",
            tags=OPS,
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
    ),
    Route(
        name="types",
        handler=jobs.list_types,
        access=Access.SUBMIT,
        operation=Operation(
            method="GET",
            path="/api/types",
            operation_id="listTypes",
            tags=JOBS,
            parameters=(ACTOR,),
            summary="The job type catalog with param declarations (never commands).",
            responses={
                "200": response("Every type, by name.", {"type": "array", "items": ref("JobType")}),
                **errors(UNKNOWN_QUERY, *SUBMIT_AUTH),
            },
        ),
    ),
    Route(
        name="jobs",
        handler=jobs.list_jobs,
        access=Access.SUBMIT,
        operation=Operation(
            method="GET",
            path="/api/jobs",
            operation_id="listJobs",
            tags=JOBS,
            parameters=LIST_PARAMS,
            summary="Jobs, newest first, paged by `before` (see the `Link` header).",
            responses=LIST_RESPONSES,
        ),
    ),
    Route(
        name="jobs",
        handler=jobs.create_job,
        access=Access.SUBMIT,
        operation=Operation(
            method="POST",
            path="/api/jobs",
            operation_id="createJob",
            tags=JOBS,
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
    ),
    # -- the journal, read over HTTP --
    Route(
        name="events",
        handler=events.stream_events,
        access=Access.SUBMIT,
        operation=events.OPERATION,
    ),
    Route(
        name="audit",
        handler=audit.audit,
        access=Access.ADMIN_TOKEN,
        operation=Operation(
            method="GET",
            path="/api/audit",
            operation_id="listAudit",
            tags=OPS,
            parameters=AUDIT_PARAMS,
            summary="The engine's hash-chained journal, newest first. Admin token only.",
            responses={
                "200": response("Records.", {"type": "array", "items": ref("AuditRecord")}, headers={"Link": LINK}),
                **errors(UNKNOWN_QUERY, BAD_QUERY, *ADMIN_AUTH),
            },
        ),
    ),
    # -- compatibility with the original system (before /api/jobs/{id}: /api/jobs/results must win) --
    Route(
        name="job_results",
        handler=legacy.job_results,
        access=Access.SUBMIT,
        operation=legacy.results_operation("/api/jobs/results", "jobResults"),
    ),
    Route(
        name="job_results_legacy",
        handler=legacy.job_results,
        access=Access.SUBMIT,
        operation=legacy.results_operation("/engines/jobs/results", "jobResultsLegacy"),
    ),
    Route(
        name="engine_logs",
        handler=legacy.engine_logs,
        access=Access.SUBMIT,
        operation=legacy.engine_logs_operation("/api/engines/logs", "engineLogs"),
    ),
    Route(
        name="engine_logs_legacy",
        handler=legacy.engine_logs,
        access=Access.SUBMIT,
        operation=legacy.engine_logs_operation("/engines/logs", "engineLogsLegacy"),
    ),
    Route(
        name="logs_legacy",
        handler=legacy.engine_logs,
        access=Access.SUBMIT,
        operation=legacy.engine_logs_operation("/logs", "logsLegacy"),
    ),
    Route(
        name="jobs_legacy",
        handler=jobs.list_jobs,
        access=Access.SUBMIT,
        operation=Operation(
            method="GET",
            path="/engines/jobs",
            operation_id="listJobsLegacy",
            tags=COMPAT,
            parameters=LIST_PARAMS,
            summary="Legacy: the same list as `GET /api/jobs`.",
            responses=LIST_RESPONSES,
        ),
    ),
    Route(
        name="jobs_run_legacy",
        handler=legacy.legacy_create,
        access=Access.SUBMIT,
        operation=Operation(
            method="POST",
            path="/engines/jobs/run",
            operation_id="createJobLegacy",
            tags=COMPAT,
            parameters=(ACTOR,),
            summary="Legacy: CREATE a READY job of type `engine`. Despite the name, it never runs it.",
            request_body=LEGACY_CREATE_BODY,
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
    ),
    # -- one job --
    Route(
        name="job",
        handler=jobs.get_job,
        access=Access.SUBMIT,
        operation=Operation(
            method="GET",
            path="/api/jobs/{id}",
            operation_id="getJob",
            tags=JOBS,
            parameters=(JOB_PATH, ACTOR),
            summary="One job with its status history.",
            responses={"200": response("The job.", ref("Job")), **errors(NO_JOB, UNKNOWN_QUERY, *SUBMIT_AUTH)},
        ),
    ),
    Route(
        name="job",
        handler=jobs.refuse_job_post,
        access=Access.ADMIN_TOKEN,
        operation=Operation(
            method="POST",
            path="/api/jobs/{id}",
            operation_id="refuseJobPost",
            tags=JOBS,
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
    ),
    Route(name="job_copy", handler=copies.copy_job, access=Access.SUBMIT, operation=copies.OPERATION),
    Route(name="job_plan", handler=plans.plan_job, access=Access.ADMIN_TOKEN, operation=plans.OPERATION),
    Route(
        name="job_run",
        handler=jobs.run_job,
        access=Access.ADMIN_TOKEN,
        operation=Operation(
            method="POST",
            path="/api/jobs/{id}/run",
            operation_id="runJob",
            tags=JOBS,
            parameters=(JOB_PATH, ACTOR),
            summary="Run a READY job: at most once, ever. Admin token only.",
            description="For a type with `approval: required` this starts nothing: it opens a run request "
            "(the job stays READY, its `runRequest` open) that other people approve (`/approve`).",
            request_body=RUN_BODY,
            responses={
                "202": response(
                    "Started: the job is RUNNING; or, for a type that needs approval, its run request is open.",
                    ref("Accepted"),
                ),
                **errors(
                    NO_JOB,
                    BAD_JSON,
                    UNKNOWN_FIELD,
                    BAD_FIELD,
                    ErrorCase(status=400, code=E.NOT_READY, when="the job is DONE or FAILED: it never runs again"),
                    ErrorCase(status=400, code=E.UNKNOWN_TYPE, when="the job's type left the catalog"),
                    ErrorCase(status=409, code=E.ALREADY_RUNNING, when="the job is RUNNING or being started"),
                    ErrorCase(status=409, code=E.TYPE_BUSY, when="an exclusive type already has a RUNNING job"),
                    ErrorCase(
                        status=409, code=E.OVERRIDE_CLOSED, when="`overrideId` names no SAFE_MODE window open now"
                    ),
                    ErrorCase(status=409, code=E.APPROVAL_REQUIRED, when="a run request of the job waits for approval"),
                    TOO_LARGE,
                    JOURNAL,
                    NOT_READY_NODE,
                    *ADMIN_AUTH,
                ),
            },
        ),
    ),
    *approvals.ROUTES,
    Route(
        name="job_cancel",
        handler=jobs.cancel_job,
        access=Access.ADMIN_TOKEN,
        operation=Operation(
            method="POST",
            path="/api/jobs/{id}/cancel",
            operation_id="cancelJob",
            tags=JOBS,
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
    ),
    Route(
        name="job_logs",
        handler=jobs.job_logs,
        access=Access.SUBMIT,
        operation=Operation(
            method="GET",
            path="/api/jobs/{id}/logs",
            operation_id="getJobLogs",
            tags=JOBS,
            parameters=LOG_PARAMS,
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
    ),
    Route(name="job_log_text", handler=raw_logs.job_log_text, access=Access.SUBMIT, operation=raw_logs.OPERATION),
    # -- break-glass for SAFE_MODE (issue 15, docs/governance.md) --
    *override.ROUTES,
    # -- the contract itself: client tokens may read it (they need it too) --
    Route(
        name="openapi",
        handler=openapi_json,
        access=Access.SUBMIT,
        operation=Operation(
            method="GET",
            path="/openapi.json",
            operation_id="openapi",
            tags=OPS,
            parameters=(ACTOR,),
            summary="This document.",
            responses={"200": response("The OpenAPI 3.1 document.", {"type": "object"}), **errors(*SUBMIT_AUTH)},
        ),
    ),
)
