"""Engine nodes on one PostgreSQL store: registration, heartbeat, the sweep of lost nodes.

Liveness is judged by the database's clock only (``now()``), never by a
node's own: a node is *lost* when its ``heartbeat_at`` is older than
``lost_after``. Each process start registers a fresh node id; so does a
node that fenced itself (see :class:`NodeLease`).

The sweep runs on any node, one at a time (``pg_try_advisory_xact_lock``):
it marks lost nodes, then fails their RUNNING jobs ``interrupted: node
lost`` with actor ``system``, each with its audit record, in one
transaction. A swept job is never run again: it is FAILED, and the
database's transition trigger refuses any way back to READY.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any, Final

import attrs
import psycopg
import structlog

from engine_hub.store.actions import Action
from engine_hub.store.entry import JobEntry
from engine_hub.store.pg_rows import JOB_COLUMNS, entry_from_row, history_json, keep_wire
from shared.contract import JobStatus, format_time, parse_time, utcnow
from shared.journal.postgres import ENGINE_CHAIN, append_to_chain

log = structlog.get_logger("engine.nodes")

#: Key of the advisory lock a sweep holds for its transaction: one sweeper at a time.
SWEEP_LOCK: Final = 0x7377656570  # "sweep" in ASCII
#: ``actor`` and ``source`` of the records a sweep writes.
SWEEP_ACTOR: Final = "system"
SWEEP_SOURCE: Final = "engine"
#: Error of a job whose node was lost while it ran: its outcome is unknown.
NODE_LOST_ERROR: Final = "interrupted: node lost"

DEFAULT_HEARTBEAT: Final = 5.0
DEFAULT_LOST_AFTER: Final = 30.0


@attrs.frozen(kw_only=True)
class NodeTiming:
    """How often a node heartbeats and sweeps (``heartbeat``) and after how long without one it is lost.

    A node fences itself after ``fence_after`` (2/3 of ``lost_after``)
    without a successful heartbeat, so it stops before others can sweep it.
    """

    heartbeat: float = attrs.field(default=DEFAULT_HEARTBEAT, validator=attrs.validators.gt(0))
    lost_after: float = attrs.field(default=DEFAULT_LOST_AFTER, validator=attrs.validators.gt(0))

    def __attrs_post_init__(self) -> None:
        if self.heartbeat * 2 > self.lost_after:
            raise ValueError(
                f"the heartbeat ({self.heartbeat:g} s) must be at most half the lost threshold ({self.lost_after:g} s)"
            )

    @property
    def fence_after(self) -> float:
        """Seconds without a successful heartbeat after which a node fences itself (2/3 of ``lost_after``)."""
        return self.lost_after * 2 / 3


async def register(conn: psycopg.AsyncConnection[Any]) -> str:
    """Insert a fresh node row (heartbeat now, by the database's clock) and return its id."""
    node_id = str(uuid.uuid4())
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO nodes (id, host, pid) VALUES (%s, %s, %s)", (node_id, socket.gethostname(), os.getpid())
        )
    return node_id


async def heartbeat(conn: psycopg.AsyncConnection[Any], node_id: str, lost_after: float) -> bool:
    """Renew the node's heartbeat; False when no row matched: the node is (or may already be judged) lost."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE nodes SET heartbeat_at = now() WHERE id = %s AND lost_at IS NULL "
            "AND heartbeat_at > now() - make_interval(secs => %s)",
            (node_id, lost_after),
        )
        return cur.rowcount == 1


async def sweep(conn: psycopg.AsyncConnection[Any], lost_after: float) -> list[JobEntry]:
    """Mark lost nodes and fail their RUNNING jobs (one transaction); return the jobs failed.

    Does nothing (returns ``[]``) when another node is sweeping. The records
    are chained in the order the jobs were claimed.
    """
    async with conn.transaction():
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (SWEEP_LOCK,))
        got = await cur.fetchone()
        if not got or not got[0]:
            return []
        cur = await conn.execute(
            "UPDATE nodes SET lost_at = now() WHERE lost_at IS NULL "
            "AND heartbeat_at < now() - make_interval(secs => %s) RETURNING id::text",
            (lost_after,),
        )
        lost = [row[0] for row in await cur.fetchall()]
        for node_id in lost:
            log.warning("node_lost", node_id=node_id)
        at = format_time(utcnow()) or ""
        cur = await conn.execute(
            "UPDATE jobs SET status = 'FAILED', ended_at = %(at)s, error = %(error)s, pid = NULL, "
            "history = history || %(h)s "
            "WHERE status = 'RUNNING' AND node_id IN (SELECT id FROM nodes WHERE lost_at IS NOT NULL) "
            f"RETURNING {JOB_COLUMNS}",
            {
                "at": parse_time(at),
                "error": NODE_LOST_ERROR,
                "h": history_json(status=JobStatus.FAILED, at=at, by=SWEEP_ACTOR, reason=NODE_LOST_ERROR),
            },
        )
        failed = sorted((entry_from_row(row) for row in await cur.fetchall()), key=lambda e: e.seq)
        if failed:
            await keep_wire(conn, failed)
        for entry in failed:
            await append_to_chain(
                conn,
                ENGINE_CHAIN,
                action=str(Action.JOB_INTERRUPTED),
                actor=SWEEP_ACTOR,
                source=SWEEP_SOURCE,
                job_id=entry.id,
                data={"status": str(JobStatus.FAILED), "error": NODE_LOST_ERROR},
                at=at,
            )
            log.warning("job_interrupted", job_id=entry.id, error=NODE_LOST_ERROR)
        return failed


@attrs.define
class NodeLease:
    """This process's standing as a node: its current id, and whether it may claim runs.

    ``last_ok`` is the monotonic time at which the last *successful*
    heartbeat attempt started (the conservative end: the database may have
    judged the heartbeat at any moment after it). The node holds a lease
    while a heartbeat succeeded within ``timing.fence_after``; past that,
    or when a heartbeat matched no row, it must fence itself.
    ``sweep_from`` is the monotonic time before which this node does not
    sweep (one threshold after it (re)connected, so that a database outage
    does not make it fail every other node as soon as the database is back).
    """

    timing: NodeTiming
    node_id: str | None = None
    last_ok: float = 0.0
    sweep_from: float = 0.0
    fenced_count: int = 0

    def registered(self, node_id: str, started: float) -> None:
        """Take ``node_id``, registered by an attempt that started at ``started`` (monotonic)."""
        self.node_id, self.last_ok = node_id, started
        self.sweep_from = started + self.timing.lost_after

    def beat_ok(self, started: float, *, reconnected: bool) -> None:
        """A heartbeat that started at ``started`` succeeded."""
        self.last_ok = started
        if reconnected:
            self.sweep_from = max(self.sweep_from, started + self.timing.lost_after)

    def holds(self, now: float | None = None) -> bool:
        """Whether the node may claim runs now."""
        now = time.monotonic() if now is None else now
        return self.node_id is not None and now - self.last_ok < self.timing.fence_after

    def fence(self) -> None:
        """Give up the id: claims stop until :meth:`registered` is called with a new one."""
        self.node_id = None
        self.fenced_count += 1
