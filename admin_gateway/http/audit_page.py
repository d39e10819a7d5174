"""The audit timeline over HTTP: ``GET /api/admin/audit`` (JSON), its export and the panel's ``/admin/audit`` page.

One timeline of the engine's and the gateway's records
(:mod:`admin_gateway.audit.timeline`), newest first, filtered by actor
(prefix), action, outcome, job id, time and journal; the export
(:mod:`admin_gateway.audit.export`) streams the same filter as a file. All
three routes are for super_admins only (the route
table's rule, :mod:`admin_gateway.http.access`): the API answers 401 to
others, the page redirects anonymous visitors to ``/login`` and shows other
roles the "no access" page (403, recorded).
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any, Final

from aiohttp import web
from yarl import URL

from admin_gateway.audit.actions import action_choices
from admin_gateway.audit.export import MEDIA_TYPES, ExportWriter, export_format, export_pages
from admin_gateway.audit.job_names import JOB_NAMES
from admin_gateway.audit.timeline import (
    FILTERS,
    MAX_LIMIT,
    PARAMS,
    Timeline,
    TimelineQuery,
    read_timeline,
    timeline_context,
)
from admin_gateway.audit.trail import ACCEPTED, AUDIT, AUDIT_EXPORT, ERROR, OUTCOMES, REQUESTED, requested
from admin_gateway.errors import GatewayError
from admin_gateway.http.access import request_user
from admin_gateway.http.hardening import security_headers
from admin_gateway.http.templates import render_template
from shared.contract import MAX_FILTER_CHARS, format_time, utcnow
from shared.web import REQUEST_ID, reject_unknown_query

#: Records per page of the panel's timeline.
PAGE_SIZE: Final = 50
_EMPTY = Timeline(records=[], next=None, engine="skipped")


async def get_audit(request: web.Request) -> web.Response:
    """``GET /api/admin/audit?actor&action&outcome&jobId&since&until&journal&limit&before``: one timeline page.

    Answers ``{records, next, engine, warning}``: ``records`` newest first,
    each a journal record plus ``journal`` (``engine`` or ``gateway``);
    ``next`` the ``before`` cursor of the next page (or ``null``); ``engine``
    ``up``, ``down`` (``warning`` says why; the gateway's records are still
    there) or ``skipped``. Unknown parameters and bad values are 400.
    """
    user = request_user(request)
    reject_unknown_query(request, PARAMS, error=GatewayError)
    query = TimelineQuery.from_params(request.query)
    timeline = await read_timeline(request, user.name, query)
    return web.json_response(timeline.to_json())


async def audit_page(request: web.Request) -> web.StreamResponse:
    """``GET /admin/audit``: the timeline with its filter form and an "Older" link; bad filters: 400 page."""
    user = request_user(request)
    form = {name: request.query.get(name, "").strip()[:MAX_FILTER_CHARS] for name in PARAMS}
    context: dict[str, Any] = {
        "active_nav": "audit",
        "form": form,
        "time_inputs": {name: _input_time(form[name]) for name in ("since", "until")},
        "actions": action_choices([form["action"]]),
        "outcomes": OUTCOMES,
        "export_params": {},
        "audit_job_names": {},
        "loaded_at": format_time(utcnow()),
        "max_limit": MAX_LIMIT,
        "older_url": None,
        "newest_url": "/admin/audit",
        "paged": "before" in request.query,
    }
    try:
        query = TimelineQuery.from_params(request.query, default_limit=PAGE_SIZE)
    except GatewayError as exc:
        return await render_template(
            request,
            "audit.html",
            {
                **context,
                **timeline_context(_EMPTY),
                "error_message": f"Cannot filter by that: {exc.message}.",
            },
            user=user,
            status=400,
        )
    timeline = await read_timeline(request, user.name, query)
    params = query.params()
    context["export_params"] = dict(params)
    context["actions"] = action_choices([form["action"]], (r.get("action") for r in timeline.records))
    if timeline.engine != "down":  # a down engine has no names to give either
        job_ids = (r["jobId"] for r in timeline.records if isinstance(r.get("jobId"), str))
        context["audit_job_names"] = await request.app[JOB_NAMES].resolve(request, user.name, job_ids)
    if query.limit != PAGE_SIZE:
        params["limit"] = str(query.limit)
    if timeline.next is not None:
        context["older_url"] = str(URL("/admin/audit").with_query({**params, "before": timeline.next.encode()}))
    context["newest_url"] = str(URL("/admin/audit").with_query(params))
    return await render_template(request, "audit.html", {**context, **timeline_context(timeline)}, user=user)


def _input_time(raw: str) -> str:
    """A ``since``/``until`` value as a ``datetime-local`` input's value (``YYYY-MM-DDTHH:MM``, UTC), else as sent.

    The form shows what was filtered by; a value the input cannot hold
    (not a time) is left for the input to drop, and the error says why.
    """
    try:
        parsed = TimelineQuery.from_params({"since": raw}).since if raw else None
    except GatewayError:
        return raw
    if parsed is None:
        return ""
    utc = parsed.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S" if utc.second or utc.microsecond else "%Y-%m-%dT%H:%M")


async def export_audit(request: web.Request) -> web.StreamResponse:
    """``GET /api/admin/audit/export?format=csv|jsonl&<filters>``: the filtered timeline as a file, audited.

    400 for a bad format or filter; 503 ``journal_unavailable`` when the
    export cannot be recorded first; 502 when the engine's records cannot be
    read (see :mod:`admin_gateway.audit.export`).
    """
    user = request_user(request)
    reject_unknown_query(request, FILTERS | {"format"}, error=GatewayError)
    fmt = export_format(request.query.get("format"))
    query = TimelineQuery.from_params({k: v for k, v in request.query.items() if k in FILTERS})
    audit = request.app[AUDIT]
    fields: dict[str, Any] = {"format": fmt, "filter": urllib.parse.urlencode(query.params())}
    intent = await audit.record(
        requested(AUDIT_EXPORT), request=request, actor=user.name, outcome=REQUESTED, fail_closed=True, **fields
    )
    assert intent is not None  # fail_closed: a record or an exception
    fields["intentSeq"] = intent.seq
    pages = export_pages(request, user.name, query)
    writer = ExportWriter(fmt)
    count = 0
    response: web.StreamResponse | None = None
    try:
        async for records in pages:
            if response is None:
                response = await _start_download(request, fmt, writer.header())
            await response.write(writer.lines(records).encode())
            count += len(records)
        if response is None:
            response = await _start_download(request, fmt, writer.header())
        await response.write_eof()
    except (GatewayError, ConnectionError) as exc:
        reason = exc.message if isinstance(exc, GatewayError) else "the client went away"
        await audit.record(
            AUDIT_EXPORT, request=request, actor=user.name, outcome=ERROR, count=count, reason=reason, **fields
        )
        if response is not None and isinstance(exc, GatewayError):
            # Bytes are out: no error answer can follow, so the download is cut (no final chunk)
            # and the client sees it incomplete rather than a file that looks whole.
            raise ConnectionResetError(f"audit export cut short: {reason}") from exc
        raise
    await audit.record(AUDIT_EXPORT, request=request, actor=user.name, outcome=ACCEPTED, count=count, **fields)
    return response


async def _start_download(request: web.Request, fmt: str, header: str) -> web.StreamResponse:
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{MEDIA_TYPES[fmt]}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="audit-{stamp}.{fmt}"',
            "X-Request-Id": str(request.get(REQUEST_ID, "")),
        }
    )
    # Sent before the request wrapper sees the response, so the hardening headers go on here.
    security_headers(request, response)
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(header.encode())
    return response
