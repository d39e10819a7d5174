"""The pieces of the gateway's OpenAPI document that its route table shares: error cases, schemas, parameters.

The route table (:mod:`admin_gateway.http.routes`) declares each operation
from these; :mod:`admin_gateway.http.openapi` assembles the document.
"""

from __future__ import annotations

from typing import Any, Final

from admin_gateway.audit.timeline import JOURNALS, MAX_LIMIT
from admin_gateway.auth.csrf import FORM_FIELD
from admin_gateway.auth.csrf import HEADER as CSRF_HEADER
from shared.contract import MAX_BODY, MAX_FILTER_CHARS, MAX_JSON_DEPTH, MAX_REASON_CHARS, ErrorCode
from shared.openapi import (
    FORM,
    HTML,
    JSON,
    ErrorCase,
    body,
    closed_object,
    contract_schemas,
    header,
    path,
    query,
    ref,
    response,
)

E = ErrorCode
#: The document's tags (declared in :mod:`admin_gateway.http.openapi`).
API_TAGS: Final = ("admin api",)
SIGN_IN_TAGS: Final = ("sign-in",)
PANEL_TAGS: Final = ("panel",)
OPERATIONS_TAGS: Final = ("operations",)
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
SAFE_MODE_ON = ErrorCase(
    status=403, code=E.SAFE_MODE, when="SAFE_MODE is on and no break-glass window is open; the engine is not called"
)
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

PASSWORD_FIRST = ErrorCase(
    status=403,
    code=E.PASSWORD_CHANGE_REQUIRED,
    when="signed in with a one-time password that must be changed first (/admin/password)",
)
#: Failures of every engine route and of each kind of them.
API_AUTH: Final = (NO_SESSION, ROLE, PASSWORD_FIRST)
ENGINE_READ: Final = (ENGINE_DOWN, ENGINE_BROKEN, ENGINE_SLOW)
MUTATION: Final = (*API_AUTH, CSRF, BAD_JSON, BAD_FORM, UNKNOWN_FIELD, BAD_FIELD, TOO_LARGE, *ENGINE_READ, AUDIT_DOWN)

JOB_PATH = path("id", {"type": "string"}, "The job's id.")
PANEL_JOB_PATH = path("job_id", {"type": "string"}, "The job's id.")
LOCATION = {"Location": header("Where to go.")}
RETRY_AFTER = {
    "Retry-After": header("Seconds until another attempt is considered.", {"type": "string", "pattern": "^[0-9]+$"})
}


def passthrough(name: str, description: str) -> dict[str, Any]:
    """A query parameter the gateway hands to the engine unchanged (at most 200 characters)."""
    return query(name, {"type": "string", "maxLength": MAX_FILTER_CHARS}, description + " Passed to the engine as is.")


def redirect(description: str, to: str) -> dict[str, Any]:
    """A 303 answer to ``to`` (the ``Location`` header)."""
    return response(f"{description} (`Location: {to}`).", None, headers=LOCATION)


def page(description: str) -> dict[str, Any]:
    """An HTML page answer."""
    return response(description, {"type": "string"}, media=HTML)


#: A page of the panel: HTML for a super_admin, a redirect to sign in, the "no access" page for another role.
PAGE_GUARDS: Final = {
    "303": redirect("Not signed in: to the sign-in form", "/login"),
    "403": page('Signed in, but not as a super_admin: the "no access" page.'),
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
        "safeModeOverride": {
            "anyOf": [ref("SafeModeOverride"), {"type": "null"}],
            "description": "While SAFE_MODE is on: the break-glass window requested or open now (who asked, who "
            "approved, why, until when), else null.",
        },
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
_AUDIT_WORD: Final = {"type": "string", "pattern": "^([a-z][a-z0-9_]{0,63})?$"}
#: The audit timeline's filters (the page, the API and the export).
AUDIT_FILTER_PARAMS: Final = (
    query(
        "actor",
        {"type": "string", "maxLength": MAX_FILTER_CHARS},
        "Only records whose actor starts with this text (`ali` finds `alice`).",
    ),
    query("action", _AUDIT_WORD, "Only records of this action (e.g. `job_run`)."),
    query("outcome", _AUDIT_WORD, "Only records whose `data.outcome` is this (e.g. `refused`)."),
    query("jobId", {"type": "string", "pattern": "^[A-Za-z0-9-]{0,64}$"}, "Only records of this job."),
    query(
        "since",
        {"type": "string"},
        "From this time on: YYYY-MM-DD, RFC 3339, or a zone-less time as UTC (`2026-12-04 14:37`, `2026-12-04T14:37`).",
    ),
    query("until", {"type": "string"}, "Before this time (same forms as since)."),
    query("journal", {"type": "string", "enum": ["engine", "gateway", "all", ""]}, "Only one journal's records."),
)
AUDIT_FILTERS: Final = (
    *AUDIT_FILTER_PARAMS,
    query("limit", {"type": "string"}, f"Records per page (1 to {MAX_LIMIT})."),
    query("before", {"type": "string", "pattern": "^(e[0-9]{0,18}\\.g[0-9]{0,18})?$"}, "Cursor: `next` of a page."),
)

REASON = {"type": ["string", "null"], "maxLength": MAX_REASON_CHARS, "description": "Why; recorded with the action."}
MUTATION_MEDIA: Final = (JSON, FORM)
PLAN_SHA256: Final = {
    "type": ["string", "null"],
    "maxLength": 64,
    "description": "SHA-256 (hex) of the plan the user saw; the engine checks it (64 lower-case hex digits).",
}
#: Bodies of the run request changes (engine: POST /api/jobs/{id}/approve|reject|withdraw).
APPROVE_BODY: Final = body(
    closed_object({"reason": REASON, "planSha256": PLAN_SHA256}),
    required=False,
    media=MUTATION_MEDIA,
    example={"reason": "plan checked"},
)
REJECT_BODY: Final = body(
    closed_object(
        {"reason": {"type": "string", "minLength": 1, "maxLength": MAX_REASON_CHARS, "description": "Why."}},
        required=("reason",),
    ),
    media=MUTATION_MEDIA,
    example={"reason": "not during the sale"},
)
WITHDRAW_BODY: Final = body(closed_object({"reason": REASON}), required=False, media=MUTATION_MEDIA)
NO_REQUEST = ErrorCase(status=409, code=E.NO_RUN_REQUEST, when="the job has no open run request (or it expired)")
RAN = ErrorCase(status=409, code=E.ALREADY_RUNNING, when="the job is already running (its request was approved)")
FINISHED = ErrorCase(status=400, code=E.NOT_READY, when="the job is DONE or FAILED")
STATIC_MEDIA: Final = (
    "text/css",
    "text/javascript",
    "application/javascript",
    "image/svg+xml",
    "image/vnd.microsoft.icon",
    "image/x-icon",
)
