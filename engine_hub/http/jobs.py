"""The engine's HTTP API: jobs, runs, cancels, logs, types, health and metrics.

Every response is JSON (``/metrics`` is Prometheus text); every error is
``{"error": ..., "code": ...}`` raised as an :class:`EngineError`. Job
bodies are the store's pre-encoded bytes, so reads never re-serialise a job.
The legacy and compatibility routes live in :mod:`engine_hub.http.legacy`.
Paths, access rules and registration order are in :mod:`engine_hub.http.routes`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web
from multidict import CIMultiDict

from engine_hub.errors import EngineError, InvalidField, LogExpired, NodeNotReady
from engine_hub.http.auth import principal, source
from engine_hub.jobs.approvals import check_plan_sha256
from engine_hub.jobs.cluster import NODE
from engine_hub.jobs.override import OVERRIDES
from engine_hub.jobs.service import SERVICE, JobService
from engine_hub.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from engine_hub.run.logs import MAX_READ_LINES
from engine_hub.store.embedded import JobEntry
from engine_hub.store.page_cache import PAGE_CACHE, Page
from shared.contract import (
    DEFAULT_PAGE_LIMIT,
    MAX_FILTER_CHARS,
    MAX_NAME_CHARS,
    MAX_PAGE_LIMIT,
    MAX_REASON_CHARS,
    ErrorCode,
    JobStatus,
)
from shared.sse import MAX_EVENT_ID
from shared.web import parse_int_query, read_json_object
from shared.web import reject_unknown_query as _reject_unknown_query

JSON: Final = "application/json"
#: Largest ``after`` cursor accepted by the logs route (fits a signed 64-bit int).
MAX_CURSOR: Final = MAX_EVENT_ID

_JSON_HEADERS: Final = CIMultiDict({"Content-Type": JSON})


def json_bytes(body: bytes, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """Return a JSON response from already-encoded bytes."""
    # A ready header map skips aiohttp's content_type= path, measurably cheaper on the list path
    # (docs/performance.md, "Figures behind design choices").
    if headers is None:
        return web.Response(body=body, status=status, headers=_JSON_HEADERS)
    return web.Response(body=body, status=status, content_type=JSON, headers=headers)


def reject_unknown_query(request: web.Request, allowed: Iterable[str]) -> None:
    """Raise 400 ``unknown_field`` (an :class:`EngineError`) for a query parameter the route does not take."""
    _reject_unknown_query(request, allowed, error=EngineError)


def optional_text(body: Mapping[str, Any], field: str, *, max_chars: int) -> str | None:
    """Return an optional single-line string field (``null`` or absent gives ``None``), or raise 400."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_chars or not value.isprintable():
        raise InvalidField(f"{field} must be a non-empty single-line string of at most {max_chars} characters")
    return value.strip()


def required_text(body: Mapping[str, Any], field: str, *, max_chars: int) -> str:
    """Return a required single-line string field, or raise 400 naming it."""
    value = optional_text(body, field, max_chars=max_chars)
    if value is None:
        raise InvalidField(f"{field} is required (a non-empty string)")
    return value


def accepted(entry: JobEntry, message: str) -> web.Response:
    """Return the 202 ``{"status":"accepted","jobId","message","job"}`` body of a run or cancel."""
    head = json.dumps({"status": "accepted", "jobId": entry.id, "message": message}, separators=(",", ":")).encode()
    return json_bytes(head[:-1] + b',"job":' + entry.encoded + b"}", status=202)


# -- jobs ---------------------------------------------------------------------------

LIST_QUERY: Final = frozenset({"limit", "status", "type", "before", "q"})


async def list_jobs(request: web.Request) -> web.Response:
    """``GET /api/jobs`` (and legacy ``/engines/jobs``): a bare array, newest first, paged by ``before``.

    Served from the :class:`PageCache` while the store has not changed since
    the same page was built (a page depends on nothing else: the catalog is
    fixed for the process's life).
    """
    service = request.app[SERVICE]
    cache = request.app[PAGE_CACHE]
    # The raw query: two different raw queries never share a key (the decoded one can).
    key = (request.path, request.rel_url.raw_query_string)
    seq = service.backend.change_seq
    page = None if seq is None else cache.get(key, seq)
    if page is None:
        page = await _build_page(request, service)
        if seq is not None:
            cache.put(key, seq, page)
    return json_bytes(page.body, headers=None if page.link is None else {"Link": page.link})


