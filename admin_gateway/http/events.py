"""``GET /api/admin/engine/events``: the engine's job changes, and the gateway's own state, live for the panel.

Any signed-in user may watch (acting still needs super_admin). The stream
(Server-Sent Events) carries:

- each job change as the engine sent it (``id`` its seq, ``event`` the
  action, ``data`` the job's JSON), from the gateway's one upstream stream
  (:mod:`admin_gateway.relay`); ``ready`` or ``reset`` as on the engine's;
- ``engine`` (``{"state": "up"|"down"|"unknown"}``) and ``safe_mode``
  (``{"enabled": …}``) at the start and on each change;
- ``signed_out`` (``{"reason": "expired"|"signed_out"}``) when the session
  ends, checked every ``events_session_check`` seconds without keeping it
  alive; the stream then closes.

Streams are capped per session and in total (429 ``throttled``). Each is
logged once, at its end, with its duration.
"""

from __future__ import annotations

import time
from typing import Final

import structlog
from aiohttp import web

from admin_gateway.auth.guards import session_end
from admin_gateway.auth.sessions import load_session
from admin_gateway.errors import GatewayError, Throttled
from admin_gateway.http.access import request_user
from admin_gateway.http.hardening import security_headers
from admin_gateway.http.schemas import API_TAGS, NO_SESSION, PASSWORD_FIRST, E
from admin_gateway.relay import RELAY
from admin_gateway.settings import SETTINGS
from shared.openapi import ErrorCase, Operation, errors, query, response
from shared.sse import (
    HEARTBEAT,
    MAX_EVENT_ID,
    MESSAGE_SCHEMA,
    abort_connection,
    event_cursor,
    first_frames,
    notice,
    sse_response,
)

log = structlog.get_logger("gateway.events")

#: The route's OpenAPI operation (its row is in :data:`admin_gateway.http.routes.api.API`).
OPERATION: Final = Operation(
    method="GET",
    path="/api/admin/engine/events",
    operation_id="streamEvents",
    tags=API_TAGS,
    parameters=(
        query(
            "after",
            {"type": "integer", "minimum": 0, "maximum": MAX_EVENT_ID},
            "Resume after this event id; a `Last-Event-ID` header (what a reconnecting EventSource sends) "
            "takes precedence.",
        ),
    ),
    summary="Job changes and the gateway's state, live, as Server-Sent Events (any signed-in user).",
    description="Each job change as the engine sends it (`id` its seq, `event` the action, `data` the job's "
    'JSON); `ready` or `reset` (list again) first; `engine` (`{"state": "up"|"down"|"unknown"}`) and '
    '`safe_mode` (`{"enabled": …}`) at the start and on each change; `signed_out` '
    '(`{"reason": "expired"|"signed_out"}`) when the session ends, then the stream closes. A comment '
    "every 15 s keeps it open. One upstream stream per gateway serves every page.",
    responses={
        "200": response(
            "The stream: one object per message, `data` holding JSON text.", MESSAGE_SCHEMA, media="text/event-stream"
        ),
        **errors(
            ErrorCase(status=400, code=E.UNKNOWN_FIELD, when="a query parameter other than `after`"),
            ErrorCase(status=400, code=E.INVALID_FIELD, when="`after` or `Last-Event-ID` is not an event id"),
            NO_SESSION,
            PASSWORD_FIRST,
            ErrorCase(
                status=429, code=E.THROTTLED, when="the session or the gateway has as many streams open as it allows"
            ),
        ),
    },
)


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Answer with the live stream until the client leaves, its session ends, or the gateway stops."""
    user = request_user(request)
    after = event_cursor(request, error=GatewayError)
    session_id = (await load_session(request)).id
    assert session_id is not None  # the route's access rule found a signed-in session
    settings = request.app[SETTINGS]
    relay = request.app[RELAY]
    hub = relay.hub
    open_streams = relay.per_session
    if hub.full():
        raise Throttled(
            f"too many live streams are open ({hub.max_streams}); try again later", headers={"Retry-After": "5"}
        )
    if open_streams[session_id] >= settings.events_per_session:
        raise Throttled(
            f"this session already has {settings.events_per_session} live streams open; close a tab",
            headers={"Retry-After": "5"},
        )

    relay.watch()
    stream, resume = hub.open(after, on_drop=abort_connection(request), foreign=await hub.foreign(after))
    open_streams[session_id] += 1
    started = time.monotonic()
    reason = "client closed"
    response = sse_response(request)
    # Sent before the wrapper sees the response, so the hardening headers go on here (CSP and the rest).
    security_headers(request, response)
    try:
        await response.prepare(request)
        await response.write(first_frames(resume, after) + relay.state())
        stream.sent += len(resume.frames)
        check = settings.events_session_check
        next_check = started + check
        quiet_since = time.monotonic()
        # take() gives None only once the gateway ended the stream (stream.ended says why).
        while (data := await stream.take(min(check, hub.heartbeat))) is not None:
            now = time.monotonic()
            if now >= next_check:
                next_check = now + check
                ended = await session_end(request, session_id)
                if ended is not None:
                    reason = f"session {ended}"
                    await response.write(notice("signed_out", {"reason": ended}))
                    break
            if data:
                await response.write(data)
                quiet_since = now
            elif now - quiet_since >= hub.heartbeat:
                await response.write(HEARTBEAT)
                quiet_since = now
    except ConnectionError:
        pass  # the client left
    finally:
        hub.close(stream)
        open_streams[session_id] -= 1
        if open_streams[session_id] <= 0:
            del open_streams[session_id]
        reason = stream.ended or reason
        fields = {
            "user": user.name,
            "reason": reason,
            "seconds": round(time.monotonic() - started, 3),
            "events": stream.sent,
        }
        if reason.startswith("slow consumer"):
            log.warning("live_stream_dropped", **fields, peak_bytes=stream.peak_bytes)
        else:
            log.info("live_stream_ended", **fields)
    return response
