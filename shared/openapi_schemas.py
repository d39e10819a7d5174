"""The schemas of the wire shapes in both OpenAPI documents, derived from the shared contract.

Status and error-code enums, the job's field list (its run request
included) and the journal record's keys come from :mod:`shared.contract` and
:mod:`shared.journal.chain`, so a contract change shows up in the documents;
:func:`contract_schemas` is what both documents' ``components`` start from.
:mod:`shared.openapi` holds the rest of the document's building blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from shared.contract import (
    JOB_FIELDS,
    MAX_PLAN_OUTPUT,
    RUN_REQUEST_STATES,
    ErrorCode,
    JobOutcome,
    JobStatus,
    LogLevel,
)
from shared.journal.chain import GENESIS, make_record

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    """Return a reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """Return ``schema`` that also allows ``null`` (JSON Schema 2020-12 style, as OpenAPI 3.1 wants)."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    kind = schema["type"]
    types = [kind] if isinstance(kind, str) else list(kind)
    return {**schema, "type": [*types, "null"]}


TIME: Final[Schema] = {
    "type": "string",
    "format": "date-time",
    "description": "RFC 3339 in UTC with milliseconds, e.g. 2025-01-31T09:30:00.000Z",
}
JOB_ID: Final[Schema] = {"type": "string", "format": "uuid", "description": "The job's id (a uuid4)."}


def object_schema(
    properties: Mapping[str, Schema], *, required: Iterable[str] | None = None, description: str | None = None
) -> Schema:
    """A closed object: every listed property (all required unless given), nothing else."""
    out: Schema = {
        "type": "object",
        "properties": dict(properties),
        "required": list(properties if required is None else required),
        "additionalProperties": False,
    }
    if description:
        out["description"] = description
    return out


def _job_schema() -> Schema:
    fields: dict[str, Schema] = {
        "id": JOB_ID,
        "type": {"type": "string", "description": "The job type (a catalog entry)."},
        "engine": {"type": "string", "description": "Legacy alias of `type`: always equal to it."},
        "name": {"type": "string"},
        "params": {
            "type": "object",
            "additionalProperties": {"type": ["string", "integer", "boolean"]},
            "description": "Validated params, defaults filled in.",
        },
        "status": ref("JobStatus"),
        "createdAt": TIME,
        "createdBy": {"type": "string"},
        "startedAt": nullable(TIME),
        "runBy": nullable({"type": "string"}),
        "runReason": nullable({"type": "string"}),
        "endedAt": nullable(TIME),
        "exitCode": nullable({"type": "integer"}),
        "error": nullable({"type": "string", "description": "Why the job FAILED."}),
        "history": {"type": "array", "items": ref("HistoryEntry")},
        "runRequest": nullable(ref("RunRequest")),
        "outcome": {
            "type": ["string", "null"],
            "enum": [*JobOutcome, None],
            "description": "How a finished job ended (null while READY or RUNNING): `succeeded` (DONE), "
            "`cancelled` (by a person), `timed_out` (killed by its type's timeout), `interrupted` (the engine or "
            "its node stopped under it; `error` starts `interrupted: `), `failed` (any other FAILED).",
        },
        "copyOf": nullable({**JOB_ID, "description": "The job this one was made from by Run again."}),
        "copies": {
            "type": "array",
            "items": JOB_ID,
            "description": "The jobs made from this one by Run again, oldest first.",
        },
    }
    if tuple(fields) != JOB_FIELDS:  # the contract's field list is the authority
        raise RuntimeError(f"the Job schema's fields {tuple(fields)} differ from shared.contract.JOB_FIELDS")
    return object_schema(fields, description="A job, as both processes see it. Unset values are null.")


SHA256: Final[Schema] = {"type": "string", "pattern": "^[0-9a-f]{64}$"}


def _run_request_schema() -> Schema:
    return object_schema(
        {
            "id": {"type": "string", "description": "The request's id."},
            "by": {"type": "string", "description": "The requester: never one of its approvers."},
            "reason": nullable({"type": "string"}),
            "at": TIME,
            "expiresAt": TIME,
            "planSha256": nullable({**SHA256, "description": "SHA-256 of the plan the requester saw."}),
            "required": {"type": "integer", "minimum": 1, "description": "Approvals needed besides the requester."},
            "approvals": {"type": "array", "items": ref("Approval")},
            "state": {"type": "string", "enum": list(RUN_REQUEST_STATES)},
            "closedAt": nullable(TIME),
            "closedBy": nullable({"type": "string", "description": "Who closed it (`system` for an expiry)."}),
            "closeReason": nullable({"type": "string"}),
        },
        description="The job's latest run request (a type with `approval: required`): open until approved "
        "(the job then runs), rejected, withdrawn, expired or superseded (the job stays READY). Kept on the job "
        "until a newer request replaces it.",
    )


def _audit_record_schema() -> Schema:
    fields: dict[str, Schema] = {
        "seq": {"type": "integer", "minimum": 1},
        "at": TIME,
        "actor": {"type": "string"},
        "source": {"type": "string", "description": "Client address, or `engine` for the engine's own records."},
        "action": {"type": "string"},
        "jobId": nullable({"type": "string"}),
        "data": {"type": "object"},
        "prev": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    }
    sample = make_record(seq=1, prev=GENESIS, action="x", actor="x", source="x", job_id=None, data={})
    if set(fields) != set(sample.to_json()):
        raise RuntimeError("the AuditRecord schema's fields differ from shared.journal.chain.Record")
    return object_schema(fields, description="One hash-chained journal record: hash = sha256(prev + canonical body).")


def _param_spec_schema() -> Schema:
    value: Schema = {"type": ["string", "integer", "boolean", "null"]}
    props: dict[str, Schema] = {
        "name": {"type": "string"},
        "type": {"type": "string", "enum": ["str", "int", "bool"]},
        "required": {"type": "boolean"},
        "default": value,
        "choices": nullable({"type": "array", "items": {"type": ["string", "integer"]}}),
        "description": {"type": "string"},
        "min": nullable({"type": "integer"}),
        "max": nullable({"type": "integer"}),
        "maxLength": {"type": "integer"},
    }
    return object_schema(
        props,
        required=("name", "type", "required", "default", "choices", "description"),
        description="A declared param; `min`/`max` only for int params, `maxLength` only for str.",
    )


def contract_schemas() -> dict[str, Schema]:
    """Return the component schemas of the wire contract both processes speak."""
    codes = [str(c) for c in ErrorCode]
    return {
        "ErrorCode": {"type": "string", "enum": codes},
        "Error": object_schema(
            {"error": {"type": "string", "description": "What went wrong, for humans."}, "code": ref("ErrorCode")},
            description="Every error, from either process.",
        ),
        "JobStatus": {"type": "string", "enum": [str(s) for s in JobStatus]},
        "HistoryEntry": object_schema(
            {"status": ref("JobStatus"), "at": TIME, "by": {"type": "string"}, "reason": nullable({"type": "string"})}
        ),
        "Job": _job_schema(),
        "RunRequest": _run_request_schema(),
        "Approval": object_schema({"by": {"type": "string"}, "at": TIME, "reason": nullable({"type": "string"})}),
        "Accepted": object_schema(
            {"status": {"const": "accepted"}, "jobId": JOB_ID, "message": {"type": "string"}, "job": ref("Job")},
            description="The answer to a run, cancel or run request (approve, reject, withdraw) request.",
        ),
        "JobResult": object_schema(
            {
                "jobId": JOB_ID,
                "engine": {"type": "string"},
                "name": {"type": "string"},
                "output": {"type": "string"},
                "createdAt": TIME,
            },
            description="Legacy shape of a finished job.",
        ),
        "EngineLog": object_schema(
            {
                "level": {"type": "string", "enum": [str(v) for v in LogLevel]},
                "message": {"type": "string"},
                "jobId": nullable(JOB_ID),
                "timestamp": TIME,
            },
            description="Legacy shape of an engine log entry.",
        ),
        "LogLine": object_schema(
            {
                "seq": {"type": "integer", "minimum": 1},
                "at": TIME,
                "stream": {"type": "string", "enum": ["stdout", "stderr"]},
                "text": {"type": "string"},
            }
        ),
        "LogPage": object_schema(
            {
                "lines": {"type": "array", "items": ref("LogLine")},
                "next": {"type": "integer", "minimum": 0, "description": "Pass as `after` on the next call."},
                "truncated": {"type": "boolean", "description": "Older lines were dropped."},
            },
            description="A job's captured output after a cursor, oldest first.",
        ),
        "ParamSpec": _param_spec_schema(),
        "JobType": object_schema(
            {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "timeout": {"type": "number"},
                "exclusive": {"type": "boolean"},
                "plan": {"type": "boolean", "description": "Whether the type has a plan (dry run)."},
                "params": {"type": "array", "items": ref("ParamSpec")},
                "approval": {
                    "type": "string",
                    "enum": ["none", "required"],
                    "description": "`required`: a run must be requested and approved by `approvers` other people.",
                },
                "approvers": {"type": "integer", "minimum": 0, "maximum": 5, "description": "0 when `none`."},
            }
        ),
        "Plan": object_schema(
            {
                "jobId": JOB_ID,
                "output": {
                    "type": "string",
                    "description": f"stdout and stderr as one stream: the first {MAX_PLAN_OUTPUT} bytes, "
                    "decoded as UTF-8 (undecodable bytes become U+FFFD).",
                },
                "sha256": {
                    "type": "string",
                    "pattern": "^[0-9a-f]{64}$",
                    "description": "SHA-256 of the exact output bytes (before decoding).",
                },
                "exitCode": nullable({"type": "integer", "description": "null: it did not exit by itself."}),
                "truncated": {"type": "boolean", "description": f"More than {MAX_PLAN_OUTPUT} bytes: cut."},
                "timedOut": {"type": "boolean", "description": "Its timeout ended its process group."},
                "error": nullable(
                    {"type": "string", "description": "Why it did not exit 0 (cannot start, timeout, exit code)."}
                ),
                "at": TIME,
            },
            description="What a job's plan (dry run) printed and how it ended; the job did not change.",
        ),
        "AuditRecord": _audit_record_schema(),
        "SafeModeOverride": _override_schema(),
        "SafeModeOverrideAnswer": object_schema(
            {"window": nullable(ref("SafeModeOverride"))},
            description="The SAFE_MODE override window a route changed or read (null: none requested or open).",
        ),
    }


def _override_schema() -> Schema:
    text = {"type": "string"}
    return object_schema(
        {
            "id": text,
            "requestedBy": text,
            "reason": text,
            "minutes": {"type": "integer", "minimum": 1, "maximum": 60},
            "requestedAt": TIME,
            "requestExpiresAt": {**TIME, "description": "A request not approved by then lapses (expired)."},
            "state": {"type": "string", "enum": ["requested", "open", "ended", "expired"]},
            "approvedBy": nullable(text),
            "openedAt": nullable(TIME),
            "until": nullable({**TIME, "description": "The window closes at this time, by itself."}),
            "endedBy": nullable(text),
            "endedAt": nullable(TIME),
        },
        description="A break-glass window for SAFE_MODE (docs/governance.md): asked for by one super_admin, "
        "opened by another, closed by time or early.",
    )