async def _build_page(request: web.Request, service: JobService) -> Page:
    query = request.query
    if len(query) > 1 or (query and "limit" not in query):
        reject_unknown_query(request, LIST_QUERY)
    limit = parse_int_query(request, "limit", default=DEFAULT_PAGE_LIMIT, low=1, high=MAX_PAGE_LIMIT, error=EngineError)
    status = _status_filter(query.get("status"))
    type_name = await _type_filter(service, query.get("type"))
    before = None
    cursor = query.get("before")
    if cursor is not None:
        before = await service.backend.get(cursor)
        if before is None:
            raise InvalidField(f"before: unknown job id {cursor!r}")
    q = _name_filter(query.get("q"))
    items, more = await service.backend.page(limit=limit, status=status, type_name=type_name, before=before, q=q)
    link = None
    if more is not None:
        # Built by hand (urlencode costs as much as the rest of the handler). Nothing needs
        # quoting: ids are uuids, statuses plain words, and type names match the catalog's
        # [a-z][a-z0-9_.-]* (a filter value is used only if it names a known type).
        filters = "" if status is None else f"&status={status}"
        if type_name is not None:
            filters += f"&type={type_name}"
        if q is not None:  # free text: the one value that needs quoting
            filters += f"&q={quote(q, safe='')}"
        link = f'<{request.path}?limit={limit}{filters}&before={more.id}>; rel="next"'
    if items:  # brackets on the (small) end items of our list: the page body is copied once, by the join
        items[0] = b"[" + items[0]
        items[-1] += b"]"
        return Page(b",".join(items), link)
    return Page(b"[]", link)


def _name_filter(raw: str | None) -> str | None:
    """The ``q`` of a list: 1 to :data:`MAX_FILTER_CHARS` characters, else 400 ``invalid_field``."""
    if raw is not None and not 1 <= len(raw) <= MAX_FILTER_CHARS:
        raise InvalidField(f"q must be 1 to {MAX_FILTER_CHARS} characters (a part of the job name)")
    return raw


def _status_filter(raw: str | None) -> JobStatus | None:
    if raw is None:
        return None
    try:
        return JobStatus(raw.upper())
    except ValueError:
        raise InvalidField(f"status must be one of {', '.join(JobStatus)}; got {raw!r}") from None


async def _type_filter(service: JobService, raw: str | None) -> str | None:
    if raw is None or service.catalog.get(raw) is not None or await service.backend.has_type(raw):
        return raw
    allowed = ", ".join(sorted(service.catalog.types))
    raise InvalidField(f"type must be a job type ({allowed}); got {raw!r}")


async def get_job(request: web.Request) -> web.Response:
    """``GET /api/jobs/{id}``: one job with its history, or 404."""
    reject_unknown_query(request, ())
    return json_bytes((await request.app[SERVICE].get(request.match_info["id"])).encoded)


async def refuse_job_post(request: web.Request) -> web.Response:
    """``POST /api/jobs/{id}``: 405. Only ``/run`` runs a job (the original ran it here too)."""
    raise EngineError(
        "POST /api/jobs/{id} does not run a job; use POST /api/jobs/{id}/run",
        status=405,
        code=ErrorCode.METHOD_NOT_ALLOWED,
        headers={"Allow": "GET, HEAD"},
    )


async def create_job(request: web.Request) -> web.Response:
    """``POST /api/jobs`` ``{type, name?, params?}``: 201 with the new READY job."""
    body = await read_json_object(request, allowed=("type", "name", "params"), required=True, error=EngineError)
    type_name = body.get("type")
    if not isinstance(type_name, str) or not type_name:
        raise InvalidField("type is required (a job type name; see GET /api/types)")
    name = optional_text(body, "name", max_chars=MAX_NAME_CHARS)
    who = principal(request)
    entry = await request.app[SERVICE].create(
        type_name=type_name, name=name, params=body.get("params"), actor=who.actor, source=source(request)
    )
    return json_bytes(entry.encoded, status=201, headers={"Location": f"/api/jobs/{entry.id}"})


async def open_override(request: web.Request, body: dict[str, Any]) -> str | None:
    """The body's ``overrideId``: the SAFE_MODE break-glass window a change that starts a run is made in.

    ``None`` without one; else the window must be open at this moment (409
    ``override_closed``), and its id goes into the run's record.
    """
    override_id = optional_text(body, "overrideId", max_chars=MAX_NAME_CHARS)
    if override_id is not None:
        await request.app[OVERRIDES].require_open(override_id)
    return override_id


