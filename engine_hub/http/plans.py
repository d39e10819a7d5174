"""``POST /api/jobs/{id}/plan``: run a READY job's plan (its dry run) and answer what it printed.

The plan is the type's ``plan`` argv, run by :meth:`engine_hub.jobs.service.JobService.plan`
(which documents the checks and the audit record); the job itself does not
change. The route's row is in :data:`engine_hub.http.routes.ROUTES`; docs/governance.md
is the guide.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from engine_hub.errors import EngineError
from engine_hub.http.auth import principal, source
from engine_hub.http.schemas import ACTOR, ADMIN_AUTH, BAD_JSON, JOB_PATH, JOURNAL, NO_JOB, TOO_LARGE, UNKNOWN_FIELD
from engine_hub.jobs.service import MAX_CONCURRENT_PLANS, SERVICE
from shared.contract import MAX_PLAN_OUTPUT, MAX_PLAN_TIMEOUT
from shared.openapi import PLAN_REFUSALS, Operation, body, closed_object, errors, ref, response
from shared.web import read_json_object

#: The route's OpenAPI operation.
OPERATION: Final = Operation(
    method="POST",
    path="/api/jobs/{id}/plan",
    operation_id="planJob",
    tags=("jobs",),
    parameters=(JOB_PATH, ACTOR),
    summary="Run a READY job's plan (dry run) and show what the run would do; the job does not change.",
    description="The plan runs with the job's params, the type's environment and working directory, in a "
    f"process group of its own ended after the type's `plan_timeout` (default 30 s, at most "
    f"{MAX_PLAN_TIMEOUT:g} s). stdout and stderr form one output, of which the first {MAX_PLAN_OUTPUT} "
    "bytes are kept (`truncated` says more was cut); `sha256` is the SHA-256 of exactly those bytes. "
    "A plan that cannot start, fails or times out still answers 200 (`exitCode` null or non-zero, "
    "`error`). Each plan leaves a `job_planned` journal record. At most "
    f"{MAX_CONCURRENT_PLANS} plans run at once (429 beyond). Admin token only.",
    request_body=body(closed_object({}), required=False),
    responses={
        "200": response("What the plan printed and how it ended.", ref("Plan")),
        **errors(NO_JOB, BAD_JSON, UNKNOWN_FIELD, *PLAN_REFUSALS, TOO_LARGE, JOURNAL, *ADMIN_AUTH),
    },
)


async def plan_job(request: web.Request) -> web.Response:
    """``POST /api/jobs/{id}/plan``: 200 ``{jobId, output, sha256, exitCode, truncated, timedOut, error, at}``.

    Runs the type's plan for a READY job and answers with what it printed;
    the job does not change (see :meth:`JobService.plan` for the refusals).
    """
    await read_json_object(request, allowed=(), error=EngineError)
    who = principal(request)
    plan = await request.app[SERVICE].plan(job_id=request.match_info["id"], actor=who.actor, source=source(request))
    return web.json_response(plan.to_json())
