"""The Engine Jobs panel's pages: the jobs table, one job, the engine log (server-rendered HTML).

Pages are rendered with Jinja2 (autoescaping on, so every user- or
engine-provided string is escaped) and enhanced by small same-origin ES
modules under ``static/js/`` that talk to the JSON API (:mod:`admin_gateway.http.admin_api`).
Nothing is inline: no ``<script>`` without ``src``, no ``style=``, no
``on*=`` handlers, so the CSP ``default-src 'self'`` holds on every page.

Access is the route table's (super_admin; :mod:`admin_gateway.http.access`
redirects anonymous visitors to ``/login`` and shows other roles the "no
access" page). Whether a RUN button is rendered is decided here (:func:`can_run`) and again in
``static/js/dom.js`` from the API's ``safeMode``; the API enforces it anyway.

The DOM carries stable hooks for the browser tests: ``data-testid`` on the
table, rows (with ``data-job-id`` and ``data-status``), buttons, dialogs and
banners. See ``templates/_macros.html`` and ``static/js/dom.js``.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import attrs
from aiohttp import web
from yarl import URL

from admin_gateway.audit.timeline import Timeline, TimelineQuery, read_timeline, timeline_context
from admin_gateway.auth.guards import User
from admin_gateway.engine_client import ENGINE_CLIENT, request_id_of
from admin_gateway.errors import GatewayError
from admin_gateway.http.access import request_user
from admin_gateway.http.engine_log_page import FETCH as LOG_FETCH
from admin_gateway.http.engine_log_page import PAGE_SIZE as LOG_PAGE_SIZE
from admin_gateway.http.engine_log_page import BadCursor, page_of, parse_cursor
from admin_gateway.http.templates import render_template
from admin_gateway.safe_mode import OVERRIDE_WINDOW
from admin_gateway.settings import SETTINGS
from shared.contract import JOB_FIELDS, MAX_FILTER_CHARS, JobStatus, format_time, utcnow
from shared.web import parse_decimal

#: Jobs per page in the panel's table.
PAGE_SIZE = 50
_MAX_PAGE_SIZE = 500


def can_run(job: dict[str, Any], *, user: User, safe_mode: bool) -> bool:
    """RUN is offered only to a super_admin, with SAFE_MODE off, on a READY job whose run request is not open."""
    waiting = isinstance(request := job.get("runRequest"), dict) and request.get("state") == "open"
    return user.is_super_admin and not safe_mode and job.get("status") == JobStatus.READY and not waiting


def can_cancel(job: dict[str, Any], *, user: User) -> bool:
    """Cancel is offered to a super_admin on a RUNNING job (SAFE_MODE never blocks stopping work)."""
    return user.is_super_admin and job.get("status") == JobStatus.RUNNING


def _clean_job(raw: Any) -> dict[str, Any] | None:
    """Return the engine's job with every wire field present (``None`` when absent), or ``None``.

    The templates then never meet a missing key, whatever the engine sent.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
        return None
    job = {name: raw.get(name) for name in JOB_FIELDS}
    if not isinstance(job["params"], dict):
        job["params"] = {}
    history = job["history"] if isinstance(job["history"], list) else []
    job["history"] = [
        {"status": h.get("status"), "at": h.get("at"), "by": h.get("by"), "reason": h.get("reason")}
        for h in history
        if isinstance(h, dict)
    ]
    return job


def _see_other(location: str) -> web.Response:
    # A returned response, not a raised HTTPSeeOther: the shared request wrapper would answer a
    # raised redirect the same way (shared/web.py, _http_exception_response), but returning it
    # keeps the page's control flow plain and skips the exception path.
    return web.Response(status=303, headers={"Location": location})


async def index(request: web.Request) -> web.StreamResponse:
    """``GET /``: the panel starts at the jobs list."""
    return _see_other("/admin/engine/jobs")


@attrs.frozen(kw_only=True)
class EngineRead:
    """What a page got from the engine: the parsed JSON body, or why there is none.

    ``down`` means unreachable, hung or broken (an outage); otherwise
    ``status`` is the engine's answer and ``message`` its error text.
    """

    status: int | None
    data: Any = None
    down: bool = False
    message: str | None = None
    next_cursor: str | None = None

    def banners(self, what: str) -> dict[str, Any]:
        """Template context for the outage banner, or the error banner when the engine refused ``what``."""
        refused = not self.down and self.status not in (200, 404)
        return {
            "engine_down": self.down,
            "engine_warning": self.message if self.down else None,
            "error_message": f"The engine refused {what}: {self.message or 'unexpected answer'}" if refused else None,
        }


