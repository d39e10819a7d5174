"""``GET /api/events``: every job change as Server-Sent Events, resumable by ``Last-Event-ID``.

Each change is one message: ``id`` is the change's seq (its audit record's),
``event`` the action (``job_created``, ``run_requested``, ``job_started``,
``job_finished``, ``cancel_requested``, ``job_interrupted``, ``log_truncated``,
``log_expired``, ``job_planned``: a plan ran, the job is unchanged, and a
run request's ``run_request_opened|approved|rejected|withdrawn|expired|superseded``),
``data`` the job's JSON after it (as ``GET /api/jobs/{id}``
answers). A stream opened without a cursor starts with ``ready`` (the newest
seq); one resuming from further back than the engine keeps starts with
``reset`` (list again, then follow). A comment line keeps idle connections
open. The hub behind it is :mod:`engine_hub.store.events`.
"""

from __future__ import annotations

import time
from typing import Final

import structlog
from aiohttp import web

from engine_hub.errors import EngineError, TooManyStreams
from engine_hub.http.schemas import BAD_QUERY, EVENTS_PARAMS, SUBMIT_AUTH, UNKNOWN_QUERY, E
from engine_hub.store.events import EVENTS
from shared.openapi import ErrorCase, Operation, errors, response
from shared.sse import HEARTBEAT, MESSAGE_SCHEMA, abort_connection, event_cursor, first_frames, sse_response

log = structlog.get_logger("engine.events")

#: The route's OpenAPI operation (its row is in :data:`engine_hub.http.routes.ROUTES`).
OPERATION: Final = Operation(
    method="GET",
    path="/api/events",
    operation_id="streamEvents",
    tags=("jobs",),
    parameters=EVENTS_PARAMS,
    summary="Every job change as Server-Sent Events, resumable by `Last-Event-ID`.",
    description="One message per change: `id` the change's seq, `event` the action (`job_created`, "
    "`run_requested`, `job_started`, `job_finished`, `cancel_requested`, `job_interrupted`, `log_truncated`, "
    "`log_expired`, `job_planned`: a plan ran, the job is unchanged, `run_request_opened`, `run_request_approved`, "
    "`run_request_rejected`, `run_request_withdrawn`, `run_request_expired`, `run_request_superseded`), "
    "`data` the job's JSON after it. "
    "Without a cursor the stream starts with `ready` "
    '(`{"seq": N}`); from a cursor older than the engine keeps, or one from another store, with `reset` (list '
    "again). A comment every 15 s keeps it open; a client that does not read is disconnected.",
    responses={
        "200": response(
            "The stream (never ends by itself): one object per message, `data` holding JSON text.",
            MESSAGE_SCHEMA,
            media="text/event-stream",
        ),
        **errors(
            UNKNOWN_QUERY,
            BAD_QUERY,
            *SUBMIT_AUTH,
            ErrorCase(status=429, code=E.THROTTLED, when="the engine has as many streams open as it allows"),
        ),
    },
)


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Answer with the change stream until the client leaves, falls behind, or the engine stops."""
    after = event_cursor(request, error=EngineError)
    hub = request.app[EVENTS]
    if hub.full():
        raise TooManyStreams(
            f"too many event streams are open ({hub.max_streams}); close one or try again later",
            headers={"Retry-After": "5"},
        )

    foreign = await hub.foreign(after)
    stream, resume = hub.open(after, on_drop=abort_connection(request), foreign=foreign)
    started = time.monotonic()
    response = sse_response(request)
    try:
        await response.prepare(request)
        await response.write(first_frames(resume, after))
        stream.sent += len(resume.frames)
        # take() gives None only once the engine ended the stream (stream.ended says why).
        while (data := await stream.take(hub.heartbeat)) is not None:
            await response.write(data or HEARTBEAT)
    except ConnectionError:
        pass  # the client left
    finally:
        hub.close(stream)
        # The engine's own reason, else the client's leaving (a dropped client's handler may even be cancelled).
        reason = stream.ended or "client closed"
        fields = {"reason": reason, "seconds": round(time.monotonic() - started, 3), "events": stream.sent}
        if stream.ended is not None and stream.ended.startswith("slow consumer"):
            log.warning("event_stream_dropped", **fields, peak_bytes=stream.peak_bytes)
        else:
            log.info("event_stream_ended", **fields)
    return response
