"""Routes kept for clients of the original engine: results, engine logs and the legacy job routes.

Shapes follow the original contract (bare arrays of JobResult and EngineLog,
``{"engine", "name"}`` bodies). Unlike the original, the legacy
``POST /engines/jobs/run`` only *creates* a READY job: nothing here ever runs
one.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from engine_hub.errors import EngineError
from engine_hub.http.auth import principal, source
from engine_hub.http.jobs import json_bytes, reject_unknown_query, required_text
from engine_hub.http.schemas import ACTOR, BAD_QUERY, SUBMIT_AUTH, UNKNOWN_QUERY, limit
from engine_hub.jobs.service import SERVICE
from shared.contract import MAX_NAME_CHARS
from shared.openapi import Operation, errors, ref, response
from shared.web import parse_int_query, read_json_object

#: The original's defaults and our upper bounds for ``limit``.
RESULTS_DEFAULT_LIMIT: Final = 10
RESULTS_MAX_LIMIT: Final = 1000
LOGS_DEFAULT_LIMIT: Final = 20
LOGS_MAX_LIMIT: Final = 500


async def job_results(request: web.Request) -> web.Response:
    """``GET /api/jobs/results`` and ``/engines/jobs/results``: the newest JobResults, oldest first."""
    reject_unknown_query(request, ("limit",))
    limit = parse_int_query(
        request, "limit", default=RESULTS_DEFAULT_LIMIT, low=1, high=RESULTS_MAX_LIMIT, error=EngineError
    )
    return web.json_response(await request.app[SERVICE].backend.results(limit))


async def engine_logs(request: web.Request) -> web.Response:
    """``GET /api/engines/logs``, ``/engines/logs`` and ``/logs``: the newest EngineLogs, oldest first."""
    reject_unknown_query(request, ("limit",))
    limit = parse_int_query(request, "limit", default=LOGS_DEFAULT_LIMIT, low=1, high=LOGS_MAX_LIMIT, error=EngineError)
    return web.json_response(await request.app[SERVICE].backend.engine_logs(limit))


async def legacy_create(request: web.Request) -> web.Response:
    """``POST /engines/jobs/run`` ``{"engine", "name"}``: 202 with a new READY job. It never runs it."""
    body = await read_json_object(request, allowed=("engine", "name"), required=True, error=EngineError)
    engine = required_text(body, "engine", max_chars=MAX_NAME_CHARS)
    name = required_text(body, "name", max_chars=MAX_NAME_CHARS)
    who = principal(request)
    entry = await request.app[SERVICE].create(
        type_name=engine, name=name, params=None, actor=who.actor, source=source(request)
    )
    return json_bytes(entry.encoded, status=202, headers={"Location": f"/api/jobs/{entry.id}"})


def results_operation(path: str, operation_id: str) -> Operation:
    """A legacy JobResults read (two paths serve it)."""
    return Operation(
        method="GET",
        path=path,
        operation_id=operation_id,
        tags=("compat",),
        parameters=(limit(RESULTS_DEFAULT_LIMIT, RESULTS_MAX_LIMIT), ACTOR),
        summary="Legacy: the newest JobResults (finished jobs), oldest first.",
        responses={
            "200": response("JobResults.", {"type": "array", "items": ref("JobResult")}),
            **errors(UNKNOWN_QUERY, BAD_QUERY, *SUBMIT_AUTH),
        },
    )


def engine_logs_operation(path: str, operation_id: str) -> Operation:
    """A legacy EngineLog read (three paths serve it)."""
    return Operation(
        method="GET",
        path=path,
        operation_id=operation_id,
        tags=("compat",),
        parameters=(limit(LOGS_DEFAULT_LIMIT, LOGS_MAX_LIMIT), ACTOR),
        summary="Legacy: the newest EngineLog entries, oldest first.",
        responses={
            "200": response("EngineLogs.", {"type": "array", "items": ref("EngineLog")}),
            **errors(UNKNOWN_QUERY, BAD_QUERY, *SUBMIT_AUTH),
        },
    )
