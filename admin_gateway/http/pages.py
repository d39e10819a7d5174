"""The Engine Jobs panel: server-rendered HTML pages and their static assets.

Pages are rendered with Jinja2 (autoescaping on, so every user- or
engine-provided string is escaped) and enhanced by small same-origin ES
modules under ``static/js/`` that talk to the JSON API (:mod:`admin_gateway.http.admin_api`).
Nothing is inline: no ``<script>`` without ``src``, no ``style=``, no
``on*=`` handlers, so the CSP ``default-src 'self'`` holds on every page.

Access: anonymous visitors are redirected to ``/login``; a signed-in user
without the ``super_admin`` role gets the "no access" page with 403. Whether
a RUN button is rendered is decided here (:func:`can_run`) and again in
``static/js/dom.js`` from the API's ``safeMode``; the API enforces it anyway.

The DOM carries stable hooks for the browser tests: ``data-testid`` on the
table, rows (with ``data-job-id`` and ``data-status``), buttons, dialogs and
banners. See ``templates/_macros.html`` and ``static/js/dom.js``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import jinja2
from aiohttp import web
from yarl import URL

from admin_gateway.audit.timeline import Timeline, TimelineQuery, read_timeline, timeline_context
from admin_gateway.audit.trail import ACCESS_DENIED, AUDIT, REFUSED
from admin_gateway.auth.csrf import csrf_token
from admin_gateway.auth.guards import User, current_user
from admin_gateway.engine_client import ENGINE_CLIENT, request_id_of
from admin_gateway.errors import GatewayError
from admin_gateway.http.login import LOGIN_RENDERER, LoginPage
from admin_gateway.http.static_files import static_files, static_handler
from admin_gateway.settings import SETTINGS
from shared.contract import JOB_FIELDS, MAX_FILTER_CHARS, ErrorCode, JobStatus, format_time, parse_time, utcnow
from shared.web import API_ROUTES, parse_decimal

STATIC_DIR = Path(__file__).parent.parent / "static"
#: Jobs per page in the panel's table.
PAGE_SIZE = 50
_MAX_PAGE_SIZE = 500


@attrs.frozen(kw_only=True)
class NavItem:
    """One entry of the panel's main navigation; ``key`` marks the current page."""

    key: str
    href: str
    label: str


#: The Jinja2 environment of the app (autoescaping, templates from the package).
TEMPLATES = web.AppKey("panel_templates", jinja2.Environment)
#: The main navigation, in order. Other modules add entries with :func:`add_nav_item`.
NAV = web.AppKey("panel_nav", list[NavItem])


def _utc_text(value: str | None) -> str:
    """Render an RFC 3339 value as readable UTC text: the no-JavaScript fallback of local time."""
    try:
        parsed = parse_time(value)
    except ValueError:
        return str(value)
    if parsed is None:
        return ""
    return parsed.strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value: float) -> str:
    """Render a duration in seconds the way people read it: ``30 s``, ``0.5 s``."""
    return f"{value:g} s"


