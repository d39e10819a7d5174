"""The one interface of a job store, and its embedded implementation.

:class:`Backend` is everything the job service and the HTTP handlers need
from where jobs are kept. Two implementations serve the same contract:

- :class:`EmbeddedBackend`: the in-memory :class:`JobStore` made durable by
  a journal (a change is appended, then applied); the default.
- :class:`engine_hub.store.postgres.PostgresBackend`: PostgreSQL is the
  truth, shared by any number of engine nodes (issue 13).

A change is always one of the journal actions
(:class:`engine_hub.store.actions.Action`) and leaves one hash-chained audit
record; :meth:`Backend.commit` makes it. What a store may refuse is part of
the interface: :class:`ClaimLost` (a RUN's claim found the job no longer
READY, or this node may not claim), :class:`Fenced` (a run's fact arrived
from a node that no longer owns the run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from engine_hub.errors import JournalDown
from engine_hub.store.actions import REQUEST_ACTIONS, Action
from engine_hub.store.embedded import JobStore
from engine_hub.store.entry import JobEntry, StoreError
from engine_hub.store.override import OverrideAction, Window
from engine_hub.store.requests import next_request, request_of
from shared.contract import JobStatus
from shared.journal.chain import AuditQuery, Journal, JournalUnavailable, Record
from shared.sse import EventHub

log = structlog.get_logger("engine.store")


class ClaimLost(Exception):
    """A RUN's claim changed nothing: the job left READY meanwhile, its exclusive type got busy,
    or this node may not claim."""


class Fenced(Exception):
    """A run's fact (its pid, its outcome) came from a node that no longer owns the run: it is discarded."""


#: Decides an override change from the newest window (``None`` before the first): returns the record's
#: ``data``, or raises (an :class:`engine_hub.errors.EngineError`) and nothing is written.
Decide = Callable[[Window | None], dict[str, Any]]


