"""Assembly of the engine web application.

:func:`create_app` only builds objects: the catalog file, the admin token
and the journal are read when the app starts (in ``cleanup_ctx``), before
the server accepts a connection. That is also where the journal is
replayed, where jobs left RUNNING by a previous engine are recorded as
interrupted, and, at shutdown, where every running job is stopped and a
last snapshot is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping

import structlog
from aiohttp import web

from engine_hub.errors import ConfigError, EngineError, JournalDown, StartupError, StoreDown
from engine_hub.http import openapi
from engine_hub.http.auth import (
    AUTHENTICATOR,
    ENGINE_RULES,
    Authenticator,
    authorize,
    check_bind_allowed,
    resolve_admin_token,
)
from engine_hub.http.routes import ROUTES
from engine_hub.jobs.catalog import Catalog, CatalogError
from engine_hub.jobs.catalog_file import load_catalog
from engine_hub.jobs.cluster import NODE, ClusterNode
from engine_hub.jobs.override import OVERRIDES, OverrideService
from engine_hub.jobs.service import SERVICE, JobService
from engine_hub.metrics import Metrics
from engine_hub.run.log_files import FileJobLogs
from engine_hub.run.log_pg import PostgresJobLogs
from engine_hub.run.log_pg_retention import PostgresExpiringLogs
from engine_hub.run.log_retention import LOG_RETENTION, ExpiringLogs, LogRetention
from engine_hub.run.logs import JobLogs, LogStore
from engine_hub.run.runner import Runner
from engine_hub.settings import JOURNAL_DIR, LOGS_DIR, STATE_DIR, Settings
from engine_hub.store.backend import EmbeddedBackend
from engine_hub.store.changes import head_of
from engine_hub.store.embedded import JobStore, StoreError
from engine_hub.store.events import EVENTS, EventHub
from engine_hub.store.heap import malloc_trim, paused_gc
from engine_hub.store.nodes import NodeLease, NodeTiming
from engine_hub.store.page_cache import PAGE_CACHE, PageCache
from engine_hub.store.postgres import PostgresBackend
from engine_hub.store.schema import SchemaError, check_schema
from engine_hub.store.snapshots import Snapshotter, load_snapshot
from shared.contract import HTTP_LIMITS, MAX_BODY
from shared.journal.chain import Journal, JournalCorrupt, JournalLocked, MemoryJournal, Record
from shared.journal.file import FileJournal
from shared.pg import redact
from shared.web import log_flusher, request_wrapper, setup_api_routes

log = structlog.get_logger("engine.app")

#: The settings the app was built with.
SETTINGS = web.AppKey("settings", Settings)

PROG = "engine-hub"
#: Journal records kept in memory for ``/api/audit`` (older ones are read from the segment files).
RECENT_RECORDS = 1_000
#: Records an ``--ephemeral`` engine keeps (it promises no durability; this bounds its memory).
EPHEMERAL_RECORDS = 10_000
#: Jobs looked at per slice of the background packing after start-up: small enough that a slice never
#: holds the event loop long (its cost: docs/performance.md, "Figures behind design choices").
PACK_SLICE = 256


def open_journal(settings: Settings) -> FileJournal:
    """Open the durable journal of ``settings.data_dir`` (blocking). Raises :class:`StartupError`."""
    directory = settings.data_dir / JOURNAL_DIR
    try:
        return FileJournal.open(
            directory, prog=PROG, retention_days=settings.retention_days, recent_limit=RECENT_RECORDS
        )
    except JournalLocked as exc:
        raise StartupError(f"{exc}; only one engine may use a data directory") from None
    except OSError as exc:
        raise StartupError(f"cannot open the journal in {directory}: {exc.strerror or exc}") from None


def restore(journal: FileJournal, store: JobStore, settings: Settings) -> int:
    """Load the newest snapshot into ``store``, then replay the journal's tail (blocking).

    Returns how many records were replayed. Every record's hash and link is
    checked as it is read; a torn last line is cut off with a warning (by
    the journal). Raises :class:`StartupError` naming the first bad record.
    """
    try:
        with paused_gc():
            if journal.snapshot is not None:
                load_snapshot(store, journal.snapshot, settings.data_dir / STATE_DIR)
            return store.replay(journal.replay())
    except JournalCorrupt as exc:
        raise StartupError(str(exc)) from None
    except StoreError as exc:
        raise StartupError(
            f"journal record does not apply: {exc}; run `{PROG} audit verify` and report this record"
        ) from None
    except OSError as exc:
        raise StartupError(f"cannot read the journal in {journal.directory}: {exc.strerror or exc}") from None


def _no_store(request: web.Request, response: web.StreamResponse) -> None:
    # Job state changes under the client's feet: no cache may keep a copy.
    response.headers["Cache-Control"] = "no-store"


def create_app(
    settings: Settings,
    *,
    journal: Journal | None = None,
    catalog: Catalog | None = None,
    environ: Mapping[str, str] | None = None,
) -> web.Application:
    """Build the engine application; nothing is read, written or started until it runs.

    ``journal`` replaces the one the settings call for (its ``recent()``
    records are replayed at start: tests restart an engine on the same
    :class:`MemoryJournal`); otherwise the engine opens the durable journal
    in ``<data_dir>/journal`` or, with ``settings.ephemeral``, a bounded
    :class:`MemoryJournal`. ``catalog`` replaces the one loaded from
    ``settings.config``. ``environ`` replaces ``os.environ`` for the token
    look-up. Start-up raises :class:`ConfigError` for a bad catalog, token or
    bind address and :class:`StartupError` for a journal it cannot start from.
    """
    metrics = Metrics()
    clustered = settings.store_url is not None and journal is None
    durable = journal is None and not settings.ephemeral and not clustered
    file_logs = FileJobLogs(settings.data_dir / LOGS_DIR, max_bytes=settings.log_max_bytes) if durable else None
    logs: LogStore = file_logs if file_logs is not None else JobLogs()
    events = EventHub(
        ring=settings.events_ring,
        client_buffer=settings.events_client_buffer,
        max_streams=settings.events_max_streams,
        heartbeat=settings.events_heartbeat,
    )
    backend: EmbeddedBackend | PostgresBackend
    if clustered and settings.store_url is not None:
        backend = PostgresBackend(
            url=settings.store_url,
            lost_after=settings.node_lost_after,
            pool_size=settings.store_pool_size,
            pool_timeout=settings.store_pool_timeout,
            statement_timeout=settings.store_statement_timeout,
        )
        events.use_store_head(functools.partial(head_of, backend))
        # Any node serves any job's log: the running node writes its lines into the store.
        logs = PostgresJobLogs(backend.pool, max_bytes=settings.log_max_bytes)
    else:
        backend = EmbeddedBackend(store=JobStore(), events=events)
    runner = Runner(kill_grace=settings.kill_grace)
    service = JobService(
        backend=backend, logs=logs, metrics=metrics, runner=runner, run_request_ttl=settings.run_request_ttl
    )
    app = web.Application(client_max_size=MAX_BODY, handler_args=HTTP_LIMITS)
    routes = setup_api_routes(
        app,
        request_wrapper(EngineError, authorize=authorize, on_done=metrics.observe_request, decorate=_no_store),
        rules=ENGINE_RULES,
    )
    app[SETTINGS] = settings
    app[SERVICE] = service
    app[OVERRIDES] = OverrideService(backend=backend, clock=settings.clock, sweep_every=settings.override_sweep)
    app[EVENTS] = events
    # Open streams end at shutdown's start, so that their handlers return instead of being cancelled.
    app.on_shutdown.append(_end_streams)
    app[PAGE_CACHE] = PageCache()
    app[AUTHENTICATOR] = Authenticator()
    expiring: ExpiringLogs | None = file_logs
    if isinstance(backend, PostgresBackend):
        expiring = PostgresExpiringLogs(backend.pool, url=backend.url)
    if expiring is not None and settings.log_retention_days is not None:
        app[LOG_RETENTION] = LogRetention(service=service, logs=expiring, days=settings.log_retention_days)
    app.cleanup_ctx.append(log_flusher)
    if isinstance(backend, PostgresBackend):
        app.cleanup_ctx.append(_node_context(settings, backend, catalog, environ))
    else:
        app.cleanup_ctx.append(_engine_context(settings, backend, journal, catalog, environ))
    routes.add_table(ROUTES)
    openapi.serve(app)
    return app


def _configure(
    app: web.Application, settings: Settings, catalog: Catalog | None, environ: Mapping[str, str] | None
) -> tuple[Catalog, str]:
    """Check the bind address, load the catalog and the admin token; return the catalog and the token's origin."""
    env = os.environ if environ is None else environ
    check_bind_allowed(settings, env)
    try:
        cat = catalog if catalog is not None else load_catalog(settings.config)
    except CatalogError as exc:
        raise ConfigError(str(exc)) from None
    token, origin = resolve_admin_token(settings, env)
    app[AUTHENTICATOR].configure(admin_token=token, catalog=cat)
    return cat, origin


