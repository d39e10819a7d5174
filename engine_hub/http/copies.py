"""``POST /api/jobs/{id}/copy``: Run again (issue 16), :func:`engine_hub.jobs.copies.copy_job` over HTTP.

The route's row is in :data:`engine_hub.http.routes.ROUTES`; docs/api.md describes the answers.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from engine_hub.errors import EngineError
from engine_hub.http.auth import principal, source
from engine_hub.http.jobs import json_bytes
from engine_hub.http.schemas import (
    ACTOR,
    BAD_JSON,
    JOB_PATH,
    JOURNAL,
    LOCATION,
    NO_JOB,
    SUBMIT_AUTH,
    TOO_LARGE,
    UNKNOWN_FIELD,
    E,
)
from engine_hub.jobs import copies
from engine_hub.jobs.service import SERVICE
from shared.openapi import ErrorCase, Operation, body, closed_object, errors, ref, response
from shared.web import read_json_object

JOBS: Final = ("jobs",)


async def copy_job(request: web.Request) -> web.Response:
    """``POST /api/jobs/{id}/copy`` (no body, or ``{}``): 201 with the new READY job (``Location``); runs nothing."""
    await read_json_object(request, allowed=(), required=False, error=EngineError)
    entry = await copies.copy_job(
        request.app[SERVICE], job_id=request.match_info["id"], actor=principal(request).actor, source=source(request)
    )
    return json_bytes(entry.encoded, status=201, headers={"Location": f"/api/jobs/{entry.id}"})


#: The route's OpenAPI operation.
OPERATION: Final = Operation(
    method="POST",
    path="/api/jobs/{id}/copy",
    operation_id="copyJob",
    tags=JOBS,
    parameters=(JOB_PATH, ACTOR),
    summary="Run again: a new READY job with the type, name and params of a finished one (runs nothing).",
    description="The new job's `copyOf` is the old job's id; the same change appends the new id to the old "
    "job's `copies`. The new job needs its own RUN.",
    request_body=body(closed_object({}), required=False),
    responses={
        "201": response("The new job, READY.", ref("Job"), headers={"Location": LOCATION}),
        **errors(
            NO_JOB,
            BAD_JSON,
            UNKNOWN_FIELD,
            ErrorCase(status=409, code=E.NOT_FINISHED, when="the job is READY or RUNNING (not DONE or FAILED)"),
            ErrorCase(status=400, code=E.UNKNOWN_TYPE, when="the job's type left the catalog"),
            ErrorCase(status=400, code=E.INVALID_PARAM, when="the job's params no longer fit its type's declaration"),
            TOO_LARGE,
            JOURNAL,
            *SUBMIT_AUTH,
        ),
    },
)
