"""Assembly of the engine web application.

:func:`create_app` only builds objects: the catalog file, the admin token
and the journal are read when the app starts (in ``cleanup_ctx``), which is
also where the journal is replayed and, at shutdown, where every running job
is stopped.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping

import structlog
from aiohttp import web

from engine_hub import openapi, routes, routes_compat
from engine_hub.auth import (AUTHENTICATOR, Authenticator, check_bind_allowed, request_authenticator,
                             resolve_admin_token)
from engine_hub.catalog import Catalog, CatalogError, load_catalog
from engine_hub.errors import ConfigError, EngineError
from engine_hub.joblogs import JobLogs
from engine_hub.metrics import Metrics
from engine_hub.runner import Runner
from engine_hub.service import SERVICE, JobService
from engine_hub.settings import Settings
from engine_hub.store import JobStore
from shared.journal import Journal, MemoryJournal, Record
from shared.web import HTTP_LIMITS, MAX_BODY, api_middleware, log_flusher

log = structlog.get_logger("engine.app")

#: The settings the app was built with.
SETTINGS = web.AppKey("settings", Settings)


def open_journal(settings: Settings) -> tuple[Journal, Iterable[Record]]:
    """Return the journal for ``settings`` and the records to replay from it.

    This is the seam for the durable file journal: until it exists, every
    engine keeps its journal in memory (as ``--ephemeral`` always will).
    """
    if not settings.ephemeral:
        log.warning("journal_not_durable", data_dir=str(settings.data_dir),
                    detail="the durable journal is not available yet; job state lives in memory only")
    return MemoryJournal(), ()


def _no_store(request: web.Request, response: web.StreamResponse) -> None:
    # Job state changes under the client's feet: no cache may keep a copy.
    response.headers["Cache-Control"] = "no-store"


def create_app(settings: Settings, *, journal: Journal | None = None, catalog: Catalog | None = None,
               environ: Mapping[str, str] | None = None) -> web.Application:
    """Build the engine application; nothing is read, written or started until it runs.

    ``journal`` replaces the one :func:`open_journal` would open (its
    ``recent()`` records are replayed at start: tests restart an engine on
    the same :class:`MemoryJournal`). ``catalog`` replaces the one loaded
    from ``settings.config``. ``environ`` replaces ``os.environ`` for the
    token look-up. Start-up raises :class:`ConfigError` for a bad catalog,
    token or bind address.
    """
    metrics = Metrics()
    service = JobService(store=JobStore(), logs=JobLogs(), metrics=metrics,
                         runner=Runner(kill_grace=settings.kill_grace))
    app = web.Application(
        middlewares=[
            api_middleware(EngineError, on_done=metrics.observe_request, decorate=_no_store,
                           authenticate=request_authenticator(
                               public=routes.PUBLIC_ROUTES,
                               submit=routes.SUBMIT_ROUTES | routes_compat.SUBMIT_ROUTES | openapi.SUBMIT_ROUTES)),
        ],
        client_max_size=MAX_BODY, handler_args=HTTP_LIMITS,
    )
    app[SETTINGS] = settings
    app[SERVICE] = service
    app[AUTHENTICATOR] = Authenticator()
    app.cleanup_ctx.append(log_flusher)
    app.cleanup_ctx.append(_engine_context(settings, journal, catalog, environ))
    routes.add_routes(app)
    routes_compat.add_routes(app)
    routes.add_job_routes(app)
    openapi.setup(app)
    return app


def _engine_context(settings: Settings, journal: Journal | None, catalog: Catalog | None,
                    environ: Mapping[str, str] | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        env = os.environ if environ is None else environ
        check_bind_allowed(settings, env)
        try:
            cat = catalog if catalog is not None else load_catalog(settings.config)
        except CatalogError as exc:
            raise ConfigError(str(exc)) from None
        token, origin = resolve_admin_token(settings, env)
        app[AUTHENTICATOR].configure(admin_token=token, catalog=cat)
        replay: Iterable[Record]
        if journal is not None:
            used, replay = journal, list(journal.recent())
        else:
            used, replay = open_journal(settings)
        service = app[SERVICE]
        await service.start(catalog=cat, journal=used, replay=replay)
        log.info("engine_started", types=len(cat.types), clients=len(cat.clients), token_from=origin,
                 ephemeral=settings.ephemeral, jobs=len(service.store))
        try:
            yield
        finally:
            await service.close()
            log.info("engine_stopped")

    return context
