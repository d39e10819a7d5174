"""``GET /api/admin/engine/jobs/{id}/logs.txt``: a job's raw log, streamed from the engine to the browser.

The engine's ``/api/jobs/{id}/logs.txt`` (plain text, an attachment named
``job-<id>.log``) is relayed chunk by chunk as it arrives, so a large log
is never held in the gateway's memory. Same access as the JSON logs route
(super_admin); the engine's 404 (``not_found``, ``log_expired``) passes
through as JSON before anything is sent. docs/gateway.md lists the route.
"""

from __future__ import annotations

from typing import Final

import structlog
from aiohttp import web

from admin_gateway.engine_client import ENGINE_CLIENT, EngineResponse
from admin_gateway.errors import EngineFailed
from admin_gateway.http.access import request_user
from admin_gateway.http.admin_api import _job_path, engine_error
from admin_gateway.http.hardening import security_headers
from admin_gateway.settings import SETTINGS
from shared.web import REQUEST_ID

log = structlog.get_logger("gateway.http")

#: What the gateway reads of an engine refusal (a JSON error): far more than one needs.
_MAX_ERROR_BODY: Final = 64 * 1024
#: Size of the chunks relayed to the browser.
_CHUNK: Final = 64 * 1024


async def get_job_log_text(request: web.Request) -> web.StreamResponse:
    """Relay the engine's log download; its refusals as the gateway's JSON errors, before the answer starts.

    A failure once the answer has begun (the engine went away mid-log)
    aborts the connection, so the browser shows a failed download, never a
    complete-looking partial file.
    """
    user = request_user(request)
    path = _job_path(request, "/logs.txt")
    client = request.app[ENGINE_CLIENT]
    idle = request.app[SETTINGS].total_timeout
    async with client.stream(path, actor=user.name, idle=idle, accept="text/plain") as upstream:
        if upstream.status != 200:
            body = await upstream.content.read(_MAX_ERROR_BODY)
            raise engine_error(
                EngineResponse(status=upstream.status, body=body, content_type=upstream.content_type or "")
            )
        if not upstream.content_type.startswith("text/plain"):
            raise EngineFailed("the engine answered with something that is not a log")
        job_id = request.match_info["id"]  # checked by _job_path: letters, digits and dashes
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/plain; charset=utf-8",
                "Content-Disposition": f'attachment; filename="job-{job_id}.log"',
                "X-Request-Id": request.get(REQUEST_ID) or "",
            }
        )
        # Sent before the wrapper sees the response, so the hardening headers go on here (CSP, no-store...).
        security_headers(request, response)
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the browser left
        except Exception as exc:
            log.error("log_download_failed", job_id=job_id, user=user.name, error=type(exc).__name__)
            if request.transport is not None:
                request.transport.abort()
    return response