def make_environment() -> jinja2.Environment:
    """Return the panel's Jinja2 environment: package templates, autoescape on, strict undefined.

    Strict undefined turns a template typo into an error in the tests instead
    of a silently empty field in production.
    """
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("admin_gateway", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    env.filters["utc_text"] = _utc_text
    env.filters["seconds"] = _seconds
    env.globals["static_url"] = lambda path: f"/static/{path}"
    return env


def add_nav_item(app: web.Application, *, key: str, href: str, label: str) -> None:
    """Add an entry to the panel's navigation (before the app starts), e.g. ``/admin/audit``."""
    app[NAV].append(NavItem(key=key, href=href, label=label))


def setup_panel(app: web.Application) -> None:
    """Add the panel's pages, ``/static/`` and ``/favicon.ico`` to ``app``.

    Needs ``SETTINGS`` and the auth/CSRF machinery that ``create_app`` installs.
    """
    app[TEMPLATES] = make_environment()
    app[NAV] = [
        NavItem(key="jobs", href="/admin/engine/jobs", label="Jobs"),
        NavItem(key="logs", href="/admin/engine/logs", label="Engine log"),
    ]
    routes = app[API_ROUTES]
    routes.add_get("/", index)
    routes.add_get("/admin/engine/jobs", jobs_page)
    routes.add_get("/admin/engine/jobs/{job_id}", job_page)
    routes.add_get("/admin/engine/logs", logs_page)
    routes.add_get("/favicon.ico", favicon)
    # Only the files that ship with the panel, looked up by name: no path is ever joined from a URL,
    # and anything else is the JSON 404 of every other unknown path (aiohttp's static route answers
    # a missing file with an empty, untyped 404 that the request log records as a 200).
    routes.add_get("/static/{path:.+}", static_handler(static_files(STATIC_DIR)), name="static")
    app[LOGIN_RENDERER] = render_login_page


def can_run(job: dict[str, Any], *, user: User, safe_mode: bool) -> bool:
    """RUN is offered only to a super_admin, with SAFE_MODE off, on a READY job."""
    return user.is_super_admin and not safe_mode and job.get("status") == JobStatus.READY


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


async def render_template(
    request: web.Request, name: str, context: dict[str, Any], *, user: User | None = None, status: int = 200
) -> web.Response:
    """Render template ``name`` inside the panel layout and return it as ``text/html``.

    Adds what every page needs: the user, SAFE_MODE, the CSRF token (for the
    logout form and the ``fetch`` header), the navigation and the refresh
    interval. ``login.html`` takes ``error`` and ``username`` in ``context``.
    """
    settings = request.app[SETTINGS]
    base: dict[str, Any] = {
        "page": name.removesuffix(".html"),
        "user": user,
        "is_super_admin": user is not None and user.is_super_admin,
        "safe_mode": settings.safe_mode,
        "csrf_token": await csrf_token(request),
        "nav": request.app[NAV],
        "active_nav": "",
        "refresh_interval": settings.refresh_interval,
        "engine_down": False,
        "engine_warning": None,
        "error_message": None,
    }
    base.update(context)
    html = request.app[TEMPLATES].get_template(name).render(base)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def _see_other(location: str) -> web.Response:
    # A returned response, not a raised HTTPSeeOther: the shared request wrapper would answer a
    # raised redirect the same way (shared/web.py, _http_exception_response), but returning it
    # keeps the page's control flow plain and skips the exception path.
    return web.Response(status=303, headers={"Location": location})


PageHandler = Callable[[web.Request, User], Awaitable[web.StreamResponse]]


def panel_page(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Guard a page: anonymous → redirect to ``/login``; a role other than super_admin → 403 page.

    Deny by default: the wrapped handler only ever runs for a super_admin.
    """

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        user = await current_user(request)
        if user is None:
            return _see_other("/login")
        if not user.is_super_admin:
            await request.app[AUDIT].record(
                ACCESS_DENIED,
                request=request,
                actor=user.name,
                outcome=REFUSED,
                code=ErrorCode.FORBIDDEN,
                status=403,
                reason="role",
                role=user.role,
            )
            return await render_template(request, "no_access.html", {}, user=user, status=403)
        return await handler(request, user)

    return guarded


async def index(request: web.Request) -> web.StreamResponse:
    """``GET /``: the panel starts at the jobs list."""
    return _see_other("/admin/engine/jobs")


async def favicon(request: web.Request) -> web.StreamResponse:
    """``GET /favicon.ico``: browsers ask for it by themselves; a 404 is a console error."""
    return web.FileResponse(STATIC_DIR / "favicon.ico", headers={"Content-Type": "image/x-icon"})


async def render_login_page(request: web.Request, page: LoginPage) -> web.Response:
    """The :data:`LOGIN_RENDERER`: the login form in the panel's layout (status set by the caller)."""
    return await render_template(
        request,
        "login.html",
        {
            "csrf_token": page.csrf_token,
            "error": page.error,
            "username": page.username,
        },
    )


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


def _action_rules(user: User, safe_mode: bool) -> dict[str, Any]:
    """Template context: the per-job RUN/Cancel decisions (:func:`can_run`, :func:`can_cancel`)."""
    return {
        "can_run": lambda job: can_run(job, user=user, safe_mode=safe_mode),
        "can_cancel": lambda job: can_cancel(job, user=user),
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


@panel_page
async def jobs_page(request: web.Request, user: User) -> web.StreamResponse:
    """``GET /admin/engine/jobs``: the jobs table (newest first), filters, an "Older" cursor link."""
    safe_mode = request.app[SETTINGS].safe_mode
    status = _query_text(request, "status").upper()
    if status not in JobStatus.__members__:
        status = ""
    job_type = _query_text(request, "type")
    before = _query_text(request, "before")
    limit = _page_size(request)
    query = {"limit": str(limit)}
    for name, value in (("status", status), ("type", job_type), ("before", before)):
        if value:
            query[name] = value
    read = await _engine_read(request, user, "api/jobs", query)
    raw_jobs = read.data if isinstance(read.data, list) else []
    jobs = [job for job in map(_clean_job, raw_jobs) if job is not None]

    def page_url(cursor: str | None) -> str:
        params = {k: v for k, v in (("status", status), ("type", job_type)) if v}
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
            **_action_rules(user, safe_mode),
            "active_nav": "jobs",
            "jobs": jobs,
            "statuses": [s.value for s in JobStatus],
            "filters": {"status": status, "type": job_type},
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


@panel_page
async def job_page(request: web.Request, user: User) -> web.StreamResponse:
    """``GET /admin/engine/jobs/{id}``: fields, status history, audit records, live log; 404 page for unknown ids."""
    safe_mode = request.app[SETTINGS].safe_mode
    job_id = request.match_info["job_id"]
    if _JOB_ID.fullmatch(job_id):
        # Both at once: with a hung engine the page waits one timeout, not two.
        read, audit = await asyncio.gather(
            _engine_read(request, user, f"api/jobs/{job_id}"),
            read_timeline(request, user, TimelineQuery(job_id=job_id, limit=JOB_AUDIT_LIMIT)),
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
            **_action_rules(user, safe_mode),
            "active_nav": "jobs",
            **timeline_context(audit),
            "job_id": job_id[:64],
            "job": job,
            "not_found": not_found,
            "audit_more": audit.next is not None,
        },
        user=user,
        status=404 if not_found else 200,
    )


_LOG_LIMIT = 200


@panel_page
async def logs_page(request: web.Request, user: User) -> web.StreamResponse:
    """``GET /admin/engine/logs``: the engine's latest log entries, newest first."""
    read = await _engine_read(request, user, "api/engines/logs", {"limit": str(_LOG_LIMIT)})
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
    # At 3 a.m. the newest entry belongs at the top, whatever order the engine answers in
    # (RFC 3339 UTC strings sort as times; ties keep the newest first).
    logs = sorted(reversed(logs), key=lambda e: e["timestamp"] or "", reverse=True)
    return await render_template(
        request,
        "logs.html",
        {
            **read.banners("the log request"),
            "active_nav": "logs",
            "logs": logs,
            "loaded_at": format_time(utcnow()),
        },
        user=user,
    )
