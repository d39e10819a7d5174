"""The PostgreSQL job store: the one truth shared by every engine node (issue 13).

Each change is one transaction: the job's row changes by one conditional
statement, then its audit record is chained onto the ``engine`` chain
(:func:`shared.journal.postgres.append_to_chain`, which locks the chain's
head row as the transaction's last step), and the ``audit_events_notify``
trigger announces the change to every node on commit
(:mod:`engine_hub.store.changes`). So a change and its record
are durable together or not at all.

At most once, across nodes: a RUN is the single statement ``UPDATE jobs SET
status='RUNNING', node_id=$me … WHERE id=$1 AND status='READY' AND <$me is
alive>``; of any number of concurrent RUNs exactly one row is updated, and
the database's ``jobs_guard_transition`` trigger refuses any way back to
READY. Facts of a run (its pid, its outcome) are written ``WHERE node_id=$me
AND status='RUNNING'``: a node that lost the run (it was swept as lost) is
*fenced*, its write changes nothing and is discarded (:class:`Fenced`).

Database failures become :class:`engine_hub.errors.StoreDown` (503
``store_unavailable``), for reads and changes alike; a pool with no free
connection within ``pool_timeout`` gives the same, never a hang.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from engine_hub.errors import StoreDown, StoreTimeout
from engine_hub.store.actions import REQUEST_ACTIONS, Action
from engine_hub.store.backend import ClaimLost, Decide, Fenced
from engine_hub.store.entry import JobEntry, StoreError, log_transition
from engine_hub.store.legacy_views import engine_log_of, result_of
from engine_hub.store.override import OverrideAction, Window
from engine_hub.store.override_pg import change_window, read_window
from engine_hub.store.pg_rows import (
    JOB_COLUMNS,
    LISTED_COLUMNS,
    WIRE_COLUMNS,
    entry_from_row,
    history_json,
    keep_wire,
    listed_entry,
    request_json,
    row_from_wire,
    wire_from_row,
)
from engine_hub.store.requests import next_request
from shared.contract import JobStatus, format_time, parse_time, utcnow
from shared.journal.chain import AuditQuery, Record
from shared.journal.postgres import AUDIT_COLUMNS, ENGINE_CHAIN, append_to_chain, audit_where, record_of_row
from shared.pg import check_url, describe_error, redact

log = structlog.get_logger("engine.store")


#: libpq settings every pooled connection gets: find the primary after a failover, and notice a
#: dead server (keepalives) instead of waiting on a half-open TCP connection.
CONNECT_KWARGS: Final[dict[str, Any]] = {
    "target_session_attrs": "read-write",
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "connect_timeout": 5,
}

#: Errors that mean "the database is not there right now" (503), as opposed to a bug (500).
UNAVAILABLE_ERRORS: Final = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.ReadOnlySqlTransaction,
    PoolTimeout,
)


#: The audit actions that have a legacy EngineLog entry (:func:`engine_log_of`).
_LEGACY_ACTIONS: Final = ("job_created", "run_requested", "job_finished", "job_interrupted", "cancel_requested")


def connect_kwargs(url: str) -> dict[str, Any]:
    """The libpq settings of :data:`CONNECT_KWARGS` that ``url`` does not set itself."""
    given = check_url(url)
    return {key: value for key, value in CONNECT_KWARGS.items() if key not in given}


def statement_timeout_setter(seconds: float) -> Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]:
    """A pool ``configure`` callback setting the session's ``statement_timeout`` to ``seconds``.

    A ``SET`` on each new connection, not libpq's ``options``: that would
    replace any ``options`` given by ``PGOPTIONS`` or a service file.
    """
    milliseconds = max(1, round(seconds * 1000))

    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(f"SET statement_timeout = {milliseconds}")
        await conn.commit()  # the pool takes back only idle connections

    return configure


@asynccontextmanager
async def pooled(pool: AsyncConnectionPool[Any], doing: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection of ``pool``; "the database is not there" errors inside (:data:`UNAVAILABLE_ERRORS`)
    are logged and become :class:`StoreDown` (503 ``store_unavailable``) saying nothing was ``doing``."""
    try:
        async with pool.connection() as conn:
            yield conn
    except psycopg.errors.QueryCanceled:
        # A slow statement (a lock held elsewhere, a huge scan), not a store that is down.
        log.error("store_statement_timeout", doing=doing)
        raise StoreTimeout(f"the job store took too long to answer, so nothing was {doing}; try again later") from None
    except UNAVAILABLE_ERRORS as exc:
        url = pool.conninfo if isinstance(pool.conninfo, str) else ""
        log.error("store_unavailable", doing=doing, error=describe_error(exc, url))
        raise StoreDown(f"the job store is unavailable, so nothing was {doing}; try again later") from None


