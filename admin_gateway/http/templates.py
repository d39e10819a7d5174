"""How the panel renders: its Jinja2 environment, the page layout every page shares, and the navigation.

Templates are rendered with autoescaping on, so every user- or
engine-provided string is escaped. Used by the pages
(:mod:`admin_gateway.http.pages`, :mod:`admin_gateway.http.audit_page`),
the sign-in form (:func:`admin_gateway.http.login.render_login`) and the
access check's "no access" page (:mod:`admin_gateway.http.access`).
"""

from __future__ import annotations

from typing import Any

import attrs
import jinja2
from aiohttp import web

from admin_gateway.auth.csrf import csrf_token
from admin_gateway.auth.guards import User
from admin_gateway.settings import SETTINGS
from shared.contract import parse_time, utcnow


@attrs.frozen(kw_only=True)
class NavItem:
    """One entry of the panel's main navigation; ``key`` marks the current page."""

    key: str
    href: str
    label: str


#: The Jinja2 environment of the app (autoescaping, templates from the package).
TEMPLATES = web.AppKey("panel_templates", jinja2.Environment)
#: The main navigation, in order.
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


def format_duration(seconds: float) -> str:
    """Render a span of ``seconds`` as ``45s``, ``3m 05s``, ``2h 03m`` or ``3d 4h`` (negative counts as 0).

    ``static/js/time.js`` ``formatDuration`` renders the same once the page's script runs: keep the two in step.
    """
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _duration_text(started: str | None, ended: str | None = None) -> str:
    """How long from ``started`` to ``ended`` (to now when ``None``); '' when ``started`` is no time."""
    try:
        start, end = parse_time(started), parse_time(ended)
    except ValueError:
        return ""
    if start is None:
        return ""
    return format_duration(((end or utcnow()) - start).total_seconds())


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
    env.filters["duration_text"] = _duration_text
    env.globals["static_url"] = lambda path: f"/static/{path}"
    return env


def setup_templates(app: web.Application) -> None:
    """Give ``app`` the panel's templates and navigation, and render the sign-in form in the panel's layout.

    Needs ``SETTINGS`` and the auth/CSRF machinery that ``create_app`` installs.
    """
    app[TEMPLATES] = make_environment()
    app[NAV] = [
        NavItem(key="jobs", href="/admin/engine/jobs", label="Jobs"),
        NavItem(key="approvals", href="/admin/engine/approvals", label="Approvals"),
        NavItem(key="logs", href="/admin/engine/logs", label="Engine log"),
        NavItem(key="audit", href="/admin/audit", label="Audit"),
    ]


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
        "override_open": False,  # pages that offer RUN say whether a break-glass window is open
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
