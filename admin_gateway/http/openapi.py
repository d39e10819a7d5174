"""The gateway's published contract: its OpenAPI 3.1 document, served at ``GET /openapi.json``.

Every route is declared: the admin JSON API, sign-in and sign-out, the
panel's pages (HTML), its static files, ``/healthz`` and this document,
with every answer each can give. The test suite holds the document to the
real router (both directions) and fuzzes it with Schemathesis against a
live gateway in front of a live engine.

The document needs a signed-in session (any role): deny by default, and
the contract is no secret either way (docs/api.md describes it too).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from admin_gateway.audit.timeline import JOURNALS, MAX_LIMIT
from admin_gateway.auth.csrf import FORM_FIELD
from admin_gateway.auth.csrf import HEADER as CSRF_HEADER
from admin_gateway.auth.guards import require_user
from admin_gateway.auth.sessions import COOKIE_NAME, SECURE_COOKIE_NAME
from admin_gateway.http.login import AFTER_LOGIN
from shared.contract import (
    MAX_BODY,
    MAX_FILTER_CHARS,
    MAX_JSON_DEPTH,
    MAX_NAME_CHARS,
    MAX_PAGE_LIMIT,
    MAX_REASON_CHARS,
    ErrorCode,
)
from shared.openapi import (
    FORM,
    HTML,
    JSON,
    ErrorCase,
    Operation,
    OperationKey,
    body,
    build_document,
    closed_object,
    contract_schemas,
    errors,
    header,
    path,
    query,
    ref,
    response,
    setup_openapi,
)

TITLE: Final = "Engine Jobs: admin_gateway"
VERSION: Final = "1.0.0"

E = ErrorCode
SESSION: Final[dict[str, list[str]]] = {"session": []}
SESSION_CSRF: Final[dict[str, list[str]]] = {"session": [], "csrf": []}

NO_SESSION = ErrorCase(status=401, code=E.UNAUTHORIZED, when="no valid session (sign in first)")
ROLE = ErrorCase(status=401, code=E.FORBIDDEN, when="signed in, but not as a super_admin")
CSRF = ErrorCase(
    status=403,
    code=E.CSRF,
    when=f"missing or wrong {CSRF_HEADER} (or `{FORM_FIELD}` field), or a foreign Origin/Sec-Fetch-Site",
)
TOO_LONG_QUERY = ErrorCase(status=400, code=E.INVALID_FIELD, when="a query value longer than 200 characters")
ENGINE_DOWN = ErrorCase(status=502, code=E.ENGINE_UNAVAILABLE, when="the engine cannot be reached")
ENGINE_BROKEN = ErrorCase(
    status=502, code=E.ENGINE_ERROR, when="the engine failed (5xx), refused the gateway's token, or sent no JSON"
)
ENGINE_SLOW = ErrorCase(status=504, code=E.ENGINE_TIMEOUT, when="the engine did not answer within the total timeout")
NO_JOB = ErrorCase(status=404, code=E.NOT_FOUND, when="no job has this id")
TOO_LARGE = ErrorCase(status=413, code=E.PAYLOAD_TOO_LARGE, when=f"the body is larger than {MAX_BODY} bytes")
BAD_JSON = ErrorCase(
    status=400,
    code=E.INVALID_JSON,
    when=f"the body is not a JSON object (or an empty form), or nests more than {MAX_JSON_DEPTH} levels deep",
)
BAD_FORM = ErrorCase(
    status=400, code=E.BAD_REQUEST, when="a form body that cannot be parsed (e.g. multipart without a boundary)"
)
UNKNOWN_FIELD = ErrorCase(status=400, code=E.UNKNOWN_FIELD, when="a body field the route does not take")
BAD_FIELD = ErrorCase(status=400, code=E.INVALID_FIELD, when="a body field has a wrong type or value")
AUDIT_DOWN = ErrorCase(
    status=503, code=E.JOURNAL_UNAVAILABLE, when="the audit trail cannot record, so nothing was done (fail closed)"
)

#: Failures of every engine route and of each kind of them.
API_AUTH: Final = (NO_SESSION, ROLE)
ENGINE_READ: Final = (ENGINE_DOWN, ENGINE_BROKEN, ENGINE_SLOW)
MUTATION: Final = (*API_AUTH, CSRF, BAD_JSON, BAD_FORM, UNKNOWN_FIELD, BAD_FIELD, TOO_LARGE, *ENGINE_READ, AUDIT_DOWN)

JOB_PATH = path("id", {"type": "string"}, "The job's id.")
PANEL_JOB_PATH = path("job_id", {"type": "string"}, "The job's id.")
LOCATION = {"Location": header("Where to go.")}
RETRY_AFTER = {
    "Retry-After": header("Seconds until another attempt is considered.", {"type": "string", "pattern": "^[0-9]+$"})
}


def _passthrough(name: str, description: str) -> dict[str, Any]:
    return query(name, {"type": "string", "maxLength": MAX_FILTER_CHARS}, description + " Passed to the engine as is.")


def _redirect(description: str, to: str) -> dict[str, Any]:
    return response(f"{description} (`Location: {to}`).", None, headers=LOCATION)


def _page(description: str) -> dict[str, Any]:
    return response(description, {"type": "string"}, media=HTML)


#: A page of the panel: HTML for a super_admin, a redirect to sign in, the "no access" page for another role.
PAGE_GUARDS: Final = {
    "303": _redirect("Not signed in: to the sign-in form", "/login"),
    "403": _page('Signed in, but not as a super_admin: the "no access" page.'),
}

JOBS_ENVELOPE = closed_object(
    {
        "jobs": {"type": "array", "items": ref("Job")},
        "engine": {"type": "string", "enum": ["up", "down"]},
        "safeMode": {"type": "boolean"},
        "next": {"type": ["string", "null"], "description": "The `before` cursor of the next page."},
        "warning": {"type": "string", "description": "Only when the engine is down: why, in words."},
    },
    required=("jobs", "engine", "safeMode", "next"),
)

LOGS_ENVELOPE = closed_object(
    {
        "logs": {"type": "array", "items": ref("EngineLog")},
        "engineDown": {"const": True},
        "warning": {"type": "string"},
    },
    required=("logs",),
)

CONFIG = closed_object(
    {
        "safeMode": {"type": "boolean"},
        "userRole": {"type": "string", "enum": ["super_admin", "admin"]},
        "isSuperAdmin": {"type": "boolean"},
        "user": {"type": "string"},
        "csrfToken": {"type": "string", "description": f"Send it back as {CSRF_HEADER} on every POST."},
    }
)


def _timeline_record() -> dict[str, Any]:
    record = dict(contract_schemas()["AuditRecord"])
    record["properties"] = {
        **record["properties"],
        "journal": {"type": "string", "enum": list(JOURNALS), "description": "Whose journal it comes from."},
    }
    record["required"] = [*record["required"], "journal"]
    record["description"] = "A journal record (see AuditRecord) and the journal it comes from."
    return record


TIMELINE = closed_object(
    {
        "records": {"type": "array", "items": _timeline_record()},
        "next": {
            "type": ["string", "null"],
            "pattern": "^e[0-9]*\\.g[0-9]*$",
            "description": "The `before` cursor of the next page (one position per journal), or null.",
        },
        "engine": {"type": "string", "enum": ["up", "down", "skipped"]},
        "warning": {"type": ["string", "null"], "description": "Why the engine's records are missing."},
    },
    required=("records", "next", "engine", "warning"),
)

#: The audit filters; an empty value means "not given" (the page's form sends every field).
AUDIT_FILTERS: Final = (
    query("actor", {"type": "string", "maxLength": MAX_FILTER_CHARS}, "Only records by this actor (exact)."),
    query("jobId", {"type": "string", "pattern": "^[A-Za-z0-9-]{0,64}$"}, "Only records of this job."),
    query("since", {"type": "string"}, "From this time on: YYYY-MM-DD, RFC 3339, or a zone-less time (UTC)."),
    query("until", {"type": "string"}, "Before this time (same forms as since)."),
    query("journal", {"type": "string", "enum": ["engine", "gateway", "all", ""]}, "Only one journal's records."),
    query("limit", {"type": "string"}, f"Records per page (1 to {MAX_LIMIT})."),
    query("before", {"type": "string", "pattern": "^(e[0-9]{0,18}\\.g[0-9]{0,18})?$"}, "Cursor: `next` of a page."),
)

REASON = {"type": ["string", "null"], "maxLength": MAX_REASON_CHARS, "description": "Why; recorded with the action."}
MUTATION_MEDIA: Final = (JSON, FORM)
STATIC_MEDIA: Final = (
    "text/css",
    "text/javascript",
    "application/javascript",
    "image/svg+xml",
    "image/vnd.microsoft.icon",
    "image/x-icon",
)


def _ops() -> list[Operation]:
    api, auth, panel, ops = ("admin api",), ("sign-in",), ("panel",), ("operations",)
    return [
        Operation(
            method="GET",
            path="/healthz",
            operation_id="healthz",
            tags=ops,
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
        Operation(
            method="GET",
            path="/openapi.json",
            operation_id="openapi",
            tags=ops,
            security=(SESSION,),
            summary="This document (any signed-in user).",
            responses={"200": response("The OpenAPI 3.1 document.", {"type": "object"}), **errors(NO_SESSION)},
        ),
        # -- signing in and out --
        Operation(
            method="GET",
            path="/login",
            operation_id="loginForm",
            tags=auth,
            security=(),
            summary="The sign-in form (it carries a signed CSRF token in a hidden field).",
            responses={
                "200": _page("The form; its token is bound to the gw_form cookie, nothing is stored on the server."),
                "303": _redirect("Already signed in: to the panel", AFTER_LOGIN),
            },
        ),
        Operation(
            method="POST",
            path="/login",
            operation_id="login",
            tags=auth,
            security=(SESSION_CSRF,),
            summary="Sign in. Browsers get pages; `Accept: application/json` alone gets JSON.",
            description="A wrong name and a wrong password get the same answer. Failed attempts are "
            "throttled per account and per client address. Success rotates the session.",
            request_body=body(
                closed_object(
                    {
                        "username": {"type": "string"},
                        "password": {"type": "string"},
                        FORM_FIELD: {"type": "string", "description": f"Or the {CSRF_HEADER} header."},
                    }
                ),
                media=(FORM,),
            ),
            responses={
                "200": response(
                    "JSON clients: signed in.",
                    closed_object(
                        {
                            "user": {"type": "string"},
                            "role": {"type": "string", "enum": ["super_admin", "admin"]},
                            "csrfToken": {"type": "string"},
                        }
                    ),
                ),
                "303": _redirect("Browsers: signed in, to the panel", AFTER_LOGIN),
                **errors(
                    ErrorCase(status=401, code=E.UNAUTHORIZED, when="wrong user name or password", media=(JSON, HTML)),
                    ErrorCase(
                        status=403,
                        code=E.CSRF,
                        when="missing or wrong CSRF token, or a foreign origin",
                        media=(JSON, HTML),
                    ),
                    ErrorCase(
                        status=429,
                        code=E.THROTTLED,
                        when="too many failed attempts (per address, per "
                        "account and address, per account or per device cookie), or every password-check "
                        "thread is busy",
                        headers=RETRY_AFTER,
                        media=(JSON, HTML),
                    ),
                    ErrorCase(
                        status=503,
                        code=E.JOURNAL_UNAVAILABLE,
                        when="the sign-in cannot be recorded in the audit trail, so no session is opened (fail closed)",
                        media=(JSON, HTML),
                    ),
                    BAD_FORM,
                    TOO_LARGE,
                ),
            },
        ),
        Operation(
            method="POST",
            path="/logout",
            operation_id="logout",
            tags=auth,
            security=(SESSION_CSRF,),
            summary="End the session on the server: a copied cookie is dead afterwards.",
            responses={
                "204": response("JSON clients: signed out."),
                "303": _redirect("Browsers: signed out, to the sign-in form", "/login"),
                **errors(ErrorCase(status=403, code=E.CSRF, when="signed in, but the CSRF check failed"), BAD_FORM),
            },
        ),
        # -- the admin JSON API --
        Operation(
            method="GET",
            path="/api/admin/config",
            operation_id="config",
            tags=api,
            summary="Who I am, my role, SAFE_MODE, and the CSRF token for fetch (any signed-in user).",
            responses={"200": response("The panel's configuration.", CONFIG), **errors(NO_SESSION)},
        ),
        Operation(
            method="GET",
            path="/api/admin/engine/jobs",
            operation_id="listJobs",
            tags=api,
            parameters=(
                _passthrough("limit", f"Page size (1 to {MAX_PAGE_LIMIT})."),
                _passthrough("status", "READY, RUNNING, DONE or FAILED."),
                _passthrough("type", "A job type."),
                _passthrough("before", "Cursor: `next` of a page."),
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
        Operation(
            method="POST",
            path="/api/admin/engine/jobs",
            operation_id="createJob",
            tags=api,
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
        Operation(
            method="GET",
            path="/api/admin/engine/jobs/{id}",
            operation_id="getJob",
            tags=api,
            parameters=(JOB_PATH,),
            summary="One job with its status history, as the engine has it.",
            responses={"200": response("The job.", ref("Job")), **errors(NO_JOB, *API_AUTH, *ENGINE_READ)},
        ),
        Operation(
            method="GET",
            path="/api/admin/engine/jobs/{id}/logs",
            operation_id="getJobLogs",
            tags=api,
            parameters=(
                JOB_PATH,
                _passthrough("after", "Only lines after this seq."),
                _passthrough("limit", "At most this many lines (1 to 5000)."),
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
        Operation(
            method="POST",
            path="/api/admin/engine/jobs/{id}/run",
            operation_id="runJob",
            tags=api,
            parameters=(JOB_PATH,),
            security=(SESSION_CSRF,),
            summary="Run a READY job. Guards in order: session and role, CSRF, SAFE_MODE, then the engine.",
            request_body=body(
                closed_object({"reason": REASON}),
                required=False,
                media=MUTATION_MEDIA,
                example={"reason": "ticket OPS-42"},
            ),
            responses={
                "202": response("Started.", ref("Accepted")),
                **errors(
                    *MUTATION,
                    NO_JOB,
                    ErrorCase(status=403, code=E.SAFE_MODE, when="SAFE_MODE is on; the engine is not called"),
                    ErrorCase(status=400, code=E.NOT_READY, when="the job is DONE or FAILED"),
                    ErrorCase(status=400, code=E.UNKNOWN_TYPE, when="the job's type left the catalog"),
                    ErrorCase(status=409, code=E.ALREADY_RUNNING, when="the job is already running"),
                    ErrorCase(status=409, code=E.TYPE_BUSY, when="an exclusive type is busy"),
                ),
            },
        ),
        Operation(
            method="POST",
            path="/api/admin/engine/jobs/{id}/cancel",
            operation_id="cancelJob",
            tags=api,
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
        Operation(
            method="GET",
            path="/api/admin/engine/types",
            operation_id="listTypes",
            tags=api,
            summary="The engine's job type catalog.",
            responses={
                "200": response("Every type.", {"type": "array", "items": ref("JobType")}),
                **errors(*API_AUTH, *ENGINE_READ),
            },
        ),
        Operation(
            method="GET",
            path="/api/admin/engine/logs",
            operation_id="engineLogs",
            tags=api,
            parameters=(_passthrough("limit", "How many entries (1 to 500)."),),
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
        Operation(
            method="GET",
            path="/api/admin/audit",
            operation_id="listAudit",
            tags=api,
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
        # -- the panel --
        Operation(
            method="GET",
            path="/",
            operation_id="index",
            tags=panel,
            security=(),
            summary="The panel starts at the job list.",
            responses={"303": _redirect("Always", AFTER_LOGIN)},
        ),
        Operation(
            method="GET",
            path="/admin/engine/jobs",
            operation_id="jobsPage",
            tags=panel,
            parameters=(
                query("status", {"type": "string"}, "Filter (ignored unless a status)."),
                query("type", {"type": "string"}, "Filter."),
                query("before", {"type": "string"}, "Cursor."),
                query("limit", {"type": "string"}, "Page size (1 to 500; else 50)."),
            ),
            summary="The jobs table: RUN for READY jobs (super_admin, SAFE_MODE off), Cancel for RUNNING ones.",
            responses={"200": _page("The table, or its outage/error banner."), **PAGE_GUARDS},
        ),
        Operation(
            method="GET",
            path="/admin/engine/jobs/{job_id}",
            operation_id="jobPage",
            tags=panel,
            parameters=(PANEL_JOB_PATH,),
            summary="One job: fields, status history, audit records (both journals), live log.",
            responses={"200": _page("The job."), "404": _page("No such job."), **PAGE_GUARDS},
        ),
        Operation(
            method="GET",
            path="/admin/engine/logs",
            operation_id="logsPage",
            tags=panel,
            summary="The engine log, newest first.",
            responses={"200": _page("The log, or its outage banner."), **PAGE_GUARDS},
        ),
        Operation(
            method="GET",
            path="/admin/audit",
            operation_id="auditPage",
            tags=panel,
            parameters=AUDIT_FILTERS,
            summary='The audit trail: both journals, newest first, with filters and an "Older" link.',
            responses={
                "200": _page("The timeline (with a notice when the engine's records are unavailable)."),
                "400": _page("A bad filter value: the page with the error."),
                **PAGE_GUARDS,
            },
        ),
        Operation(
            method="GET",
            path="/favicon.ico",
            operation_id="favicon",
            tags=panel,
            security=(),
            summary="The icon browsers ask for by themselves.",
            responses={"200": response("The icon.", {"type": "string", "format": "binary"}, media="image/x-icon")},
        ),
        Operation(
            method="GET",
            path="/static/{path}",
            operation_id="static",
            tags=panel,
            security=(),
            parameters=(path("path", {"type": "string"}, "A file under admin_gateway/static/."),),
            summary="The panel's stylesheet, scripts and icons (revalidated: `Cache-Control: no-cache`).",
            responses={
                "200": response("The file.", {"type": "string"}, media=STATIC_MEDIA),
                "206": response("A byte range of the file (`Range`).", {"type": "string"}, media=STATIC_MEDIA),
                "304": response("Not modified since `If-Modified-Since`."),
                "416": response("The `Range` is outside the file."),
                **errors(ErrorCase(status=404, code=E.NOT_FOUND, when="not a file of the panel")),
            },
        ),
    ]


OPERATIONS: Final = tuple(_ops())


def document(routes: set[OperationKey] | None = None) -> dict[str, Any]:
    """Return the gateway's OpenAPI document (``routes``: see :func:`shared.openapi.build_document`)."""
    return build_document(
        info={
            "title": TITLE,
            "version": VERSION,
            "description": "The admin gateway: sign-in, sessions, roles, CSRF, SAFE_MODE, the admin JSON API "
            '(errors are `{"error", "code"}`) and the panel. Human guide: docs/api.md.',
        },
        operations=OPERATIONS,
        routes=routes,
        components={
            "schemas": contract_schemas(),
            "securitySchemes": {
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": COOKIE_NAME,
                    "description": f"The session cookie set by POST /login (`{SECURE_COOKIE_NAME}` over "
                    "HTTPS). The engine routes need the super_admin role.",
                },
                "csrf": {
                    "type": "apiKey",
                    "in": "header",
                    "name": CSRF_HEADER,
                    "description": f"The session's CSRF token (`csrfToken` of /api/admin/config, or the "
                    f"`{FORM_FIELD}` field of a form); required on every POST.",
                },
            },
        },
        security=(SESSION,),
        tags=(
            {"name": "admin api", "description": "JSON API for the panel and scripts."},
            {"name": "sign-in", "description": "Sessions."},
            {"name": "panel", "description": "Server-rendered pages and their assets."},
            {"name": "operations", "description": "Health and this document."},
        ),
        common_headers={
            "X-Request-Id": header("The request id (also sent on to the engine)."),
            "Content-Security-Policy": header("The panel's CSP (on every response)."),
        },
    )


def setup(app: web.Application) -> None:
    """Serve the document at ``GET /openapi.json`` to signed-in users; call after every other route."""
    setup_openapi(app, document, guard=require_user)


__all__ = ["OPERATIONS", "document", "setup"]
