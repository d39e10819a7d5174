"""The legacy views of the original engine (JobResult, EngineLog), derived from jobs and records by both stores.

The shapes are ``shared.contract``'s and never change: the embedded store
builds them as it applies records (:mod:`engine_hub.store.embedded`), the
PostgreSQL store from its rows and audit records (:mod:`engine_hub.store.postgres`).
Only the actions the original knew have an EngineLog entry: a run request's
steps have none.
"""

from __future__ import annotations

from typing import Any, Final

from engine_hub.store.actions import Action
from shared.contract import JobStatus, LogLevel
from shared.journal.chain import Record

#: The JobResult output of a job that ended DONE (the original's wording).
RESULT_OK: Final = "Job completed successfully"


def result_of(wire: dict[str, Any]) -> dict[str, Any]:
    """The legacy JobResult of a finished job's wire JSON (its ``createdAt`` is the job's ``endedAt``)."""
    output = RESULT_OK if wire["status"] == JobStatus.DONE else f"Job failed: {wire['error']}"
    return {
        "jobId": wire["id"],
        "engine": wire["type"],
        "name": wire["name"],
        "output": output,
        "createdAt": wire["endedAt"],
    }


def engine_log_of(record: Record) -> dict[str, Any] | None:
    """The legacy EngineLog entry (``shared.contract.engine_log_json`` shape) a record stands for, if any.

    Both stores derive the legacy log from the records: the embedded store
    as it applies them, the PostgreSQL store from its audit rows.
    """
    action, data = record.action, record.data
    if action == Action.JOB_CREATED:
        level, message = LogLevel.INFO, "Job created"
    elif action == Action.RUN_REQUESTED:
        level, message = LogLevel.INFO, "Job started"
    elif action in (Action.JOB_FINISHED, Action.JOB_INTERRUPTED):
        if data.get("status", "FAILED") == JobStatus.DONE:
            level, message = LogLevel.INFO, "Job finished"
        else:
            level, message = LogLevel.ERROR, f"Job failed: {data.get('error')}"
    elif action == Action.CANCEL_REQUESTED:
        level, message = LogLevel.WARN, f"Cancel requested by {record.actor}"
    else:
        return None
    return {"level": str(level), "message": message, "jobId": record.job_id, "timestamp": record.at}