class Backend(Protocol):
    """Where jobs live: reads, and :meth:`commit`, the one way to change a job (with its audit record)."""

    @property
    def healthy(self) -> bool:
        """False while changes cannot be made durable (a full disk, a database that is down)."""

    @property
    def change_seq(self) -> int | None:
        """A number that changes with every change this process can see, or ``None`` when it cannot know
        (several nodes): the list's page cache is used only with a number."""

    async def commit(
        self, *, action: Action, actor: str, source: str, job_id: str, data: dict[str, Any], exclusive: bool = False
    ) -> JobEntry:
        """Make one change and its audit record durable, together; return the job's new entry.

        ``exclusive`` (RUN only) says the job's type allows one run at a
        time. Raises :class:`JournalDown` (or its store subclass) when nothing
        could be written, :class:`ClaimLost` / :class:`Fenced` as above.
        """

    async def get(self, job_id: str) -> JobEntry | None:
        """The job's entry, or ``None`` for an id no job has."""

    async def page(
        self,
        *,
        limit: int,
        status: JobStatus | None,
        type_name: str | None,
        before: JobEntry | None,
        q: str | None = None,
    ) -> tuple[list[bytes], JobEntry | None]:
        """Up to ``limit`` encoded jobs created before ``before``, newest first, and the next page's cursor entry.

        ``q`` keeps only jobs whose name contains it, case-insensitively (docs/api.md says how each store compares).
        """

    async def has_type(self, type_name: str) -> bool:
        """Whether any job of this type exists."""

    async def counts(self) -> dict[JobStatus, int]:
        """How many jobs are in each status."""

    async def running_of_type(self, type_name: str) -> bool:
        """Whether a job of this type is RUNNING."""

    async def open_requests(self) -> list[tuple[str, str]]:
        """``(job id, expiresAt)`` of every job with an open run request (the expiry sweep's candidates)."""

    async def results(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` legacy JobResults, oldest first."""

    async def engine_logs(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` legacy EngineLog entries, oldest first."""

    async def audit(self, query: AuditQuery) -> list[Record]:
        """Audit records matching ``query``, newest first."""

    async def override(self) -> Window | None:
        """The newest SAFE_MODE override window as its records left it (``None`` before the first)."""

    async def change_override(self, *, action: OverrideAction, actor: str, source: str, decide: Decide) -> Window:
        """Write one override record (``jobId`` null) with the data ``decide(newest window)`` returns; return the
        window after it. The read, the decision and the write are one step: no other override change (from
        this process or another node) comes between them. Raises what ``decide`` raises, or :class:`JournalDown`.
        """


class EmbeddedBackend:
    """The default store: :class:`JobStore` in memory, each change appended to ``journal`` first.

    A change that the journal refuses changes nothing (503
    ``journal_unavailable``); one it holds is applied to memory at once.
    """

    def __init__(self, *, store: JobStore, events: EventHub | None = None) -> None:
        self.store = store
        self._journal: Journal | None = None
        # Streams of changes (GET /api/events): fed here, as each change is applied.
        self.events = events
        # Override changes read, decide and append across awaits: one at a time.
        self._override_lock = asyncio.Lock()

    @property
    def journal(self) -> Journal:
        """The journal in use (set by :meth:`use_journal` when the engine starts)."""
        if self._journal is None:
            raise RuntimeError("EmbeddedBackend used before its journal was set")
        return self._journal

    def use_journal(self, journal: Journal) -> None:
        """Write every change to ``journal`` from now on."""
        self._journal = journal

    @property
    def healthy(self) -> bool:
        """The journal's health."""
        return self.journal.healthy

    @property
    def change_seq(self) -> int:
        """The seq of the last record applied."""
        return self.store.seq

    async def commit(
        self, *, action: Action, actor: str, source: str, job_id: str, data: dict[str, Any], exclusive: bool = False
    ) -> JobEntry:
        """Append the record, then apply it (see :class:`Backend`). Never raises Fenced: one process owns
        every job, and the service's claim is checked on the event loop. A run request's change (or the
        approval that starts the run) that does not fit the job's request raises ClaimLost before anything
        is written, as the PostgreSQL store does: a record the store would refuse never reaches the journal."""
        if action is Action.RUN_REQUESTED or action in REQUEST_ACTIONS:
            entry = self.store.get(job_id)
            try:
                if entry is None or entry.status is not JobStatus.READY:
                    raise StoreError(f"job {job_id} is not READY")
                next_request(request_of(entry), action, actor=actor, data=data)
            except StoreError as exc:
                raise ClaimLost(str(exc)) from None
        try:
            record = await self.journal.append(action=str(action), actor=actor, source=source, job_id=job_id, data=data)
        except JournalUnavailable as exc:
            log.error("journal_append_failed", action=str(action), job_id=job_id, error=str(exc))
            raise JournalDown("the journal is unavailable, so nothing was changed; try again later") from None
        entry = self.store.apply(record)
        if self.events is not None:
            self.events.publish(seq=record.seq, action=record.action, job=entry.encoded)
        return entry

    async def get(self, job_id: str) -> JobEntry | None:
        """See :class:`Backend`."""
        return self.store.get(job_id)

    async def page(
        self,
        *,
        limit: int,
        status: JobStatus | None,
        type_name: str | None,
        before: JobEntry | None,
        q: str | None = None,
    ) -> tuple[list[bytes], JobEntry | None]:
        """See :class:`Backend` (O(log n + limit); with ``q``, a scan: :meth:`JobStore.page`)."""
        return self.store.page(limit=limit, status=status, type_name=type_name, before=before, q=q)

    async def has_type(self, type_name: str) -> bool:
        """See :class:`Backend`."""
        return self.store.has_type(type_name)

    async def counts(self) -> dict[JobStatus, int]:
        """See :class:`Backend`."""
        return {status: self.store.count(status) for status in JobStatus}

    async def running_of_type(self, type_name: str) -> bool:
        """See :class:`Backend`."""
        return self.store.count(JobStatus.RUNNING, type_name) > 0

    async def open_requests(self) -> list[tuple[str, str]]:
        """See :class:`Backend`."""
        return list(self.store.open_requests().items())

    async def results(self, limit: int) -> list[dict[str, Any]]:
        """See :class:`Backend`."""
        return self.store.results(limit)

    async def engine_logs(self, limit: int) -> list[dict[str, Any]]:
        """See :class:`Backend`."""
        return self.store.engine_logs(limit)

    async def audit(self, query: AuditQuery) -> list[Record]:
        """See :class:`Backend`."""
        return await self.journal.query(query)

    async def override(self) -> Window | None:
        """See :class:`Backend`."""
        return self.store.override

    async def change_override(self, *, action: OverrideAction, actor: str, source: str, decide: Decide) -> Window:
        """See :class:`Backend`: under a lock, decide on the window in memory, append, apply."""
        async with self._override_lock:
            data = decide(self.store.override)
            try:
                record = await self.journal.append(
                    action=str(action), actor=actor, source=source, job_id=None, data=data
                )
            except JournalUnavailable as exc:
                log.error("journal_append_failed", action=str(action), error=str(exc))
                raise JournalDown("the journal is unavailable, so nothing was changed; try again later") from None
            return self.store.apply_override(record)
