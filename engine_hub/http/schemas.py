"""The pieces the engine's route table builds its OpenAPI operations from: failures, parameters, bodies.

Shared by several rows of :data:`engine_hub.http.routes.ROUTES` (or long
enough to hide a row's shape there): the failures every route needing a
token can give (:data:`ADMIN_AUTH`, :data:`SUBMIT_AUTH`), the common
parameters and headers, and the request bodies with their failures. The
wire schemas themselves come from :mod:`shared.openapi`.
"""

from __future__ import annotations

from typing import Any, Final

from engine_hub.http.jobs import MAX_CURSOR
from engine_hub.run.logs import MAX_READ_LINES
from engine_hub.settings import ACTOR_HEADER
from shared.contract import (
    DEFAULT_PAGE_LIMIT,
    MAX_BODY,
    MAX_FILTER_CHARS,
    MAX_JSON_DEPTH,
    MAX_NAME_CHARS,
    MAX_PAGE_LIMIT,
    MAX_REASON_CHARS,
    ErrorCode,
    JobStatus,
)
from shared.openapi import (
    JOB_ID,
    ErrorCase,
    body,
    closed_object,
    errors,
    header,
    header_param,
    path,
    query,
    ref,
    response,
)

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
NOT_READY_NODE = ErrorCase(
    status=503, code=E.NODE_NOT_READY, when="this node of a PostgreSQL store holds no registration right now"
)

#: Failures of every route needing a token: admin-only, and open to client tokens.
ADMIN_AUTH: Final = (NO_TOKEN, SCOPE, BAD_ACTOR)
SUBMIT_AUTH: Final = (NO_TOKEN, ACTOR_ONLY, BAD_ACTOR)

# -- parameters and headers -------------------------------------------------------------------

ACTOR = header_param(
    ACTOR_HEADER,
    {"type": "string", "minLength": 1, "maxLength": 128},
    "Admin token only: the human the request acts for, recorded as createdBy/runBy.",
)
LINK = header('`<…>; rel="next"`: the URL of the next (older) page; absent on the last page.', required=False)
LOCATION = header("The new job's URL, `/api/jobs/{id}`.")


def limit(default: int, high: int) -> dict[str, Any]:
    """The ``limit`` query parameter of a list route: 1 to ``high``, ``default`` when absent."""
    return query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": high, "default": default},
        f"How many entries (1 to {high}; default {default}).",
    )


_STATUSES = [str(s) for s in JobStatus]
LIST_PARAMS: Final = (
    limit(DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT),
    query(
        "status",
        {"type": "string", "enum": _STATUSES + [s.lower() for s in _STATUSES]},
        "Only jobs in this status (any case).",
    ),
    query("type", {"type": "string"}, "Only jobs of this type (a catalog type, or one a stored job has)."),
    query("before", JOB_ID, "Cursor: the page after this job (from the `Link` header)."),
    query(
        "q",
        {"type": "string", "minLength": 1, "maxLength": MAX_FILTER_CHARS},
        "Only jobs whose name contains this text, in any case (a substring; no wildcards).",
    ),
    ACTOR,
)
JOB_PATH = path("id", {"type": "string"}, "The job's id.")
LOG_PARAMS: Final = (
    JOB_PATH,
    query(
        "after",
        {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR, "default": 0},
        "Only lines with seq > after (pass the previous answer's `next`).",
    ),
    limit(MAX_READ_LINES, MAX_READ_LINES),
    ACTOR,
)
EVENTS_PARAMS: Final = (
    query(
        "after",
        {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR},
        "Resume after this event id. A `Last-Event-ID` header (what a reconnecting EventSource sends; "
        "the same integer) takes precedence.",
    ),
    ACTOR,
)
AUDIT_PARAMS: Final = (
    query("jobId", {"type": "string"}, "Only records of this job."),
    query("actor", {"type": "string"}, "Only records by this actor."),
    query("since", {"type": "string", "format": "date-time"}, "Only records at or after this time."),
    query("until", {"type": "string", "format": "date-time"}, "Only records before this time."),
    limit(100, 1000),
    query("before", {"type": "integer", "minimum": 1}, "Cursor: records with a smaller seq."),
    ACTOR,
)
LIST_RESPONSES: Final = {
    "200": response("Jobs, newest first.", {"type": "array", "items": ref("Job")}, headers={"Link": LINK}),
    **errors(UNKNOWN_QUERY, BAD_QUERY, *SUBMIT_AUTH),
}

# -- request bodies ---------------------------------------------------------------------------

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
PLAN_SHA256: Final = {
    "type": ["string", "null"],
    "pattern": "^[0-9a-f]{64}$",
    "description": "SHA-256 (hex) of the plan the person saw; an approval with another plan's closes the request.",
}
#: The SAFE_MODE break-glass window a run (or a completing approval) is made in (docs/governance.md).
OVERRIDE_ID: Final = {
    "type": ["string", "null"],
    "minLength": 1,
    "maxLength": MAX_NAME_CHARS,
    "description": "The SAFE_MODE override window the run is made in (a gateway under SAFE_MODE "
    "sends it): it must be open now; recorded in the run's record.",
}
RUN_BODY: Final = body(
    closed_object(
        {
            "reason": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": MAX_REASON_CHARS,
                "description": "Why (single line); stored as runReason (and as the run request's reason).",
            },
            "planSha256": PLAN_SHA256,
            "overrideId": OVERRIDE_ID,
        }
    ),
    required=False,
    example={"reason": "ticket OPS-42"},
)
OVERRIDE_PATH = path("id", {"type": "string"}, "The override window's id.")
OVERRIDE_CLOSED = ErrorCase(status=409, code=E.OVERRIDE_CLOSED, when="the window has already ended or expired")
OVERRIDE_BODY: Final = body(
    closed_object(
        {
            "reason": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_REASON_CHARS,
                "description": "Why SAFE_MODE must be overridden (single line).",
            },
            "minutes": {
                "type": ["integer", "null"],
                "minimum": 1,
                "maximum": 60,
                "default": 15,
                "description": "How long the window stays open once approved.",
            },
        },
        required=("reason",),
    ),
    example={"reason": "INC-1234: rebuild the search index now", "minutes": 15},
)
APPROVE_BODY: Final = body(
    closed_object(
        {
            "reason": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_REASON_CHARS},
            "planSha256": PLAN_SHA256,
            "overrideId": OVERRIDE_ID,
        }
    ),
    required=False,
    example={"reason": "checked the plan"},
)
REJECT_BODY: Final = body(
    closed_object({"reason": {"type": "string", "minLength": 1, "maxLength": MAX_REASON_CHARS}}, required=("reason",)),
    example={"reason": "not during the sale"},
)
WITHDRAW_BODY: Final = body(
    closed_object({"reason": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_REASON_CHARS}}),
    required=False,
)
#: The failures of every run request change (approve, reject, withdraw).
NO_REQUEST = ErrorCase(
    status=409, code=E.NO_RUN_REQUEST, when="the job has no open run request (none, closed, or it just expired)"
)
RAN = ErrorCase(status=409, code=E.ALREADY_RUNNING, when="the job is RUNNING (its request was approved)")
FINISHED = ErrorCase(status=400, code=E.NOT_READY, when="the job is DONE or FAILED")
LEGACY_CREATE_BODY: Final = body(
    closed_object(
        {
            "engine": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
            "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
        },
        required=("engine", "name"),
    ),
    example={"engine": "demo.echo", "name": "nightly greeting"},
)
