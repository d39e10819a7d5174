"""The wire contract that engine_hub and admin_gateway speak.

Status names, the allowed transitions, error codes and the JSON shapes of a
job, a job result and an engine log line all live here, so that neither
process can drift from the other.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any, Final

import attrs

# Limits both processes apply. The gateway checks what it forwards by the engine's own rules, so a
# request the engine would refuse is refused by the gateway with the same bound (and the OpenAPI
# documents of both say the same numbers).

#: Largest request body either process reads, in bytes (413 ``payload_too_large`` beyond it).
MAX_BODY: Final = 64 * 1024
#: Limits of aiohttp's HTTP parser (pass as ``web.Application(handler_args=...)``). Its defaults
#: (8 KiB per request line or header) are below what the contracts allow (several query values of
#: up to :data:`MAX_FILTER_CHARS` characters, percent-encoded), and what it refuses never reaches
#: ``request_wrapper``: it gets a plain-text 400. A request line or header may be as large as a body.
HTTP_LIMITS: Final = {"max_line_size": MAX_BODY, "max_field_size": MAX_BODY}
#: Page size of the engine's job list and audit records when ``limit`` is not given.
DEFAULT_PAGE_LIMIT: Final = 100
#: Largest ``limit`` of the engine's job list and audit records.
MAX_PAGE_LIMIT: Final = 1000
#: Longest job ``name`` (and legacy ``engine``/``name``) a job may be created with.
MAX_NAME_CHARS: Final = 200
#: Longest ``reason`` given to run or cancel a job (recorded in the journals).
MAX_REASON_CHARS: Final = 1000
#: Longest timeout a job type's plan (its dry run) may declare, in seconds, and the most of its
#: output (stdout and stderr together) a plan answer carries, in bytes (docs/governance.md).
MAX_PLAN_TIMEOUT: Final = 120.0
MAX_PLAN_OUTPUT: Final = 64 * 1024
#: How long the engine may take to answer a plan at most: the plan's timeout, then ending its process
#: group (a plan's kill grace is at most 5 s, then up to 5 s for SIGKILL) and draining its output, with
#: room to spare. The gateway waits this long for a plan, not its usual total timeout.
PLAN_ANSWER_WITHIN: Final = MAX_PLAN_TIMEOUT + 40.0
#: Longest value of a filter or other query parameter (``actor``, ``type``, ``status``, ``before``...).
MAX_FILTER_CHARS: Final = 200

#: How deeply a request body may nest arrays and objects (``{}`` is one level). No body of the
#: contract needs more than three; the limit is checked before decoding, so a body nested a thousand
#: levels deep is refused as 400 ``invalid_json`` instead of exhausting the decoder's recursion.
MAX_JSON_DEPTH: Final = 32


class JobStatus(enum.StrEnum):
    """The four states a job can be in."""

    READY = "READY"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"


#: The only transitions that exist: READY->RUNNING and RUNNING->DONE|FAILED.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.READY: frozenset({JobStatus.RUNNING}),
    JobStatus.RUNNING: frozenset({JobStatus.DONE, JobStatus.FAILED}),
    JobStatus.DONE: frozenset(),
    JobStatus.FAILED: frozenset(),
}


#: The states of a job's run request (a type that needs approval): only ``open`` ever changes.
RUN_REQUEST_STATES: Final = ("open", "approved", "rejected", "withdrawn", "expired", "superseded")


class ErrorCode(enum.StrEnum):
    """Machine-readable error codes carried in ``{"error": ..., "code": ...}``."""

    BAD_REQUEST = "bad_request"
    INVALID_JSON = "invalid_json"
    INVALID_FIELD = "invalid_field"
    UNKNOWN_FIELD = "unknown_field"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_PARAM = "invalid_param"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    ALREADY_RUNNING = "already_running"
    TYPE_BUSY = "type_busy"
    NOT_READY = "not_ready"
    NOT_RUNNING = "not_running"
    NO_PLAN = "no_plan"
    LOG_EXPIRED = "log_expired"
    JOURNAL_UNAVAILABLE = "journal_unavailable"
    STORE_UNAVAILABLE = "store_unavailable"
    NODE_NOT_READY = "node_not_ready"
    APPROVAL_REQUIRED = "approval_required"
    SELF_APPROVAL = "self_approval"
    ALREADY_APPROVED = "already_approved"
    NOT_REQUESTER = "not_requester"
    NO_RUN_REQUEST = "no_run_request"
    PLAN_CHANGED = "plan_changed"
    CSRF = "csrf"
    SAFE_MODE = "safe_mode"
    THROTTLED = "throttled"
    ENGINE_UNAVAILABLE = "engine_unavailable"
    ENGINE_TIMEOUT = "engine_timeout"
    ENGINE_ERROR = "engine_error"
    INTERNAL = "internal"
    OVERRIDE_ACTIVE = "override_active"
    OVERRIDE_CLOSED = "override_closed"
    SAFE_MODE_OFF = "safe_mode_off"


class JobOutcome(enum.StrEnum):
    """How a finished job ended, for people: the wire ``outcome`` (``null`` while READY or RUNNING).

    ``status`` stays DONE/FAILED on the wire; the outcome tells a cancel by a
    person or a timeout apart from a failure of the job itself.
    """

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"


#: Prefixes of the ``error`` the engine writes when it ends a run (engine_hub/run/runner.py,
#: engine_hub/jobs/service.py, engine_hub/store/nodes.py): what :func:`outcome_of` reads.
CANCELLED_PREFIX: Final = "cancelled by "
TIMED_OUT_PREFIX: Final = "timed out after "
INTERRUPTED_PREFIX: Final = "interrupted: "
#: The ``error`` of a run the engine itself stopped as it shut down (no person cancelled it).
SHUTDOWN_ERROR: Final = "cancelled by engine shutdown"


def outcome_of(status: JobStatus | str, error: str | None) -> str | None:
    """The wire ``outcome`` of a job from its ``status`` and ``error``: one rule for both stores and every replay.

    ``None`` while READY or RUNNING; ``succeeded`` for DONE; for FAILED,
    ``interrupted`` (the engine or its node stopped under the run, including
    a run ended by the engine's own shutdown), ``cancelled`` (a person
    cancelled it), ``timed_out`` (killed by its type's timeout), else
    ``failed``. Derived from what the journal and the rows already hold,
    so jobs finished before the field existed get the same value.
    """
    if status == JobStatus.DONE:
        return JobOutcome.SUCCEEDED.value
    if status != JobStatus.FAILED:
        return None
    text = error or ""
    if text.startswith(INTERRUPTED_PREFIX) or text == SHUTDOWN_ERROR:
        return JobOutcome.INTERRUPTED.value
    if text.startswith(CANCELLED_PREFIX):
        return JobOutcome.CANCELLED.value
    if text.startswith(TIMED_OUT_PREFIX):
        return JobOutcome.TIMED_OUT.value
    return JobOutcome.FAILED.value


def utcnow() -> dt.datetime:
    """Return the current time as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


def format_time(value: dt.datetime | None) -> str | None:
    """Format an aware datetime as RFC 3339 in UTC (``...Z``); ``None`` stays ``None``."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str | None) -> dt.datetime | None:
    """Parse an RFC 3339 timestamp into an aware UTC datetime.

    Raises ``ValueError`` for anything that is not a timezone-qualified time.
    """
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no timezone")
    return parsed.astimezone(dt.UTC)


def new_job_id() -> str:
    """Return a fresh job id (a random uuid4 in canonical form)."""
    return str(uuid.uuid4())


@attrs.frozen(kw_only=True)
class HistoryEntry:
    """One status change of a job: what it became, when, by whom and why."""

    status: JobStatus
    at: dt.datetime
    by: str
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the wire shape ``{status, at, by, reason}``."""
        return {"status": str(self.status), "at": format_time(self.at), "by": self.by, "reason": self.reason}


@attrs.frozen(kw_only=True)
class Job:
    """A job as the engine stores it and as both processes see it.

    Instances are immutable; the engine store is the only place that derives
    a new version (with ``attrs.evolve``) and only along ``TRANSITIONS``.
    ``run_request`` is the job's latest run request (a type that needs approval:
    :mod:`engine_hub.store.requests`), its wire JSON, or ``None``. ``copy_of``
    is the id of the job this one was made from by "Run again" (``None`` for
    a job created anew) and ``copies`` the ids of the jobs made from this one,
    oldest first. The wire ``outcome`` is derived (:func:`outcome_of`).
    """

    id: str
    type: str
    name: str
    params: dict[str, Any] = attrs.field(factory=dict)
    status: JobStatus = JobStatus.READY
    created_at: dt.datetime
    created_by: str
    started_at: dt.datetime | None = None
    run_by: str | None = None
    run_reason: str | None = None
    ended_at: dt.datetime | None = None
    exit_code: int | None = None
    error: str | None = None
    history: tuple[HistoryEntry, ...] = ()
    run_request: dict[str, Any] | None = None
    copy_of: str | None = None
    copies: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return the camelCase wire shape; absent values are ``null``."""
        return {
            "id": self.id,
            "type": self.type,
            "engine": self.type,
            "name": self.name,
            "params": self.params,
            "status": str(self.status),
            "createdAt": format_time(self.created_at),
            "createdBy": self.created_by,
            "startedAt": format_time(self.started_at),
            "runBy": self.run_by,
            "runReason": self.run_reason,
            "endedAt": format_time(self.ended_at),
            "exitCode": self.exit_code,
            "error": self.error,
            "history": [h.to_json() for h in self.history],
            "runRequest": self.run_request,
            "outcome": outcome_of(self.status, self.error),
            "copyOf": self.copy_of,
            "copies": list(self.copies),
        }


#: Names of every field in a job's wire shape, in order.
JOB_FIELDS: tuple[str, ...] = (
    "id",
    "type",
    "engine",
    "name",
    "params",
    "status",
    "createdAt",
    "createdBy",
    "startedAt",
    "runBy",
    "runReason",
    "endedAt",
    "exitCode",
    "error",
    "history",
    "runRequest",
    "outcome",
    "copyOf",
    "copies",
)


def job_result_json(*, job_id: str, engine: str, name: str, output: str, created_at: dt.datetime) -> dict[str, Any]:
    """Return the legacy JobResult shape ``{jobId, engine, name, output, createdAt}``."""
    return {"jobId": job_id, "engine": engine, "name": name, "output": output, "createdAt": format_time(created_at)}


class LogLevel(enum.StrEnum):
    """Levels of the legacy EngineLog shape."""

    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"


def engine_log_json(*, level: LogLevel, message: str, job_id: str | None, timestamp: dt.datetime) -> dict[str, Any]:
    """Return the legacy EngineLog shape ``{level, message, jobId, timestamp}``."""
    return {"level": str(level), "message": message, "jobId": job_id, "timestamp": format_time(timestamp)}


def error_body(message: str, code: ErrorCode | str) -> dict[str, str]:
    """Return the one error shape used everywhere: ``{"error": message, "code": code}``."""
    return {"error": message, "code": str(code)}
