"""Run again (issue 16): a new READY job with the type, name and params of a finished one.

The new job's ``copyOf`` names the old one, and the same change (one
``job_created`` record whose job JSON carries ``copyOf``) appends the new id
to the old job's ``copies``: both stores apply the link in that one change
(:meth:`engine_hub.store.embedded.JobStore.apply`,
:func:`engine_hub.store.pg_rows.link_copy`). Nothing runs: the copy needs its own RUN.
"""

from __future__ import annotations

from engine_hub.errors import Conflict
from engine_hub.jobs.service import JobService
from engine_hub.store.entry import JobEntry
from shared.contract import ErrorCode, JobStatus


async def copy_job(service: JobService, *, job_id: str, actor: str, source: str) -> JobEntry:
    """Create the copy of finished job ``job_id`` as ``actor``; return the new READY job's entry.

    The params are checked against the type as it is now, as a create's are.
    Raises 404 ``not_found``, 409 ``not_finished`` (the job is READY or
    RUNNING: run that one instead), 400 ``unknown_type`` / ``invalid_param``
    (the catalog changed since), 503 as :meth:`JobService.create`.
    """
    old = await service.get(job_id)
    if old.status not in (JobStatus.DONE, JobStatus.FAILED):
        raise Conflict(
            f"job {job_id} is {old.status}: only a finished (DONE or FAILED) job can be run again",
            code=ErrorCode.NOT_FINISHED,
        )
    job = old.job
    return await service.create(
        type_name=job.type, name=job.name, params=job.params, actor=actor, source=source, copy_of=job.id
    )
