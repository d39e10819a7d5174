"""``create_app(settings)``: the admin gateway as an aiohttp application.

No side effects until the app starts: the audit journal, the engine
client, the session pruner and the log flusher live in ``cleanup_ctx``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from admin_gateway.audit.timeline import setup_audit_api
from admin_gateway.audit.trail import AUDIT, EXPIRED, SESSION_EXPIRED, Audit, audit_journal_ctx
from admin_gateway.auth.guards import SESSION_USER, USER_STORE
from admin_gateway.auth.session_backends import make_backend
from admin_gateway.auth.sessions import SESSION_STORE, SessionStore, session_store_ctx
from admin_gateway.auth.throttle import LOGIN_THROTTLE, LoginThrottle
from admin_gateway.auth.users import UserStore
from admin_gateway.engine_client import engine_client_ctx
from admin_gateway.errors import GatewayError
from admin_gateway.http.access import access_hook
from admin_gateway.http.admin_api import setup_api
from admin_gateway.http.hardening import security_headers
from admin_gateway.http.login import setup_auth
from admin_gateway.http.openapi import setup as setup_openapi
from admin_gateway.http.static_files import static_files, static_handler
from admin_gateway.peer import TRUSTED_PROXIES, parse_networks
from admin_gateway.settings import SETTINGS, Settings, SettingsError
from shared.web import API_ROUTES, HTTP_LIMITS, MAX_BODY, log_flusher, request_wrapper, setup_api_routes

STATIC_DIR = Path(__file__).parent.parent / "static"


async def _warm_users(app: web.Application) -> AsyncIterator[None]:
    # The dummy hash for unknown users is computed before the first login, off the loop.
    await asyncio.to_thread(app[USER_STORE].warm)
    yield


async def favicon(request: web.Request) -> web.StreamResponse:
    """``GET /favicon.ico``: browsers ask for it on their own; a 404 would be a console error."""
    path = STATIC_DIR / "favicon.ico"
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Content-Type": "image/x-icon"})


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz`` (no session): ``{"status": "ok"}``, or ``"degraded"`` while the audit journal fails.

    Always 200: the process answers and reads work. Says nothing about the engine.
    """
    if request.app[AUDIT].healthy:
        return web.json_response({"status": "ok"})
    return web.json_response(
        {
            "status": "degraded",
            "audit": "unavailable",
            "detail": "the audit journal cannot be written: sign-ins and job changes are refused",
        }
    )


def create_app(settings: Settings) -> web.Application:
    """Build the gateway for ``settings``; raises ``SettingsError`` for unusable settings."""
    try:
        trusted = parse_networks(settings.trusted_proxies)
    except ValueError as exc:
        raise SettingsError(f"bad trusted proxy: {exc}") from None
    app = web.Application(client_max_size=MAX_BODY, handler_args=HTTP_LIMITS)
    app[SETTINGS] = settings
    app[TRUSTED_PROXIES] = trusted
    audit = Audit(trusted)
    app[AUDIT] = audit
    app[USER_STORE] = UserStore(settings.data_dir)
    app[LOGIN_THROTTLE] = LoginThrottle(
        clock=settings.clock,
        per_account=settings.login_limit_per_hour,
        per_address=settings.login_limit_per_address_per_hour,
        free_attempts=settings.login_free_attempts,
        max_delay=settings.login_max_delay,
        per_device=settings.login_limit_per_device_per_hour,
    )

    async def on_expired(request: web.Request, data: dict[str, object], reason: str) -> None:
        user = data.get(SESSION_USER)
        # Best effort: the session is gone whether or not the record can be written.
        await audit.record(
            SESSION_EXPIRED,
            request=request,
            actor=user if isinstance(user, str) else None,
            outcome=EXPIRED,
            reason=reason,
        )

    store = SessionStore(
        make_backend(settings),
        clock=settings.clock,
        idle_timeout=settings.idle_timeout,
        absolute_timeout=settings.absolute_timeout,
        trusted_proxies=trusted,
        on_expired=on_expired,
    )
    app[SESSION_STORE] = store
    # A changed session is saved after each handler inside the one request wrapper (no extra
    # layer); the access rule runs there too, before any route (admin_gateway.http.access).
    routes = setup_api_routes(
        app,
        request_wrapper(GatewayError, authenticate=access_hook(), finish=store.finish, decorate=security_headers),
    )

    app.cleanup_ctx.extend([log_flusher, audit_journal_ctx, engine_client_ctx, session_store_ctx, _warm_users])
    routes.add_get("/healthz", healthz)
    setup_auth(app)
    setup_api(app)
    setup_audit_api(app)
    if not _setup_panel(app):
        # Without the panel the gateway still serves its assets (the panel serves them itself).
        routes.add_get("/favicon.ico", favicon)
        routes.add_get("/static/{path:.+}", static_handler(static_files(STATIC_DIR)), name="static")
    setup_openapi(app)
    return app


def _setup_panel(app: web.Application) -> bool:
    """Add the panel (pages, the audit page, ``/static/``, ``/favicon.ico``); ``False`` if it is not installed."""
    try:
        from admin_gateway.http.pages import setup_panel
    except ModuleNotFoundError as exc:
        # Only a missing panel module is tolerated; any other import failure is a bug.
        if exc.name != f"{__package__}.routes_panel":
            raise
        return False
    from admin_gateway.http.audit_page import setup_audit_page

    setup_panel(app)
    setup_audit_page(app)
    return True
