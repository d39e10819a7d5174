"""What an engine node does beside serving requests when jobs live in PostgreSQL.

:class:`ClusterNode` runs three loops on the event loop:

- **heartbeat** every ``timing.heartbeat`` seconds. A heartbeat that
  matches no row (this node was judged lost), or no successful one for
  ``timing.fence_after`` (2/3 of the threshold, monotonic clock, timed from
  the start of the last successful attempt), *fences* the node: it kills its
  runs (their outcomes will be refused: :class:`engine_hub.store.backend.Fenced`),
  stops claiming, fails ``/readyz``, and registers again with a new id.
- **sweep**, after each heartbeat, once ``sweep_from`` has passed (one
  threshold after the node (re)connected): lost nodes' runs become FAILED
  ``interrupted: node lost`` (:func:`engine_hub.store.nodes.sweep`).
- **listener**: one dedicated connection (not a pooled one) that LISTENs
  on ``engine_events`` and follows the change feed by seq
  (:mod:`engine_hub.store.changes`): on every notification, on (re)connect
  and every ``poll`` seconds as a fallback, it reads the changes after the
  last one it handled. A cancel recorded by another node for a run of this
  node is delivered from there: that is how a cancel that reached node B
  kills node A's process group, even one recorded while A's listener was
  reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any, Final

import psycopg
import structlog
from aiohttp import web

from engine_hub.jobs.service import JobService
from engine_hub.store import nodes
from engine_hub.store.actions import Action
from engine_hub.store.changes import BATCH, CHANNEL, Change, changes_after, head_of, jobs_of, last_seq
from engine_hub.store.nodes import NodeLease
from engine_hub.store.postgres import UNAVAILABLE_ERRORS, PostgresBackend, connect_kwargs
from shared.pg import describe_error
from shared.sse import EventHub

log = structlog.get_logger("engine.cluster")

#: The fallback poll of the listener (seconds): a lost notification delays a cancel by at most this.
DEFAULT_POLL: Final = 5.0
#: ``by`` of the cancels a fencing node sends to its own runs.
FENCED_BY: Final = "node fenced"


class ClusterNode:
    """This process as a node of a PostgreSQL store: registration, heartbeat, sweep, cancel routing.

    :meth:`start` registers (raising :class:`engine_hub.errors.StoreDown`
    when the database cannot be reached); :meth:`close` stops the loops and
    marks the node as gone, so nobody waits a threshold to sweep it (its runs
    have been stopped and recorded by then).
    """

    def __init__(
        self,
        *,
        service: JobService,
        backend: PostgresBackend,
        lease: NodeLease,
        events: EventHub,
        poll: float = DEFAULT_POLL,
    ):
        self._service = service
        self._events = events
        self._backend = backend
        self.lease = lease
        self._poll = poll
        self._tasks: list[asyncio.Task[None]] = []
        # The seq of the last change the listener handled: the store's head when this process
        # starts (before it registers, so a change that could concern its runs is above it), then
        # moved forward by the feed (and back only if the store's head went back: a restore).
        self._cursor = 0
        # The heartbeat's own connection (see _beat), opened by the first beat.
        self._beat_conn: psycopg.AsyncConnection[Any] | None = None

    @property
    def ready(self) -> bool:
        """Whether this node may claim runs now (what ``/readyz`` reports)."""
        return self.lease.holds()

    async def start(self) -> None:
        """Take the change feed's head, register this process as a node, then start the loops."""
        self._cursor = await head_of(self._backend)
        self._events.start(self._cursor)
        await self._register()
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="node-heartbeat"),
            asyncio.create_task(self._listen_loop(), name="node-listener"),
        ]

    async def close(self) -> None:
        """Stop the loops; mark this node as stopped (``lost_at``) if the database is there."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._beat_conn is not None:
            await self._beat_conn.close()
            self._beat_conn = None
        node_id = self.lease.node_id
        if node_id is None:
            return
        with contextlib.suppress(*UNAVAILABLE_ERRORS, psycopg.Error):
            async with self._backend.pool.connection(timeout=2) as conn, conn.transaction():
                await conn.execute("UPDATE nodes SET lost_at = now() WHERE id = %s AND lost_at IS NULL", (node_id,))
        log.info("node_stopped", node_id=node_id)

    async def _register(self) -> None:
        started = time.monotonic()
        async with self._backend.connection("registered") as conn:
            node_id = await nodes.register(conn)
        self.lease.registered(node_id, started)
        self._backend.node_id = node_id
        log.info("node_registered", node_id=node_id, fenced_before=self.lease.fenced_count)

    def _fence(self, why: str) -> None:
        log.error("node_fenced", node_id=self.lease.node_id, reason=why, running=len(self._service.running_here()))
        self.lease.fence()
        self._backend.node_id = None
        self._service.kill_runs(by=FENCED_BY)

    async def _heartbeat_loop(self) -> None:
        timing = self.lease.timing
        failing = False
        while True:
            await asyncio.sleep(timing.heartbeat)
            started = time.monotonic()
            if self.lease.node_id is not None and started - self.lease.last_ok >= timing.fence_after:
                self._fence("no successful heartbeat within 2/3 of the lost threshold")
            try:
                # One attempt lasts at most one period, so the watchdog above runs on time even when a
                # statement hangs (the pool and statement timeouts together can be longer).
                if self.lease.node_id is None:
                    await asyncio.wait_for(self._register(), timing.heartbeat)
                    failing = False
                    continue
                alive = await asyncio.wait_for(self._beat(self.lease.node_id), timing.heartbeat)
            except Exception as exc:  # StoreDown, TimeoutError: the database is away; the watchdog decides
                if not failing:
                    log.error("heartbeat_failed", node_id=self.lease.node_id, error=str(exc))
                failing = True
                continue
            if not alive:
                self._fence("the heartbeat matched no row: this node was judged lost")
                continue
            self.lease.beat_ok(started, reconnected=failing)
            if failing:
                log.info("heartbeat_recovered", node_id=self.lease.node_id, sweep_in=timing.lost_after)
            failing = False
            if time.monotonic() >= self.lease.sweep_from:
                await self._sweep()
            await self._recheck_cancels()

    async def _beat(self, node_id: str) -> bool:
        # A connection of its own, not the pool's: a burst of runs holding every pooled connection (their
        # claims queue on the audit chain's head) must not starve the heartbeat, or the node would judge
        # itself lost and refuse runs (503 node_not_ready) while it is perfectly alive.
        conn = self._beat_conn
        if conn is None or conn.closed:
            url = self._backend.url
            conn = self._beat_conn = await psycopg.AsyncConnection.connect(
                url, **{**connect_kwargs(url), "application_name": f"{HEARTBEAT_NAME} {os.getpid()}"}
            )
        try:
            return await nodes.heartbeat(conn, node_id, self.lease.timing.lost_after)
        except BaseException:
            # A failed or timed-out (cancelled) beat leaves the connection in an unknown state: start afresh.
            self._beat_conn = None
            await conn.close()
            raise

    async def _recheck_cancels(self) -> None:
        """Deliver the cancels of this node's runs from the jobs table: a fallback that needs no listener.

        The change feed delivers them within milliseconds; this covers a listener that cannot
        connect at all (one connection more than the pool), at the pace of the heartbeat.
        """
        node_id = self.lease.node_id
        if node_id is None or not self._service.running_here():
            return
        try:
            async with self._backend.connection("read") as conn:
                cur = await conn.execute(
                    "SELECT id::text, cancel_requested_by FROM jobs "
                    "WHERE node_id = %s AND status = 'RUNNING' AND cancel_requested_by IS NOT NULL",
                    (node_id,),
                )
                requested = await cur.fetchall()
        except Exception as exc:  # StoreDown: the next beat tries again
            log.warning("cancel_recheck_failed", error=str(exc))
            return
        for job_id, by in requested:
            self._service.deliver_cancel(job_id, by)

    async def _sweep(self) -> None:
        try:
            async with self._backend.connection("swept") as conn:
                failed = await nodes.sweep(conn, self.lease.timing.lost_after)
        except Exception as exc:  # a failed sweep is retried on the next beat
            log.error("sweep_failed", error=str(exc))
            return
        if failed:
            log.warning("nodes_swept", interrupted=len(failed))

    async def _listen_loop(self) -> None:
        """Keep one LISTEN connection; follow the change feed from the last change handled."""
        url = self._backend.url
        delay = 0.2
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    url,
                    autocommit=True,
                    **{**connect_kwargs(url), "application_name": f"{LISTENER_NAME} {os.getpid()}"},
                )
            except psycopg.Error as exc:
                log.error("listener_connect_failed", error=describe_error(exc, url), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._poll)
                continue
            delay = 0.2
            try:
                async with conn:
                    # LISTEN first, then read: a change committed in between is both notified and
                    # read, and the cursor makes the second reading a no-op.
                    await conn.execute(f"LISTEN {CHANNEL}")
                    head = await last_seq(conn)
                    if head < self._cursor:
                        # The store went back (a restore, a failover to a replica that lacked the tail):
                        # seqs above its head will be reused, so follow from its head; streams start over.
                        log.error("change_feed_rewound", cursor=self._cursor, head=head)
                        self._cursor = head
                        self._events.end_all("the job store went back to an earlier state")
                        self._events.start(head)
                    log.info("listener_connected", after=self._cursor)
                    await self._catch_up(conn)
                    await self._follow(conn)
            except psycopg.Error as exc:
                log.error("listener_lost", error=describe_error(exc, url), after=self._cursor)

    async def _follow(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            # notifies() holds the connection while it iterates: end it at the first notification
            # (or at the poll timeout), then read. Notifications arriving meanwhile are kept for
            # the next call, and the read covers them anyway.
            async for _ in conn.notifies(timeout=self._poll, stop_after=1):
                pass
            await self._catch_up(conn)

    async def _catch_up(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            batch = await changes_after(conn, self._cursor)
            jobs = await jobs_of(conn, batch) if batch else {}
            for change in batch:
                self._handle(change)
                job = jobs.get(change.job_id or "")
                if job is not None:
                    self._events.publish(seq=change.seq, action=change.action, job=job)
            if batch:
                self._cursor = batch[-1].seq
            if len(batch) < BATCH:
                return

    def _handle(self, change: Change) -> None:
        if change.action == Action.CANCEL_REQUESTED and change.job_id is not None:
            # The service ignores jobs it does not run, and delivers a cancel once.
            self._service.deliver_cancel(change.job_id, change.actor)


#: ``application_name`` of the listener's connection (followed by the process id), so operators
#: can tell it in pg_stat_activity.
LISTENER_NAME: Final = "engine-hub listener"
#: ``application_name`` of a node's heartbeat connection (one per node, beside its pool).
HEARTBEAT_NAME: Final = "engine-hub heartbeat"
#: The app's node, in PostgreSQL mode only (absent with the embedded store).
NODE: Final = web.AppKey("node", ClusterNode)