async def _action_rules(request: web.Request, user: User) -> dict[str, Any]:
    """Template context: the per-job RUN/Cancel decisions (:func:`can_run`, :func:`can_cancel`).

    Under SAFE_MODE an open break-glass window (asked of the engine, fail
    closed) lets RUN be offered; ``override_open`` tells the page's script.
    """
    held = request.app[SETTINGS].safe_mode
    if held:
        held = await request.app[OVERRIDE_WINDOW].open_window(request, user.name) is None
    return {
        "can_run": lambda job: can_run(job, user=user, safe_mode=held),
        # What SAFE_MODE alone holds back: shown as a RUN that says why instead of nothing.
        "run_held": lambda job: held and can_run(job, user=user, safe_mode=False),
        "can_cancel": lambda job: can_cancel(job, user=user),
        "override_open": request.app[SETTINGS].safe_mode and not held,
    }


async def _engine_read(request: web.Request, user: User, path: str, query: dict[str, str] | None = None) -> EngineRead:
    """GET ``path`` from the engine as ``user``; never raises for an engine problem."""
    try:
        resp = await request.app[ENGINE_CLIENT].call(
            "GET", path, actor=user.name, query=query, request_id=request_id_of(request)
        )
    except GatewayError as exc:
        return EngineRead(status=None, down=True, message=exc.message)
    try:
        data = json.loads(resp.body) if resp.is_json else None
    except ValueError:
        data = None
    if resp.status == 200 and data is not None:
        cursor = resp.next_url.query.get("before") if resp.next_url is not None else None
        return EngineRead(status=200, data=data, next_cursor=cursor)
    message = data.get("error") if isinstance(data, dict) and isinstance(data.get("error"), str) else None
    # Client-side mistakes (a bad filter, an unknown id) are not outages.
    return EngineRead(
        status=resp.status, down=resp.status >= 500 or resp.status in (401, 403) or data is None, message=message
    )


def _query_text(request: web.Request, name: str) -> str:
    """A short, stripped query parameter ('' when absent): filters are echoed into links and forms."""
    return request.query.get(name, "").strip()[:MAX_FILTER_CHARS]


def _page_size(request: web.Request) -> int:
    value = parse_decimal(request.query.get("limit", ""))
    return value if value is not None and 1 <= value <= _MAX_PAGE_SIZE else PAGE_SIZE


def _type_names(catalog: Any, jobs: list[dict[str, Any]], chosen: str) -> list[str]:
    """The Type filter's choices: the catalog's types, plus types seen on the page and the chosen one, sorted.

    A type that left the catalog still has jobs, and a catalog the engine did not
    answer still leaves the filter usable.
    """
    names = (
        {t["name"] for t in catalog if isinstance(t, dict) and isinstance(t.get("name"), str)}
        if isinstance(catalog, list)
        else set()
    )
    names.update(job["type"] for job in jobs if isinstance(job.get("type"), str))
    if chosen:
        names.add(chosen)
    return sorted(name for name in names if name)


