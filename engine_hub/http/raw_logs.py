"""``GET /api/jobs/{id}/logs.txt``: a job's output as one plain-text download (issue 16).

The lines' text joined by ``\\n`` (no trailing newline), as the job wrote them
(what ``engine-hub jobs logs --raw`` prints), served as ``text/plain`` with
``Content-Disposition: attachment``. It is streamed: read one page of
:data:`engine_hub.run.logs.MAX_READ_LINES` lines at a time from the log store and
written out, so a 10 MiB log is never held whole in memory. A RUNNING job's
download ends with the last line written when the read reaches it. The
route's row is in :data:`engine_hub.http.routes.ROUTES`.
"""

from __future__ import annotations

from typing import Final

import structlog
from aiohttp import web

from engine_hub.errors import LogExpired
from engine_hub.http.jobs import reject_unknown_query
from engine_hub.http.schemas import ACTOR, JOB_PATH, NO_JOB, SUBMIT_AUTH, UNKNOWN_QUERY, E
from engine_hub.jobs.service import SERVICE
from engine_hub.run.logs import MAX_READ_LINES
from shared.openapi import ErrorCase, Operation, errors, header
from shared.web import REQUEST_ID

log = structlog.get_logger("engine.http")

#: The download's media type.
TEXT: Final = "text/plain; charset=utf-8"


def download_headers(job_id: str, request_id: str | None) -> dict[str, str]:
    """The headers of a log download: plain text, an attachment named ``job-<id>.log``, never cached.

    Set before the answer starts (a streamed answer gets no headers afterwards). ``job_id`` is a job's
    id (a uuid), so the file name needs no quoting.
    """
    headers = {
        "Content-Type": TEXT,
        "Content-Disposition": f'attachment; filename="job-{job_id}.log"',
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return headers


async def job_log_text(request: web.Request) -> web.StreamResponse:
    """``GET /api/jobs/{id}/logs.txt``: 200 with the output as text; 404 ``not_found`` / ``log_expired`` first.

    A failure once the answer has begun (the store went down mid-read) cannot
    become an error answer any more: the connection is aborted, so the
    client sees a cut download, never a complete-looking one.
    """
    reject_unknown_query(request, ())
    service = request.app[SERVICE]
    entry = await service.get(request.match_info["id"])
    if entry.log_expired:
        raise LogExpired(f"the output of job {entry.id} was deleted by log retention; the job and its history are kept")
    # The first page is read before the answer starts: a store that is down is still a JSON 503.
    page = await service.logs.read(entry.id, after=0, limit=MAX_READ_LINES)
    response = web.StreamResponse(headers=download_headers(entry.id, request.get(REQUEST_ID)))
    await response.prepare(request)
    first = True
    try:
        while page.lines:
            text = "\n".join(line["text"] for line in page.lines)
            await response.write((text if first else "\n" + text).encode())
            first = False
            page = await service.logs.read(entry.id, after=page.next, limit=MAX_READ_LINES)
        await response.write_eof()
    except ConnectionError:
        pass  # the client left
    except Exception as exc:
        log.error("log_download_failed", job_id=entry.id, error=type(exc).__name__)
        if request.transport is not None:
            request.transport.abort()
    return response


#: The route's OpenAPI operation.
OPERATION: Final = Operation(
    method="GET",
    path="/api/jobs/{id}/logs.txt",
    operation_id="getJobLogText",
    tags=("jobs",),
    parameters=(JOB_PATH, ACTOR),
    summary="A job's captured output as a plain-text download (the lines joined by a newline), streamed.",
    responses={
        "200": {
            "description": "The job's output (empty when it printed nothing).",
            "headers": {
                "Content-Disposition": header('`attachment; filename="job-<id>.log"`.'),
            },
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **errors(
            NO_JOB,
            UNKNOWN_QUERY,
            *SUBMIT_AUTH,
            ErrorCase(status=404, code=E.LOG_EXPIRED, when="log retention deleted the job's output (the job stays)"),
        ),
    },
)
