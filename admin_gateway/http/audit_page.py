"""The audit timeline over HTTP: ``GET /api/admin/audit`` (JSON) and the panel's ``/admin/audit`` page.

One timeline of the engine's and the gateway's records
(:mod:`admin_gateway.audit.timeline`), newest first, filtered by actor, job
id, time and journal. Both routes are for super_admins only (the route
table's rule, :mod:`admin_gateway.http.access`): the API answers 401 to
others, the page redirects anonymous visitors to ``/login`` and shows other
roles the "no access" page (403, recorded).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web
from yarl import URL

from admin_gateway.audit.timeline import MAX_LIMIT, PARAMS, Timeline, TimelineQuery, read_timeline, timeline_context
from admin_gateway.errors import GatewayError
from admin_gateway.http.access import request_user
from admin_gateway.http.templates import render_template
from shared.contract import MAX_FILTER_CHARS, format_time, utcnow
from shared.web import reject_unknown_query

#: Records per page of the panel's timeline.
PAGE_SIZE: Final = 50
_EMPTY = Timeline(records=[], next=None, engine="skipped")


async def get_audit(request: web.Request) -> web.Response:
    """``GET /api/admin/audit?actor&jobId&since&until&journal&limit&before``: one page of the timeline.

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
    if query.limit != PAGE_SIZE:
        params["limit"] = str(query.limit)
    if timeline.next is not None:
        context["older_url"] = str(URL("/admin/audit").with_query({**params, "before": timeline.next.encode()}))
    context["newest_url"] = str(URL("/admin/audit").with_query(params))
    return await render_template(request, "audit.html", {**context, **timeline_context(timeline)}, user=user)