def _node_context(
    settings: Settings, backend: PostgresBackend, catalog: Catalog | None, environ: Mapping[str, str] | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Start as a node of the PostgreSQL store: check the schema, register, heartbeat; stop runs at the end."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        cat, origin = _configure(app, settings, catalog, environ)
        service = app[SERVICE]
        try:
            await backend.open()
        except StoreDown as exc:
            raise StartupError(str(exc)) from None
        node = ClusterNode(
            service=service,
            backend=backend,
            lease=NodeLease(NodeTiming(heartbeat=settings.node_heartbeat, lost_after=settings.node_lost_after)),
            events=app[EVENTS],
            poll=settings.listen_poll,
        )
        try:
            async with backend.connection("checked") as conn:
                await check_schema(conn)
            if isinstance(service.logs, PostgresJobLogs):
                await service.logs.start()
            await service.start(catalog=cat)
            await node.start()
        except SchemaError as exc:
            await backend.close()
            raise StartupError(f"store {redact(backend.url)}: {exc}") from None
        except StoreDown as exc:
            await backend.close()
            raise StartupError(str(exc)) from None
        app[NODE] = node
        log.info(
            "engine_started",
            types=len(cat.types),
            clients=len(cat.clients),
            token_from=origin,
            store=redact(backend.url),
            node_id=node.lease.node_id,
        )
        retention_task = _start_retention(app)
        sweep_task = _start_override_sweep(app)
        try:
            yield
        finally:
            await _cancel(retention_task, sweep_task)
            await service.close()  # runs stopped and their outcomes recorded while the node still holds its lease
            await node.close()
            await backend.close()
            log.info("engine_stopped")

    return context


async def _end_streams(app: web.Application) -> None:
    app[EVENTS].end_all("the engine is stopping")


def _start_retention(app: web.Application) -> asyncio.Task[None] | None:
    """Start the app's log retention loop, if it has one."""
    retention = app.get(LOG_RETENTION)
    return asyncio.create_task(retention.run(), name="log-retention") if retention is not None else None


def _start_override_sweep(app: web.Application) -> asyncio.Task[None]:
    """Start the loop that records SAFE_MODE override windows past their end as expired."""
    return asyncio.create_task(app[OVERRIDES].run_sweep(), name="override-sweep")


async def _cancel(*tasks: asyncio.Task[None] | None) -> None:
    """Cancel the background tasks given (``None`` skipped) and wait for each to end."""
    for task in tasks:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _engine_context(
    settings: Settings,
    backend: EmbeddedBackend,
    journal: Journal | None,
    catalog: Catalog | None,
    environ: Mapping[str, str] | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        cat, origin = _configure(app, settings, catalog, environ)
        service = app[SERVICE]
        replay: Iterable[Record] = ()
        snapshotter: Snapshotter | None = None
        used: Journal
        if journal is not None:
            used, replay = journal, list(journal.recent())
        elif settings.ephemeral:
            used = MemoryJournal(max_records=EPHEMERAL_RECORDS)
        else:
            used = await _open_durable(settings, service, backend.store)
            snapshotter = Snapshotter(
                store=backend.store,
                journal=used,
                state_dir=settings.data_dir / STATE_DIR,
                records=settings.snapshot_records,
                seconds=settings.snapshot_seconds,
            )
        backend.use_journal(used)
        try:
            await service.start(catalog=cat, replay=replay)
        except JournalDown:
            await used.close()
            raise StartupError(
                "the journal cannot be written, so jobs interrupted by the last stop cannot be "
                "recorded; check the disk holding the data directory"
            ) from None
        except BaseException:
            await used.close()
            raise
        # Streams start here: a client resuming from before this start gets a reset, not a gap.
        app[EVENTS].start(backend.store.seq)
        snapshot_task = asyncio.create_task(snapshotter.run()) if snapshotter is not None else None
        pack_task = asyncio.create_task(pack_cold_jobs(backend.store))
        retention_task = _start_retention(app)
        sweep_task = _start_override_sweep(app)
        log.info(
            "engine_started",
            types=len(cat.types),
            clients=len(cat.clients),
            token_from=origin,
            ephemeral=settings.ephemeral,
            jobs=len(backend.store),
            journal_seq=backend.store.seq,
        )
        try:
            yield
        finally:
            await _cancel(pack_task, snapshot_task, retention_task, sweep_task)
            await service.close()
            if snapshotter is not None:
                await snapshotter.take()
            await used.close()
            log.info("engine_stopped")

    return context


async def pack_cold_jobs(store: JobStore) -> None:
    """Pack the cold jobs that start-up left plain, in slices of :data:`PACK_SLICE`, then release the memory.

    Runs once in the background after start-up (see :mod:`engine_hub.store.embedded`):
    the engine serves meanwhile, between slices of :data:`PACK_SLICE` jobs.
    """
    started, count = time.perf_counter(), len(store)
    # Not a wait for a condition (ASYNC110): each slice is work, and sleep(0) yields to requests between.
    while store.pack_cold(PACK_SLICE):  # noqa: ASYNC110
        await asyncio.sleep(0)
    # Packed jobs were allocated after settle_heap's freeze; their plain bytes are free C heap.
    gc.freeze()
    malloc_trim()
    log.info("cold_jobs_packed", jobs=count, seconds=round(time.perf_counter() - started, 3))


async def _open_durable(settings: Settings, service: JobService, store: JobStore) -> FileJournal:
    """Open the file journal and rebuild the store from it, off the event loop."""
    if isinstance(service.logs, FileJobLogs):
        try:
            await asyncio.to_thread(service.logs.open)  # sums the sizes of the existing files
        except OSError as exc:
            raise StartupError(
                f"cannot create the job log directory {service.logs.directory}: {exc.strerror or exc}"
            ) from None
    journal = await asyncio.to_thread(open_journal, settings)
    try:
        count = await asyncio.to_thread(restore, journal, store, settings)
    except BaseException:
        await journal.close()
        raise
    snap = journal.snapshot
    log.info("journal_replayed", snapshot_seq=snap.seq if snap is not None else None, replayed=count, jobs=len(store))
    return journal
