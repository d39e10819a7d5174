"""What the engine does with jobs: create, run at most once, cancel, recover.

:class:`JobService` is the only writer of the store, whichever it is
(:class:`engine_hub.store.backend.Backend`: embedded or PostgreSQL). Each
change is made durable with its audit record by :meth:`Backend.commit`; if
the store cannot take it, nothing changes and the caller gets a 503.

A run request is checked and *claimed* locally with no suspension between
the check of the job's state and the claim (with the embedded store, reads
never suspend), so of any number of concurrent requests for one job in this
process exactly one gets past the claim; the others see the claim (or the
RUNNING status) and get a 409. The claim is released once the
``run_requested`` change is made (the job is then RUNNING) or failed (the
job stays READY). Across nodes, the store's own claim decides
(:class:`ClaimLost` for every loser).

A RUN of a type that needs approval opens a run request instead
(:attr:`JobService.requests`, :mod:`engine_hub.jobs.approvals`); the approval
that completes it starts the run through :meth:`JobService.start_run`, the
same claim as any RUN.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final, TypeVar

import attrs
import structlog
from aiohttp import web

from engine_hub.errors import (
    Conflict,
    InvalidParam,
    JournalDown,
    NodeNotReady,
    NotFound,
    NotReady,
    TooManyPlans,
    UnknownType,
)
from engine_hub.jobs.approvals import RunRequests
from engine_hub.jobs.catalog import Catalog, CatalogError, JobType
from engine_hub.metrics import Metrics
from engine_hub.run.logs import LogStore
from engine_hub.run.runner import PlanOutcome, Runner
from engine_hub.settings import DEFAULT_RUN_REQUEST_TTL
from engine_hub.store.backend import Backend, ClaimLost, EmbeddedBackend, Fenced
from engine_hub.store.embedded import ENGINE_SOURCE, SYSTEM_ACTOR, Action, JobEntry
from engine_hub.store.requests import is_open, request_of
from shared.contract import ErrorCode, HistoryEntry, Job, JobStatus, format_time, new_job_id, utcnow
from shared.journal.chain import Record

log = structlog.get_logger("engine.service")
T = TypeVar("T")

#: Error of a job found RUNNING when the engine starts: its process died with the old engine.
INTERRUPTED_ERROR: Final = "interrupted: engine restarted"
#: How long a finished run keeps retrying to journal its outcome while the journal is down.
FINISH_RETRY_MAX_DELAY: Final = 5.0
#: Plans one engine runs at once; one more is refused (429 ``throttled``) rather than queued, so a
#: burst of plans can neither pile up processes nor keep a person waiting past the plan's timeout.
MAX_CONCURRENT_PLANS: Final = 4
#: ``Retry-After`` of that refusal, in seconds.
PLAN_RETRY_AFTER: Final = 5


@attrs.frozen(kw_only=True)
class Plan:
    """The answer to a plan: what it printed and how it ended, with the SHA-256 of the exact output bytes."""

    job_id: str
    outcome: PlanOutcome
    sha256: str
    at: str

    def to_json(self) -> dict[str, Any]:
        """The body of ``POST /api/jobs/{id}/plan``: the output decoded as UTF-8 (bad bytes replaced)."""
        outcome = self.outcome
        return {
            "jobId": self.job_id,
            "output": outcome.output.decode("utf-8", errors="replace"),
            "sha256": self.sha256,
            "exitCode": outcome.exit_code,
            "truncated": outcome.truncated,
            "timedOut": outcome.timed_out,
            "error": outcome.error,
            "at": self.at,
        }


class JobService:
    """Creates, runs and cancels jobs; owns the run tasks.

    Built without side effects; :meth:`start` gets the catalog (and, for the
    embedded store, replays the journal), :meth:`close` stops every run.
    """

    def __init__(
        self,
        *,
        backend: Backend,
        logs: LogStore,
        metrics: Metrics,
        runner: Runner,
        run_request_ttl: float = DEFAULT_RUN_REQUEST_TTL,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.backend = backend
        #: Run requests of the types that need approval (two-person rule).
        self.requests = RunRequests(self, ttl=run_request_ttl, clock=clock)
        self.logs = logs
        self.metrics = metrics
        self._runner = runner
        self._catalog: Catalog | None = None
        self._cancels_delivered: set[str] = set()
        self._claims: set[str] = set()
        self._claimed_types: dict[str, int] = {}
        self._pending_cancels: dict[str, str] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._plans = 0  # plans running now

    # -- lifecycle ---------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        """The catalog in use (only after :meth:`start`)."""
        if self._catalog is None:
            raise RuntimeError("JobService used before start()")
        return self._catalog

    async def start(self, *, catalog: Catalog, replay: Iterable[Record] = ()) -> None:
        """Take the catalog; with the embedded store, replay ``replay`` into it, then fail every job left RUNNING.

        A job RUNNING in the journal was running when the previous engine
        stopped; its process is gone with it (runs never outlive the engine),
        so it becomes FAILED with actor ``system``, and a torn last line its
        log may end with is cut off. Nothing is ever run here. (With
        PostgreSQL, other nodes' jobs run on: a lost node's jobs are failed by
        the sweep, :mod:`engine_hub.store.nodes`.)
        """
        self._catalog = catalog
        backend = self.backend
        if not isinstance(backend, EmbeddedBackend):
            self.requests.start_sweeper()
            return
        store = backend.store
        # An empty replay is skipped: a bulk replay rebuilds every index, even for no records.
        count = store.replay(replay) if replay else 0
        interrupted = store.running_job_ids()
        for job_id in interrupted:
            # Raises JournalDown if the journal cannot take it: the engine then does not start.
            await self._commit(
                action=Action.JOB_INTERRUPTED,
                actor=SYSTEM_ACTOR,
                source=ENGINE_SOURCE,
                job_id=job_id,
                data={"status": str(JobStatus.FAILED), "error": INTERRUPTED_ERROR},
            )
            log.warning("job_interrupted", job_id=job_id, error=INTERRUPTED_ERROR)
            self.logs.repair(job_id)  # the crash may have cut its log mid-line
        log.info("store_recovered", records=count, jobs=len(store), interrupted=len(interrupted))
        self.requests.start_sweeper()

    async def close(self) -> None:
        """Stop every run (their process groups are killed) and wait for their outcomes to be recorded."""
        await self.requests.close()
        await self._runner.shutdown()
        tasks = list(self._tasks.values()) + list(self._background)
        if tasks:
            # A finish still waiting for a failed journal is given up after this: the job stays
            # RUNNING in the journal and the next start records it as interrupted.
            _, pending = await asyncio.wait(tasks, timeout=FINISH_RETRY_MAX_DELAY * 2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.logs.close()

    # -- commands ----------------------------------------------------------------

    async def create(
        self, *, type_name: str, name: str | None, params: object, actor: str, source: str, copy_of: str | None = None
    ) -> JobEntry:
        """Create a READY job of a catalog type with validated params (defaults filled in).

        ``copy_of`` names the finished job this one runs again (:mod:`engine_hub.jobs.copies` checks it).

        Raises 400 ``unknown_type`` / ``invalid_param`` saying what is allowed,
        503 ``journal_unavailable`` when the journal refuses the record.
        """
        job_type = self.job_type(type_name)
        try:
            clean = job_type.validate_params(params)
        except CatalogError as exc:
            raise InvalidParam(str(exc)) from None
        now = utcnow()
        job = Job(
            id=new_job_id(),
            type=job_type.name,
            name=name or job_type.name,
            params=clean,
            status=JobStatus.READY,
            created_at=now,
            created_by=actor,
            history=(HistoryEntry(status=JobStatus.READY, at=now, by=actor, reason=None),),
            copy_of=copy_of,
        )
        entry = await self._commit(
            action=Action.JOB_CREATED, actor=actor, source=source, job_id=job.id, data=job.to_json()
        )
        self.metrics.jobs_created += 1
        return entry

    async def expire_log(self, *, job_id: str, data: dict[str, Any]) -> JobEntry:
        """Journal (actor ``system``) that log retention deletes a finished job's output; the caller then deletes it.

        Raises 503 ``journal_unavailable`` when the journal refuses the record
        (see :mod:`engine_hub.run.log_retention`).
        """
        return await self._commit(
            action=Action.LOG_EXPIRED, actor=SYSTEM_ACTOR, source=ENGINE_SOURCE, job_id=job_id, data=data
        )

    def job_type(self, type_name: str) -> JobType:
        """Return a catalog type or raise 400 ``unknown_type`` listing the allowed ones."""
        job_type = self.catalog.get(type_name)
        if job_type is None:
            allowed = ", ".join(sorted(self.catalog.types))
            raise UnknownType(f"unknown job type {type_name!r}; allowed types: {allowed}")
        return job_type

    async def run(
        self,
        *,
        job_id: str,
        reason: str | None,
        actor: str,
        source: str,
        plan_sha256: str | None = None,
        override_id: str | None = None,
    ) -> JobEntry:
        """Move a READY job to RUNNING and start its process: at most once per job, ever.

        For a type that needs approval it starts nothing: it opens a run
        request (:meth:`engine_hub.jobs.approvals.RunRequests.open`).
        ``override_id`` (the SAFE_MODE override window the run is made in,
        checked by the caller) is recorded in the ``run_requested`` record.
        Raises 404 ``not_found``, 409
        ``already_running`` (RUNNING, or another request is starting it),
        409 ``type_busy`` (exclusive type has a run), 409
        ``approval_required`` (a request is already waiting for approval),
        400 ``not_ready`` (DONE/FAILED), 503 ``journal_unavailable`` /
        ``store_unavailable``, 503 ``node_not_ready`` (this node may not
        claim right now: it is re-registering with the store).
        """
        entry = await self.get(job_id)
        job_type = self.catalog.get(entry.type)
        if job_type is not None and job_type.needs_approval:
            return await self.requests.open(
                entry, job_type, reason=reason, plan_sha256=plan_sha256, actor=actor, source=source
            )
        data: dict[str, Any] = {"runBy": actor, "reason": reason}
        if override_id:
            data["overrideId"] = override_id
        return await self.start_run(entry, actor=actor, source=source, data=data)

    async def start_run(self, entry: JobEntry, *, actor: str, source: str, data: dict[str, Any]) -> JobEntry:
        """Claim ``entry``'s run and record ``run_requested`` with ``data``; then start its process.

        ``data`` names the run request whose approval this is (``requestId``)
        for a type that needs approval: without it such a job is never
        started (409 ``approval_required``), whatever path got here. Raises
        :class:`ClaimLost` when that request changed meanwhile (the caller
        reads again).
        """
        job_id = entry.id
        job_type = self.catalog.get(entry.type)
        if data.get("requestId") is None and is_open(request_of(entry)):
            # A request opened while the type needed approval (the catalog changed since): only its approval starts it.
            raise Conflict(
                "this job has an open run request: it starts only when the request is approved "
                "(or reject or withdraw the request first)",
                code=ErrorCode.APPROVAL_REQUIRED,
            )
        if job_type is not None and job_type.needs_approval and data.get("requestId") is None:
            raise Conflict(
                f"job type {entry.type!r} needs approval: a run must be requested and approved by "
                f"{job_type.approvers} other person(s)",
                code=ErrorCode.APPROVAL_REQUIRED,
            )
        # With the embedded store these awaits never suspend: check and claim stay one step.
        busy = job_type is not None and job_type.exclusive and await self.backend.running_of_type(entry.type)
        job_type = self._claim(entry, busy=busy)

        def start(entry: JobEntry) -> None:
            self.metrics.runs_started += 1
            params = entry.job.params
            self._tasks[job_id] = asyncio.create_task(self._execute(job_id, params, job_type), name=f"run-{job_id}")

        try:
            return await self._commit(
                action=Action.RUN_REQUESTED,
                actor=actor,
                source=source,
                job_id=job_id,
                data=data,
                exclusive=job_type.exclusive,
                then=start,
                finally_=lambda: self._release(entry.id, entry.type),
            )
        except ClaimLost:
            # Another node (or request) won, the type got busy, or this node may not claim: say which.
            fresh = await self.get(job_id)
            busy = job_type.exclusive and await self.backend.running_of_type(entry.type)
            self._claim(fresh, busy=busy)  # raises the loser's 409 / 400
            self._release(fresh.id, fresh.type)
            if data.get("requestId") is not None and request_of(fresh) != request_of(entry):
                raise  # the request changed on another node: the approval is tried again
            raise NodeNotReady(
                "this engine node cannot start runs right now (it is re-registering with the job store); "
                "nothing was changed, try again"
            ) from None
        finally:
            # A cancel the feed delivered while this claim was pending belongs to no run here if the
            # claim failed; one for a run this node does have (another request's) stays.
            if job_id not in self._tasks:
                self._pending_cancels.pop(job_id, None)
                self._cancels_delivered.discard(job_id)

    async def plan(self, *, job_id: str, actor: str, source: str) -> Plan:
        """Run the plan (dry run) of a READY job with its params and return what it printed; the job does not change.

        The plan and its ``job_planned`` record run in a task of their own, so a
        client that hangs up neither kills the plan half-way nor leaves it
        unrecorded. Raises 404 ``not_found``, 400 ``unknown_type`` (the type
        left the catalog), 409 ``no_plan`` (the type declares none), 409
        ``not_ready`` (the job is not READY), 429 ``throttled`` (already
        :data:`MAX_CONCURRENT_PLANS` plans running), 503 ``journal_unavailable``
        (the journal cannot record it: then no plan runs, or, if the journal
        failed meanwhile, no output is given).
        """
        entry = await self.get(job_id)
        job_type = self.catalog.get(entry.type)
        if job_type is None:
            raise UnknownType(f"job type {entry.type!r} is no longer in the catalog, so this job has no plan")
        if not job_type.plan:
            raise Conflict(f"job type {entry.type!r} declares no plan", code=ErrorCode.NO_PLAN)
        if entry.status is not JobStatus.READY:
            raise Conflict(f"job is {entry.status}: only a READY job has a plan to show", code=ErrorCode.NOT_READY)
        if self._plans >= MAX_CONCURRENT_PLANS:
            raise TooManyPlans(
                f"{MAX_CONCURRENT_PLANS} plans are running already; try again shortly",
                headers={"Retry-After": str(PLAN_RETRY_AFTER)},
            )
        if not self.backend.healthy:
            # Checked first: a plan whose record cannot be written is a process nobody could account for.
            raise JournalDown("the journal is unavailable, so no plan was run; try again later")
        self._plans += 1
        task = self._spawn(self._plan(entry, job_type, actor=actor, source=source))
        return await asyncio.shield(task)

    async def _plan(self, entry: JobEntry, job_type: JobType, *, actor: str, source: str) -> Plan:
        try:
            outcome = await self._runner.plan(job_id=entry.id, job_type=job_type, params=entry.job.params)
        finally:
            self._plans -= 1
        digest = hashlib.sha256(outcome.output).hexdigest()
        data = {
            "sha256": digest,
            "bytes": len(outcome.output),
            "exitCode": outcome.exit_code,
            "truncated": outcome.truncated,
            "timedOut": outcome.timed_out,
            "error": outcome.error,
        }
        # The output itself stays out of the journal (it can be large); its hash binds it.
        await self._commit(action=Action.JOB_PLANNED, actor=actor, source=source, job_id=entry.id, data=data)
        return Plan(job_id=entry.id, outcome=outcome, sha256=digest, at=format_time(utcnow()) or "")

    def check_runnable(self, entry: JobEntry) -> None:
        """Raise 409 ``already_running`` (RUNNING, or being started here) or 400 ``not_ready`` (it ran)."""
        # No await in here: part of the claim's atomic step.
        if entry.status is JobStatus.RUNNING or entry.id in self._claims:
            raise Conflict("job is already running", code=ErrorCode.ALREADY_RUNNING)
        if entry.status is not JobStatus.READY:
            raise NotReady(f"job is not ready to run: it is {entry.status} and a job runs at most once")

    def _claim(self, entry: JobEntry, *, busy: bool) -> JobType:
        # No await in here: check and claim form one atomic step on the event loop.
        self.check_runnable(entry)
        job_type = self.catalog.get(entry.type)
        if job_type is None:
            raise UnknownType(f"job type {entry.type!r} is no longer in the catalog, so this job cannot run")
        if job_type.exclusive and (busy or self._claimed_types.get(entry.type)):
            raise Conflict(
                f"job type {entry.type!r} is exclusive and already has a running job", code=ErrorCode.TYPE_BUSY
            )
        self._claims.add(entry.id)
        self._claimed_types[entry.type] = self._claimed_types.get(entry.type, 0) + 1
        return job_type

    def _release(self, job_id: str, type_name: str) -> None:
        self._claims.discard(job_id)
        left = self._claimed_types[type_name] - 1
        if left:
            self._claimed_types[type_name] = left
        else:
            del self._claimed_types[type_name]

    async def cancel(self, *, job_id: str, actor: str, source: str) -> JobEntry:
        """Ask a RUNNING job's process group to stop; its run then ends FAILED "cancelled by <actor>".

        Raises 404 ``not_found``, 409 ``not_running`` (READY), 400
        ``not_ready`` (DONE/FAILED), 503 ``journal_unavailable``.
        """
        self._check_cancellable(await self.get(job_id))
        entry = await self._commit(action=Action.CANCEL_REQUESTED, actor=actor, source=source, job_id=job_id, data={})
        if entry.status is JobStatus.RUNNING and job_id in self._tasks:
            self.deliver_cancel(job_id, entry.cancel_requested_by or actor)
        # Run by another node: that node sees the request in the store (engine_hub.jobs.cluster).
        return entry

    def deliver_cancel(self, job_id: str, by: str) -> None:
        """Stop this node's run of ``job_id`` for ``by`` (once; later calls do nothing).

        If the run task has not handed the job to the runner yet, the cancel is
        delivered when it does.
        """
        # A claimed job gets its run task only once the claim's commit returns: a cancel from the
        # change feed may come first (another node recorded it meanwhile), so it waits as pending.
        if job_id in self._cancels_delivered or (job_id not in self._tasks and job_id not in self._claims):
            return
        self._cancels_delivered.add(job_id)
        if not self._runner.cancel(job_id, by=by):
            self._pending_cancels[job_id] = by

    def running_here(self) -> list[str]:
        """Ids of the jobs whose run this process owns (started and not yet recorded as ended)."""
        return list(self._tasks)

    def kill_runs(self, *, by: str) -> None:
        """Stop every run of this process now (a fenced node: their outcomes will be refused anyway)."""
        for job_id in list(self._tasks):
            self._cancels_delivered.add(job_id)
            if not self._runner.cancel(job_id, by=by):
                self._pending_cancels[job_id] = by

    @staticmethod
    def _check_cancellable(entry: JobEntry) -> None:
        if entry.status is JobStatus.READY:
            raise Conflict(
                "job is not running (READY); only a RUNNING job can be cancelled", code=ErrorCode.NOT_RUNNING
            )
        if entry.status is not JobStatus.RUNNING:
            raise NotReady(f"job has already finished ({entry.status}); there is nothing to cancel")

    async def record(self, *, action: Action, actor: str, source: str, job_id: str, data: dict[str, Any]) -> JobEntry:
        """Make one change that starts nothing, with its audit record (see :meth:`_commit`)."""
        return await self._commit(action=action, actor=actor, source=source, job_id=job_id, data=data)

    async def get(self, job_id: str) -> JobEntry:
        """Return a job's entry or raise 404 ``not_found`` (503 when the store is unavailable)."""
        entry = await self.backend.get(job_id)
        if entry is None:
            raise NotFound(f"job {job_id!r} not found")
        return entry

    # -- internals ---------------------------------------------------------------

    async def _commit(
        self,
        *,
        action: Action,
        actor: str,
        source: str,
        job_id: str,
        data: dict[str, Any],
        exclusive: bool = False,
        then: Callable[[JobEntry], None] | None = None,
        finally_: Callable[[], None] | None = None,
    ) -> JobEntry:
        """Make one change with its audit record (:meth:`Backend.commit`), then ``then(entry)``.

        The change, ``then(entry)`` and ``finally_()`` run in a shielded
        task, so a caller cancelled mid-way (a client hanging up) can never
        leave a change made whose consequence (a started run) is not.
        """

        async def write() -> JobEntry:
            try:
                entry = await self.backend.commit(
                    action=action, actor=actor, source=source, job_id=job_id, data=data, exclusive=exclusive
                )
                if then is not None:
                    then(entry)
                return entry
            finally:
                if finally_ is not None:
                    finally_()

        task = asyncio.ensure_future(write())
        # Retrieve the outcome even if nobody awaits it any more (cancelled caller).
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(task)

    async def _execute(self, job_id: str, params: dict[str, Any], job_type: JobType) -> None:
        started: list[asyncio.Task[None]] = []

        def on_started(pid: int) -> None:
            started.append(asyncio.create_task(self._best_effort(Action.JOB_STARTED, job_id, {"pid": pid})))
            by = self._pending_cancels.pop(job_id, None)
            if by is not None:
                self._runner.cancel(job_id, by=by)

        def on_line(stream: str, text: str) -> None:
            if self.logs.append(job_id, stream, text):
                self._spawn(self._best_effort(Action.LOG_TRUNCATED, job_id, {"reason": self.logs.cap_reason}))

        try:
            outcome = await self._runner.run(
                job_id=job_id, job_type=job_type, params=params, on_line=on_line, on_started=on_started
            )
            status, exit_code, error = outcome.status, outcome.exit_code, outcome.error
        except Exception:
            log.exception("run_crashed", job_id=job_id)
            status, exit_code, error = JobStatus.FAILED, None, "the engine failed while running the job"
        finally:
            self._pending_cancels.pop(job_id, None)
        for task in started:
            await task  # job_started is journaled before job_finished
        actor = SYSTEM_ACTOR
        if error is not None and error.startswith("cancelled by "):
            canceller = error.removeprefix("cancelled by ")
            # The runner names whoever stopped it; only a user's recorded cancel makes them the actor.
            with contextlib.suppress(JournalDown):
                entry = await self.backend.get(job_id)
                if entry is not None and entry.cancel_requested_by == canceller:
                    actor = canceller
        data = {"status": str(status), "exitCode": exit_code, "error": error}
        await self.logs.finish(job_id)  # the log is complete on disk before the job is seen as ended
        await self._record_finish(job_id, actor, data)
        self._tasks.pop(job_id, None)
        self._cancels_delivered.discard(job_id)
        self._pending_cancels.pop(job_id, None)  # a cancel that arrived while the finish was retried
        if status is JobStatus.DONE:
            self.metrics.runs_finished += 1
        else:
            self.metrics.runs_failed += 1

    async def _record_finish(self, job_id: str, actor: str, data: dict[str, Any]) -> None:
        # The process has ended; its outcome must reach the journal. Keep trying while the
        # journal is down (the job stays RUNNING meanwhile; after a restart it is interrupted).
        delay = 0.1
        while True:
            try:
                await self._commit(
                    action=Action.JOB_FINISHED, actor=actor, source=ENGINE_SOURCE, job_id=job_id, data=data
                )
                return
            except Fenced as exc:
                # This node lost the run (it was judged lost and swept): its outcome is not the truth.
                log.error("finish_rejected_fenced", job_id=job_id, status=data["status"], error=str(exc))
                return
            except JournalDown:
                log.error("job_finish_not_recorded", job_id=job_id, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, FINISH_RETRY_MAX_DELAY)

    async def _best_effort(self, action: Action, job_id: str, data: dict[str, Any]) -> None:
        # Facts that do not change status (pid, truncation): losing one must not break a run.
        with contextlib.suppress(JournalDown, Fenced):
            await self._commit(action=action, actor=SYSTEM_ACTOR, source=ENGINE_SOURCE, job_id=job_id, data=data)

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        # Retrieve the outcome even if nobody awaits it (a plan whose client hung up).
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task


#: The app's job service (set by ``create_app``).
SERVICE: Final = web.AppKey("service", JobService)
