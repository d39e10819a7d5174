"""A job as a row of the PostgreSQL ``jobs`` table, and back to its wire JSON.

The wire JSON (``shared.contract.JOB_FIELDS`` order) is what both stores
serve; this module is the one place that maps it to the columns of
migration 0001 and back, so that a job read from PostgreSQL is byte for byte
the job the embedded store serves: ``params`` keys sorted (as
:func:`engine_hub.store.entry.wire_from_created` does), history entries as
``{status, at, by, reason}``, times as RFC 3339 with milliseconds (a
``timestamptz`` keeps microseconds, so milliseconds round-trip exactly).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from engine_hub.store.entry import JobEntry, encode_wire, name_key
from shared.contract import JobStatus, format_time, outcome_of, parse_time

#: The columns :func:`entry_from_row` reads, in its order: select them with this text.
JOB_COLUMNS: Final = (
    "seq, id::text, type, name, params, status, created_at, created_by, started_at, run_by, run_reason, "
    "ended_at, exit_code, error, history, pid, cancel_requested_by, log_truncated, log_expired, node_id::text, "
    "run_request, copy_of::text, copies"
)

#: The columns :func:`row_from_wire` fills, in its order (for an ``INSERT`` or ``COPY``).
WIRE_COLUMNS: Final = (
    "id",
    "type",
    "name",
    "params",
    "status",
    "created_at",
    "created_by",
    "started_at",
    "run_by",
    "run_reason",
    "ended_at",
    "exit_code",
    "error",
    "history",
    "run_request",
    "copy_of",
    "copies",
)

_STATUSES: Final = {s.value: s for s in JobStatus}
#: The keys of a ``runRequest`` in wire order (engine_hub.store.requests.next_request), and of an approval.
_REQUEST_FIELDS: Final = (
    "id",
    "by",
    "reason",
    "at",
    "expiresAt",
    "planSha256",
    "required",
    "approvals",
    "state",
    "closedAt",
    "closedBy",
    "closeReason",
)


def history_json(*, status: JobStatus | str, at: str, by: str, reason: str | None) -> Jsonb:
    """One history entry as a one-element JSON array, to append with ``history || %s``."""
    return Jsonb([{"status": str(status), "at": at, "by": by, "reason": reason}])


def row_from_wire(wire: Mapping[str, Any]) -> dict[str, Any]:
    """The ``jobs`` columns of a job's wire JSON (for ``INSERT``; ``node_id`` and ``pid`` are not in the wire)."""
    return {
        "id": wire["id"],
        "type": wire["type"],
        "name": wire["name"],
        "params": Jsonb(wire["params"]),
        "status": wire["status"],
        "created_at": parse_time(wire["createdAt"]),
        "created_by": wire["createdBy"],
        "started_at": parse_time(wire["startedAt"]),
        "run_by": wire["runBy"],
        "run_reason": wire["runReason"],
        "ended_at": parse_time(wire["endedAt"]),
        "exit_code": wire["exitCode"],
        "error": wire["error"],
        "history": Jsonb(list(wire["history"])),
        "run_request": request_json(wire.get("runRequest")),
        "copy_of": wire.get("copyOf"),
        "copies": Jsonb(list(wire.get("copies") or ())),
    }


def request_json(request: Mapping[str, Any] | None) -> Jsonb | None:
    """A job's ``runRequest`` as the ``run_request`` column's value (``NULL`` for none)."""
    return None if request is None else Jsonb(dict(request))


def _time(value: dt.datetime | None) -> str | None:
    return format_time(value)


def wire_from_row(row: Sequence[Any]) -> dict[str, Any]:
    """The wire JSON of a row selected with :data:`JOB_COLUMNS` (a new dict in ``JOB_FIELDS`` order)."""
    (
        _seq,
        job_id,
        type_name,
        name,
        params,
        status,
        created_at,
        created_by,
        started_at,
        run_by,
        run_reason,
        ended_at,
        exit_code,
        error,
        history,
        *_,
    ) = row
    request, copy_of, copies = row[20], row[21], row[22]
    return {
        "id": job_id,
        "type": type_name,
        "engine": type_name,
        "name": name,
        "params": dict(sorted(params.items())),
        "status": status,
        "createdAt": _time(created_at),
        "createdBy": created_by,
        "startedAt": _time(started_at),
        "runBy": run_by,
        "runReason": run_reason,
        "endedAt": _time(ended_at),
        "exitCode": exit_code,
        "error": error,
        "history": [{"status": h["status"], "at": h["at"], "by": h["by"], "reason": h.get("reason")} for h in history],
        "runRequest": None if request is None else _request_wire(request),
        "outcome": outcome_of(status, error),
        "copyOf": copy_of,
        "copies": list(copies),
    }


def _request_wire(request: Mapping[str, Any]) -> dict[str, Any]:
    # jsonb sorts keys; the wire has the order engine_hub.store.requests.next_request builds.
    wire = {name: request.get(name) for name in _REQUEST_FIELDS}
    wire["approvals"] = [{"by": a["by"], "at": a["at"], "reason": a.get("reason")} for a in wire["approvals"] or ()]
    return wire


def entry_from_row(row: Sequence[Any]) -> JobEntry:
    """The store entry of a row selected with :data:`JOB_COLUMNS` (its wire JSON encoded, never packed)."""
    pid, canceller, truncated, expired = row[15], row[16], row[17], row[18]
    return JobEntry(
        row[0],
        row[1],
        row[2],
        _STATUSES[row[5]],
        encode_wire(wire_from_row(row)),
        pid if row[5] == JobStatus.RUNNING else None,
        canceller,
        truncated,
        expired,
        name_key(row[3]),
    )


#: The columns :func:`listed_entry` reads: what a list page needs, its JSON stored as served.
LISTED_COLUMNS: Final = "seq, id::text, type, status, wire"


def listed_entry(row: Sequence[Any]) -> JobEntry:
    """The entry of a row selected with :data:`LISTED_COLUMNS` (no run facts: for pages and their cursor)."""
    seq, job_id, type_name, status, wire = row
    return JobEntry(seq, job_id, type_name, _STATUSES[status], wire.encode())


async def keep_wire(conn: psycopg.AsyncConnection[Any], entries: Sequence[JobEntry]) -> None:
    """Store each entry's JSON, as :func:`entry_from_row` made it from the changed row, in ``jobs.wire``.

    Every change of a job row calls this in the change's transaction, so a list page can serve
    the stored bytes as they are (byte for byte what ``GET /api/jobs/{id}`` answers) instead of
    rebuilding 50 jobs' JSON from their columns.
    """
    async with conn.cursor() as cur:
        await cur.executemany(
            "UPDATE jobs SET wire = %s WHERE id = %s", [(entry.encoded.decode(), entry.id) for entry in entries]
        )


def node_of_row(row: Sequence[Any]) -> str | None:
    """The id of the node that claimed the run of a row selected with :data:`JOB_COLUMNS` (``None`` before)."""
    node: str | None = row[19]
    return node
