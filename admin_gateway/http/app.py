"""``create_app(settings)``: the admin gateway as an aiohttp application.

No side effects until the app starts: the audit journal, the engine
client, the session pruner and the log flusher live in ``cleanup_ctx``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from admin_gateway.audit.job_names import JOB_NAMES, JobNames
from admin_gateway.audit.trail import AUDIT, EXPIRED, SESSION_EXPIRED, Audit, audit_journal_ctx
from admin_gateway.auth.guards import SESSION_USER, USER_STORE
from admin_gateway.auth.session_backends import make_backend
from admin_gateway.auth.sessions import SESSION_STORE, SessionStore, session_store_ctx
from admin_gateway.auth.throttle import LOGIN_THROTTLE, LoginThrottle
from admin_gateway.auth.users import UserStore
from admin_gateway.engine_client import engine_client_ctx
from admin_gateway.errors import GatewayError
from admin_gateway.http.access import GATEWAY_RULES, authorize_hook
from admin_gateway.http.hardening import security_headers
from admin_gateway.http.login import setup_auth
from admin_gateway.http.openapi import served_document
from admin_gateway.http.routes import ROUTES
from admin_gateway.http.templates import setup_templates
from admin_gateway.peer import TRUSTED_PROXIES, parse_networks
from admin_gateway.relay import relay_ctx
from admin_gateway.safe_mode import OVERRIDE_WINDOW, OverrideWindow
from admin_gateway.settings import SETTINGS, Settings, SettingsError
from shared.contract import HTTP_LIMITS, MAX_BODY
from shared.openapi import build_openapi_on_startup
from shared.web import log_flusher, request_wrapper, setup_api_routes


async def _warm_users(app: web.Application) -> AsyncIterator[None]:
    # The dummy hash for unknown users is computed before the first login, off the loop.
    await asyncio.to_thread(app[USER_STORE].warm)
    yield


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
    app[OVERRIDE_WINDOW] = OverrideWindow()
    app[JOB_NAMES] = JobNames()
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
    # layer); each route's access rule is checked there too, before its handler
    # (admin_gateway.http.access). The session itself loads when first asked for.
    routes = setup_api_routes(
        app,
        request_wrapper(GatewayError, authorize=authorize_hook(ROUTES), finish=store.finish, decorate=security_headers),
        rules=GATEWAY_RULES,
    )

    app.cleanup_ctx.extend(
        [log_flusher, audit_journal_ctx, engine_client_ctx, relay_ctx, session_store_ctx, _warm_users]
    )
    setup_auth(app)
    setup_templates(app)
    routes.add_table(ROUTES)
    build_openapi_on_startup(app, served_document)
    return app