def job_uuid(job_id: str) -> str | None:
    """``job_id`` if it is a canonical lower-case uuid (every job id is), else ``None``: it names no job
    and must not reach a uuid cast."""
    try:
        parsed = uuid.UUID(job_id)
    except (ValueError, AttributeError, TypeError):
        return None
    return job_id if str(parsed) == job_id else None


class PostgresBackend:
    """A :class:`engine_hub.store.backend.Backend` on PostgreSQL, for the node ``node_id``.

    Built without I/O; :meth:`open` opens its pool of ``pool_size``
    connections (a request that waits ``pool_timeout`` for one gets 503, as
    does one whose statement runs past ``statement_timeout``: the server
    cancels it, so a lock held elsewhere never holds a request for ever).
    ``lost_after`` (seconds) is the liveness
    threshold a claim is guarded by: a node whose heartbeat is older cannot
    claim. ``node_id`` is set by the node's registration
    (:mod:`engine_hub.store.nodes`) and changes when the node re-registers.
    """

    def __init__(
        self,
        *,
        url: str,
        lost_after: float,
        pool_size: int = 10,
        pool_timeout: float = 5.0,
        statement_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.lost_after = lost_after
        self.pool_timeout = pool_timeout
        # Built closed (no connection, no task): :meth:`open` opens it once the loop runs.
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=min(2, pool_size),
            max_size=pool_size,
            timeout=pool_timeout,
            kwargs=connect_kwargs(url),
            configure=statement_timeout_setter(statement_timeout),
            open=False,
            name="engine-store",
        )
        self.node_id: str | None = None
        self._healthy = True

    async def open(self) -> None:
        """Open the pool, waiting for its first connections.

        Raises :class:`StoreDown` (one line, no password) when the database cannot be reached.
        """
        try:
            await self.pool.open(wait=True, timeout=self.pool_timeout + 5)
        except (PoolTimeout, psycopg.Error) as exc:
            await self.pool.close()
            raise StoreDown(
                f"cannot connect to the store {redact(self.url)}: {describe_error(exc, self.url)}"
            ) from None

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.close()

    @property
    def healthy(self) -> bool:
        """False from a failed database call until the next one that succeeds."""
        return self._healthy

    @property
    def change_seq(self) -> None:
        """``None``: other nodes change jobs too, so no page may be cached."""
        return None

    @asynccontextmanager
    async def connection(self, doing: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection; database failures inside become :class:`StoreDown` naming ``doing``."""
        try:
            async with pooled(self.pool, doing) as conn:
                yield conn
        except StoreTimeout:
            raise  # the store answers; one statement was slow
        except StoreDown:
            self._healthy = False
            raise
        self._healthy = True

    # -- changes ---------------------------------------------------------------------

    async def commit(
        self, *, action: Action, actor: str, source: str, job_id: str, data: dict[str, Any], exclusive: bool = False
    ) -> JobEntry:
        """See :class:`engine_hub.store.backend.Backend`: one transaction, row change then audit record."""
        key = job_uuid(job_id)
        if key is None:
            raise ClaimLost(f"no job {job_id!r}")
        at = data["createdAt"] if action is Action.JOB_CREATED else format_time(utcnow()) or ""
        async with self.connection("changed") as conn, conn.transaction():
            row = await self._change(conn, action, key, actor, at, data, exclusive)
            entry = entry_from_row(row)
            if action is not Action.JOB_PLANNED:  # audit only: the row was read, not changed
                await keep_wire(conn, [entry])
            await append_to_chain(
                conn, ENGINE_CHAIN, action=str(action), actor=actor, source=source, job_id=job_id, data=data, at=at
            )
        if action in (Action.RUN_REQUESTED, Action.JOB_FINISHED):
            running = action is Action.RUN_REQUESTED
            log_transition(
                log,
                entry=entry,
                from_status=JobStatus.READY if running else JobStatus.RUNNING,
                by=str(data.get("runBy") or actor) if running else actor,
                reason=data.get("reason" if running else "error"),
                action=str(action),
                source=source,
            )
        return entry

    async def _change(
        self,
        conn: psycopg.AsyncConnection[Any],
        action: Action,
        key: str,
        actor: str,
        at: str,
        data: dict[str, Any],
        exclusive: bool,
    ) -> Sequence[Any]:
        """Change the job's row for ``action``; return the new row. Raises ClaimLost/Fenced when nothing changed."""
        mine = {"id": key, "node": self.node_id}
        if action is Action.JOB_CREATED:
            values = row_from_wire(data)
            sql = (
                f"INSERT INTO jobs ({', '.join(WIRE_COLUMNS)}) "
                f"VALUES ({', '.join(f'%({c})s' for c in WIRE_COLUMNS)}) RETURNING {JOB_COLUMNS}"
            )
            return await _one(conn, sql, values)
        if action is Action.RUN_REQUESTED:
            if self.node_id is None:
                raise ClaimLost("this node is not registered")
            if exclusive:
                # Two claims of different jobs of one exclusive type must not both see "none running".
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('exclusive-type:' || type)) FROM jobs WHERE id = %s", (key,)
                )
            run_by = str(data.get("runBy") or actor)
            # The job's run request after this run (its completing approval): checked under the row's lock.
            request = await self._next_request(conn, key, action, actor, data)
            row = await _maybe_one(
                conn,
                "UPDATE jobs SET status = 'RUNNING', node_id = %(node)s, started_at = %(at)s, run_by = %(by)s, "
                "run_reason = %(reason)s, history = history || %(h)s, run_request = %(request)s "
                "WHERE id = %(id)s AND status = 'READY' "
                "AND EXISTS (SELECT 1 FROM nodes WHERE nodes.id = %(node)s AND lost_at IS NULL "
                "AND heartbeat_at > now() - make_interval(secs => %(lost)s)) "
                + (
                    "AND NOT EXISTS (SELECT 1 FROM jobs AS r WHERE r.type = jobs.type AND r.status = 'RUNNING') "
                    if exclusive
                    else ""
                )
                + f"RETURNING {JOB_COLUMNS}",
                {
                    **mine,
                    "at": parse_time(at),
                    "by": run_by,
                    "reason": data.get("reason"),
                    "h": history_json(status=JobStatus.RUNNING, at=at, by=run_by, reason=data.get("reason")),
                    "request": request_json(request),
                    "lost": self.lost_after,
                },
            )
            if row is None:
                raise ClaimLost(f"job {key} was not claimed")
            return row
        if action in REQUEST_ACTIONS:
            request = await self._next_request(conn, key, action, actor, data)
            return await _one(
                conn,
                "UPDATE jobs SET run_request = %(request)s WHERE id = %(id)s AND status = 'READY' "
                f"RETURNING {JOB_COLUMNS}",
                {**mine, "request": request_json(request)},
            )
        if action is Action.JOB_STARTED:
            return await self._fenced(conn, "pid = %(pid)s", {**mine, "pid": int(data["pid"])}, action)
        if action is Action.JOB_FINISHED:
            status, error = str(data["status"]), data.get("error")
            return await self._fenced(
                conn,
                "status = %(status)s, ended_at = %(at)s, exit_code = %(code)s, error = %(error)s, pid = NULL, "
                "history = history || %(h)s",
                {
                    **mine,
                    "status": status,
                    "at": parse_time(at),
                    "code": data.get("exitCode"),
                    "error": error,
                    "h": history_json(status=status, at=at, by=actor, reason=error),
                },
                action,
            )
        if action is Action.CANCEL_REQUESTED:
            row = await _maybe_one(
                conn,
                "UPDATE jobs SET cancel_requested_by = %(by)s, cancel_requested_at = %(at)s "
                f"WHERE id = %(id)s AND status = 'RUNNING' AND cancel_requested_by IS NULL RETURNING {JOB_COLUMNS}",
                {**mine, "by": actor, "at": parse_time(at)},
            )
            # Audit-only when the run ended meanwhile or was already asked to stop: no change.
            return row if row is not None else await self._row(conn, key)
        if action is Action.JOB_PLANNED:
            return await self._row(conn, key)  # a plan is not a run: the job does not change
        if action is Action.LOG_TRUNCATED:
            return await _one(
                conn, f"UPDATE jobs SET log_truncated = true WHERE id = %(id)s RETURNING {JOB_COLUMNS}", mine
            )
        if action is Action.LOG_EXPIRED:
            return await _one(
                conn,
                "UPDATE jobs SET log_expired = true WHERE id = %(id)s AND status IN ('DONE', 'FAILED') "
                f"RETURNING {JOB_COLUMNS}",
                mine,
            )
        raise ValueError(f"{action} is written by the sweep only")  # JOB_INTERRUPTED: engine_hub.store.nodes

    @staticmethod
    async def _next_request(
        conn: psycopg.AsyncConnection[Any], key: str, action: Action, actor: str, data: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The job's run request after ``action`` (:func:`next_request`), read under the row's lock.

        The lock (held to the transaction's end) makes concurrent changes of one request, on any
        node, take turns; one that no longer fits (a concurrent approval counted first, the request
        closed meanwhile, the job no longer READY) raises :class:`ClaimLost` and changes nothing.
        """
        cur = await conn.execute("SELECT status, run_request FROM jobs WHERE id = %s FOR UPDATE", (key,))
        row = await cur.fetchone()
        if row is None or row[0] != JobStatus.READY:
            raise ClaimLost(f"job {key} is not READY")
        try:
            return next_request(row[1], action, actor=actor, data=data)
        except StoreError as exc:
            raise ClaimLost(f"job {key}: {exc}") from None

    async def _fenced(
        self, conn: psycopg.AsyncConnection[Any], sets: str, params: dict[str, Any], action: Action
    ) -> Sequence[Any]:
        row = await _maybe_one(
            conn,
            f"UPDATE jobs SET {sets} WHERE id = %(id)s AND node_id = %(node)s AND status = 'RUNNING' "
            f"RETURNING {JOB_COLUMNS}",
            params,
        )
        if row is None:
            raise Fenced(f"{action} of job {params['id']}: this node ({self.node_id}) no longer owns the run")
        return row

    @staticmethod
    async def _row(conn: psycopg.AsyncConnection[Any], key: str) -> Sequence[Any]:
        return await _one(conn, f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %(id)s", {"id": key})

    # -- reads -----------------------------------------------------------------------

    async def get(self, job_id: str) -> JobEntry | None:
        """See :class:`engine_hub.store.backend.Backend`."""
        key = job_uuid(job_id)
        if key is None:
            return None
        async with self.connection("read") as conn:
            row = await _maybe_one(conn, f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %(id)s", {"id": key})
        return None if row is None else entry_from_row(row)

    async def owner(self, job_id: str) -> str | None:
        """The node that claimed the job's run (``None`` before a run, or for an unknown id)."""
        key = job_uuid(job_id)
        if key is None:
            return None
        async with self.connection("read") as conn:
            cur = await conn.execute("SELECT node_id::text FROM jobs WHERE id = %s", (key,))
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def page(
        self,
        *,
        limit: int,
        status: JobStatus | None,
        type_name: str | None,
        before: JobEntry | None,
        q: str | None = None,
    ) -> tuple[list[bytes], JobEntry | None]:
        """See :class:`engine_hub.store.backend.Backend`: one index walk (migration 0001's indexes), limit + 1 rows.

        ``q`` is an ``ILIKE`` with its wildcards escaped (a literal substring, compared by the database's
        case rules): the walk then reads rows down the index until ``limit`` + 1 match, as the embedded
        store does.
        """
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit + 1}
        if q is not None:
            where.append("name ILIKE %(q)s ESCAPE '\\'")
            params["q"] = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        if status is not None:
            where.append("status = %(status)s")
            params["status"] = str(status)
        if type_name is not None:
            where.append("type = %(type)s")
            params["type"] = type_name
        if before is not None:
            where.append("seq < %(before)s")
            params["before"] = before.seq
        # The stored JSON (jobs.wire), not the columns: a page costs no JSON building.
        sql = f"SELECT {LISTED_COLUMNS} FROM jobs {'WHERE ' + ' AND '.join(where) if where else ''} "
        sql += "ORDER BY seq DESC LIMIT %(limit)s"
        async with self.connection("read") as conn:
            cur = await conn.execute(sql, params)
            rows = await cur.fetchall()
        entries = [listed_entry(row) for row in rows[:limit]]
        more = entries[-1] if len(rows) > limit and entries else None
        return [entry.stored for entry in entries], more

    async def has_type(self, type_name: str) -> bool:
        """See :class:`engine_hub.store.backend.Backend`."""
        async with self.connection("read") as conn:
            cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM jobs WHERE type = %s)", (type_name,))
            row = await cur.fetchone()
        return bool(row and row[0])

    async def counts(self) -> dict[JobStatus, int]:
        """See :class:`engine_hub.store.backend.Backend` (a count over the status index: O(jobs); for /metrics)."""
        async with self.connection("read") as conn:
            cur = await conn.execute("SELECT status, count(*) FROM jobs GROUP BY status")
            found = dict(await cur.fetchall())
        return {status: int(found.get(str(status), 0)) for status in JobStatus}

    async def running_of_type(self, type_name: str) -> bool:
        """See :class:`engine_hub.store.backend.Backend`."""
        async with self.connection("read") as conn:
            cur = await conn.execute(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'RUNNING' AND type = %s)", (type_name,)
            )
            row = await cur.fetchone()
        return bool(row and row[0])

    async def open_requests(self) -> list[tuple[str, str]]:
        """See :class:`engine_hub.store.backend.Backend` (the partial index of migration 0002)."""
        async with self.connection("read") as conn:
            cur = await conn.execute(
                "SELECT id::text, run_request->>'expiresAt' FROM jobs "
                "WHERE run_request->>'state' = 'open' AND status = 'READY' ORDER BY run_request->>'expiresAt'"
            )
            return [(job_id, expires) for job_id, expires in await cur.fetchall()]

    async def results(self, limit: int) -> list[dict[str, Any]]:
        """See :class:`engine_hub.store.backend.Backend`: the most recently finished jobs."""
        async with self.connection("read") as conn:
            cur = await conn.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE ended_at IS NOT NULL ORDER BY ended_at DESC, seq DESC LIMIT %s",
                (limit,),
            )
            rows = await cur.fetchall()
        return [result_of(wire_from_row(row)) for row in reversed(rows)]

    async def engine_logs(self, limit: int) -> list[dict[str, Any]]:
        """See :class:`engine_hub.store.backend.Backend`: derived from the engine's audit records."""
        async with self.connection("read") as conn:
            cur = await conn.execute(
                f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE chain = %s AND action = ANY(%s) "
                "ORDER BY seq DESC LIMIT %s",
                (ENGINE_CHAIN, list(_LEGACY_ACTIONS), limit),
            )
            rows = await cur.fetchall()
        logs = (engine_log_of(record_of_row(row)) for row in reversed(rows))
        return [entry for entry in logs if entry is not None]

    async def audit(self, query: AuditQuery) -> list[Record]:
        """See :class:`engine_hub.store.backend.Backend`."""
        where, params = audit_where(ENGINE_CHAIN, query)
        async with self.connection("read") as conn:
            cur = await conn.execute(
                f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE {where} ORDER BY seq DESC LIMIT %s",
                [*params, query.limit],
            )
            return [record_of_row(row) for row in await cur.fetchall()]

    async def override(self) -> Window | None:
        """See :class:`engine_hub.store.backend.Backend`: derived from the chain (see :mod:`.override_pg`)."""
        async with self.connection("read") as conn:
            return await read_window(conn)

    async def change_override(self, *, action: OverrideAction, actor: str, source: str, decide: Decide) -> Window:
        """See :class:`engine_hub.store.backend.Backend`: one transaction under the chain's head lock."""
        async with self.connection("changed") as conn, conn.transaction():
            return await change_window(conn, action=action, actor=actor, source=source, decide=decide)


async def _maybe_one(conn: psycopg.AsyncConnection[Any], sql: str, params: Any) -> Sequence[Any] | None:
    cur = await conn.execute(sql, params)
    return await cur.fetchone()


async def _one(conn: psycopg.AsyncConnection[Any], sql: str, params: Any) -> Sequence[Any]:
    row = await _maybe_one(conn, sql, params)
    if row is None:
        raise ClaimLost("no such job")
    return row
