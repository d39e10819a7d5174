"""The journal actions the engine writes for a job: what :meth:`engine_hub.store.embedded.JobStore.apply` takes."""

from __future__ import annotations

import enum
from typing import Final


class Action(enum.StrEnum):
    """Every journal action the engine writes for a job, and nothing else."""

    JOB_CREATED = "job_created"
    RUN_REQUESTED = "run_requested"
    JOB_STARTED = "job_started"
    LOG_TRUNCATED = "log_truncated"
    JOB_FINISHED = "job_finished"
    CANCEL_REQUESTED = "cancel_requested"
    JOB_INTERRUPTED = "job_interrupted"
    LOG_EXPIRED = "log_expired"
    #: A plan (dry run) of a READY job ran: audit only, the job does not change (docs/governance.md).
    JOB_PLANNED = "job_planned"
    RUN_REQUEST_OPENED = "run_request_opened"
    RUN_REQUEST_APPROVED = "run_request_approved"
    RUN_REQUEST_REJECTED = "run_request_rejected"
    RUN_REQUEST_WITHDRAWN = "run_request_withdrawn"
    RUN_REQUEST_EXPIRED = "run_request_expired"
    RUN_REQUEST_SUPERSEDED = "run_request_superseded"


#: The actions that change a job's run request only (never its status): see :mod:`engine_hub.store.requests`.
REQUEST_ACTIONS: Final = frozenset(
    {
        Action.RUN_REQUEST_OPENED,
        Action.RUN_REQUEST_APPROVED,
        Action.RUN_REQUEST_REJECTED,
        Action.RUN_REQUEST_WITHDRAWN,
        Action.RUN_REQUEST_EXPIRED,
        Action.RUN_REQUEST_SUPERSEDED,
    }
)

#: Each action by its journal name.
ACTIONS: Final = {a.value: a for a in Action}