async def jobs_page(request: web.Request) -> web.StreamResponse:
    """``GET /admin/engine/jobs``: the jobs table (newest first), filters, an "Older" cursor link.

    ``status`` and ``type`` filter; ``q`` is the engine's case-insensitive name search. Every
    filter is kept in the paging links.
    """
    user = request_user(request)
    status = _query_text(request, "status").upper()
    if status not in JobStatus.__members__:
        status = ""
    job_type = _query_text(request, "type")
    name_query = _query_text(request, "q")
    before = _query_text(request, "before")
    limit = _page_size(request)
    query = {"limit": str(limit)}
    for name, value in (("status", status), ("type", job_type), ("q", name_query), ("before", before)):
        if value:
            query[name] = value
    # Both at once: with a hung engine the page waits one timeout, not two.
    read, types = await asyncio.gather(
        _engine_read(request, user, "api/jobs", query), _engine_read(request, user, "api/types")
    )
    raw_jobs = read.data if isinstance(read.data, list) else []
    jobs = [job for job in map(_clean_job, raw_jobs) if job is not None]

    def page_url(cursor: str | None) -> str:
        params = {k: v for k, v in (("status", status), ("type", job_type), ("q", name_query)) if v}
        if limit != PAGE_SIZE:
            params["limit"] = str(limit)
        if cursor:
            params["before"] = cursor
        return str(URL("/admin/engine/jobs").with_query(params))

    return await render_template(
        request,
        "jobs.html",
        {
            **read.banners("this listing"),
            **await _action_rules(request, user),
            "active_nav": "jobs",
            "jobs": jobs,
            "statuses": [s.value for s in JobStatus],
            "filters": {"status": status, "type": job_type, "q": name_query},
            "type_names": _type_names(types.data, jobs, job_type),
            "max_filter_chars": MAX_FILTER_CHARS,
            "before": before,
            "next_cursor": read.next_cursor,
            "page_url": page_url,
            "page_size": limit,
            "loaded_at": format_time(utcnow()),
        },
        user=user,
    )


_JOB_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


#: Audit records shown on a job's page (the audit page has them all).
JOB_AUDIT_LIMIT = 50


async def job_page(request: web.Request) -> web.StreamResponse:
    """``GET /admin/engine/jobs/{id}``: fields, status history, audit records, live log; 404 page for unknown ids."""
    user = request_user(request)
    job_id = request.match_info["job_id"]
    if _JOB_ID.fullmatch(job_id):
        # Both at once: with a hung engine the page waits one timeout, not two.
        read, audit = await asyncio.gather(
            _engine_read(request, user, f"api/jobs/{job_id}"),
            read_timeline(request, user.name, TimelineQuery(job_id=job_id, limit=JOB_AUDIT_LIMIT)),
        )
    else:
        read, audit = EngineRead(status=404), Timeline(records=[], next=None, engine="skipped")
    job = _clean_job(read.data) if read.status == 200 else None
    not_found = read.status == 404
    return await render_template(
        request,
        "job.html",
        {
            **read.banners("to show this job"),
            **await _action_rules(request, user),
            "active_nav": "jobs",
            **timeline_context(audit),
            "job_id": job_id[:64],
            "job": job,
            "not_found": not_found,
            "audit_more": audit.next is not None,
            "loaded_at": format_time(utcnow()),
        },
        user=user,
        status=404 if not_found else 200,
    )


async def approvals_page(request: web.Request) -> web.StreamResponse:
    """``GET /admin/engine/approvals``: the runs waiting for approval, listed by static/js/approvals.js."""
    return await render_template(request, "approvals.html", {"active_nav": "approvals"}, user=request_user(request))


async def logs_page(request: web.Request) -> web.StreamResponse:
    """``GET /admin/engine/logs?before``: the engine's log entries, newest first, paged (:mod:`.engine_log_page`)."""
    user = request_user(request)
    context: dict[str, Any] = {
        "active_nav": "logs",
        "loaded_at": format_time(utcnow()),
        "paged": False,
        "log_fetch": LOG_FETCH,
        "log_page_size": LOG_PAGE_SIZE,
    }
    try:
        before = parse_cursor(_query_text(request, "before"))
    except BadCursor as exc:
        context.update(logs=[], older_url=None, error_message=f"Cannot page from there: {exc}.")
        return await render_template(request, "logs.html", context, user=user, status=400)
    read = await _engine_read(request, user, "api/engines/logs", {"limit": str(LOG_FETCH)})
    raw = read.data if isinstance(read.data, list) else []
    logs = [
        {
            "level": str(e.get("level") or ""),
            "message": str(e.get("message") or ""),
            "jobId": e.get("jobId") if isinstance(e.get("jobId"), str) else None,
            "timestamp": e.get("timestamp") if isinstance(e.get("timestamp"), str) else None,
        }
        for e in raw
        if isinstance(e, dict)
    ]
    page = page_of(logs, before)
    older_url = str(URL("/admin/engine/logs").with_query(before=page.older)) if page.older else None
    context.update(logs=page.entries, older_url=older_url, paged=before is not None)
    return await render_template(request, "logs.html", {**read.banners("the log request"), **context}, user=user)