async def run_job(request: web.Request) -> web.Response:
    """``POST /api/jobs/{id}/run`` ``{reason?, planSha256?, overrideId?}``: 202 and the job, RUNNING.

    The only way a job runs.

    For a type that needs approval: 202 and the job, READY, with its new open ``runRequest``.
    ``overrideId`` (a gateway under SAFE_MODE sends it) names the override window the run is made in: it
    must be open at this moment (else 409 ``override_closed``) and is recorded in the run's record.
    """
    body = await read_json_object(request, allowed=("reason", "planSha256", "overrideId"), error=EngineError)
    reason = optional_text(body, "reason", max_chars=MAX_REASON_CHARS)
    plan = check_plan_sha256(body.get("planSha256"))
    override_id = await open_override(request, body)
    who = principal(request)
    entry = await request.app[SERVICE].run(
        job_id=request.match_info["id"],
        reason=reason,
        actor=who.actor,
        source=source(request),
        plan_sha256=plan,
        override_id=override_id,
    )
    if entry.status is JobStatus.READY:
        return accepted(entry, "Run requested: it starts once approved")
    return accepted(entry, "Job execution started")


async def cancel_job(request: web.Request) -> web.Response:
    """``POST /api/jobs/{id}/cancel``: 202 for a RUNNING job; its run ends FAILED "cancelled by <actor>"."""
    await read_json_object(request, allowed=(), error=EngineError)
    who = principal(request)
    entry = await request.app[SERVICE].cancel(job_id=request.match_info["id"], actor=who.actor, source=source(request))
    return accepted(entry, "Job cancellation requested")


async def job_logs(request: web.Request) -> web.Response:
    """``GET /api/jobs/{id}/logs?after=N&limit=M``: ``{"lines", "next", "truncated"}``, oldest first.

    404 ``log_expired`` when log retention has deleted the job's output (the job itself stays).
    """
    reject_unknown_query(request, ("after", "limit"))
    service = request.app[SERVICE]
    entry = await service.get(request.match_info["id"])
    if entry.log_expired:
        raise LogExpired(f"the output of job {entry.id} was deleted by log retention; the job and its history are kept")
    job_id = entry.id
    after = parse_int_query(request, "after", default=0, low=0, high=MAX_CURSOR, error=EngineError)
    limit = parse_int_query(request, "limit", default=MAX_READ_LINES, low=1, high=MAX_READ_LINES, error=EngineError)
    return web.json_response((await service.logs.read(job_id, after=after, limit=limit)).to_json())


# -- catalog, health, metrics ----------------------------------------------------------


async def list_types(request: web.Request) -> web.Response:
    """``GET /api/types``: every job type with its param declarations."""
    reject_unknown_query(request, ())
    return web.json_response(request.app[SERVICE].catalog.to_json())


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz`` (no token): 200 ``{"status": "ok"}``, or 200 ``{"status": "degraded", ...}``.

    Degraded means the journal cannot be written: every change is refused
    (503 ``journal_unavailable``) while reads still work. That is why the
    answer stays 200: a load balancer should keep sending reads, and a
    restart would not fix a full or failing disk. Monitoring alerts on the
    ``status`` field (or ``engine_journal_healthy`` in ``/metrics``).
    """
    if request.app[SERVICE].backend.healthy:
        return web.json_response({"status": "ok"})
    return web.json_response(
        {
            "status": "degraded",
            "journal": "unavailable",
            "detail": "the journal cannot be written: changes are refused, reads work",
        }
    )


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz`` (no token): 200 ``{"status": "ready"}`` when this engine can take changes and start runs.

    503 ``node_not_ready`` otherwise: the store cannot be written, or (a node
    of a PostgreSQL store) the node holds no registration: it fenced itself
    and is registering again, so a load balancer should send requests
    elsewhere meanwhile. Unlike ``/healthz``, this answer says "send me work".
    """
    service = request.app[SERVICE]
    node = request.app.get(NODE)
    if node is not None and not node.ready:
        raise NodeNotReady("this engine node holds no registration in the store right now (re-registering)")
    if not service.backend.healthy:
        raise NodeNotReady("this engine cannot write its store right now")
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text exposition."""
    service = request.app[SERVICE]
    counts = await service.backend.counts()
    text = service.metrics.render(
        jobs_by_status=counts,
        journal_healthy=service.backend.healthy,
        log_bytes=service.logs.disk_bytes,
        open_requests=len(await service.backend.open_requests()),
    )
    return web.Response(text=text, headers={"Content-Type": METRICS_CONTENT_TYPE})
