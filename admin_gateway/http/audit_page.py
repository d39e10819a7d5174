"""The panel's ``/admin/audit`` page: the audit timeline with filters and paging.

One timeline of the engine's and the gateway's records
(:mod:`admin_gateway.audit.timeline`, whose JSON twin is ``GET
/api/admin/audit``), newest first, filtered by actor, job id, time and
journal. For super_admins only: anonymous visitors are redirected to
``/login``, other roles get the "no access" page (403, recorded).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web
from yarl import URL

from admin_gateway.audit.timeline import MAX_LIMIT, PARAMS, Timeline, TimelineQuery, read_timeline, timeline_context
from admin_gateway.auth.guards import User
from admin_gateway.errors import GatewayError
from admin_gateway.http.pages import add_nav_item, panel_page, render_template
from shared.contract import MAX_FILTER_CHARS, format_time, utcnow
from shared.web import API_ROUTES

#: Records per page of the panel's timeline.
PAGE_SIZE: Final = 50
_EMPTY = Timeline(records=[], next=None, engine="skipped")


async def audit_page(request: web.Request, user: User) -> web.StreamResponse:
    """``GET /admin/audit``: the timeline with its filter form and an "Older" link; bad filters: 400 page."""
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
    timeline = await read_timeline(request, user, query)
    params = query.params()
    if query.limit != PAGE_SIZE:
        params["limit"] = str(query.limit)
    if timeline.next is not None:
        context["older_url"] = str(URL("/admin/audit").with_query({**params, "before": timeline.next.encode()}))
    context["newest_url"] = str(URL("/admin/audit").with_query(params))
    return await render_template(request, "audit.html", {**context, **timeline_context(timeline)}, user=user)


def setup_audit_page(app: web.Application) -> None:
    """Register ``/admin/audit`` and its navigation entry (after :func:`admin_gateway.http.pages.setup_panel`)."""
    app[API_ROUTES].add_get("/admin/audit", panel_page(audit_page))
    add_nav_item(app, key="audit", href="/admin/audit", label="Audit")
