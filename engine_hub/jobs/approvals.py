"""Run approvals (two-person rule): run requests of the job types that need approval.

:class:`RunRequests` is the part of :class:`engine_hub.jobs.service.JobService`
that opens, approves, rejects, withdraws and expires run requests (what each
record does to a job is :mod:`engine_hub.store.requests`). Changes of one
job's request take turns in this process (a lock per job), and the store
re-checks each under the job row's lock, so across nodes a change that no
longer fits is refused (:class:`ClaimLost`) and is tried again on a fresh
read. The approval that completes a request starts the run through the
service's own claim (:meth:`JobService.start_run`), so at most once holds
as for any RUN. Expired requests are closed by a sweep
(:meth:`RunRequests.expire_requests`), and by any approval, rejection or
withdrawal that finds its request past ``expiresAt`` first. The clock
(``clock``) is injectable: expiry is tested without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import structlog

from engine_hub.errors import Conflict, InvalidField, JournalDown, NotRequester, SelfApproval
from engine_hub.jobs.catalog import JobType
from engine_hub.settings import DEFAULT_RUN_REQUEST_TTL
from engine_hub.store.backend import ClaimLost
from engine_hub.store.embedded import ENGINE_SOURCE, SYSTEM_ACTOR, Action, JobEntry
from engine_hub.store.requests import has_expired, is_open, request_of, same_person
from shared.contract import ErrorCode, JobStatus, format_time, new_job_id, utcnow

if TYPE_CHECKING:
    from engine_hub.jobs.service import JobService

log = structlog.get_logger("engine.approvals")

#: Longest time between two sweeps for expired run requests (seconds); shorter for a short TTL.
REQUEST_SWEEP_SECONDS: Final = 30.0
#: How often an approval is tried again when another node changed the request meanwhile.
APPROVAL_TRIES: Final = 5
#: A plan's SHA-256, as a run request or an approval carries it.
PLAN_SHA256: Final = re.compile(r"[0-9a-f]{64}")


def check_plan_sha256(value: object) -> str | None:
    """Return ``value`` if it is ``None`` or 64 lower-case hex digits, else raise 400 ``invalid_field``."""
    if value is None or (isinstance(value, str) and PLAN_SHA256.fullmatch(value)):
        return value
    raise InvalidField("planSha256 must be the plan's SHA-256: 64 lower-case hex digits")


class _Turn:
    """A per-job lock and how many are using it (it is dropped when nobody is)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class RunRequests:
    """Run requests of one :class:`JobService`: ``ttl`` seconds to be approved, timed by ``clock``.

    Built without side effects; :meth:`start_sweeper` starts the expiry
    sweep, :meth:`close` stops it.
    """

    def __init__(
        self, service: JobService, *, ttl: float = DEFAULT_RUN_REQUEST_TTL, clock: Callable[[], dt.datetime] = utcnow
    ) -> None:
        self._service = service
        #: Seconds a run request waits for its approvals.
        self.ttl = ttl
        #: The time of run requests and their expiry (tests replace it to move time on).
        self.clock = clock
        self._turns: dict[str, _Turn] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def start_sweeper(self) -> None:
        """Start closing expired requests every few seconds (at most :data:`REQUEST_SWEEP_SECONDS`)."""
        self._sweeper = asyncio.create_task(self._sweep_requests(), name="run-request-expiry")

    async def close(self) -> None:
        """Stop the sweep."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    @contextlib.asynccontextmanager
    async def _turn(self, job_id: str) -> AsyncIterator[None]:
        """Hold the job's request lock: changes of one job's run request take turns in this process."""
        turn = self._turns.get(job_id)
        if turn is None:
            turn = self._turns[job_id] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[job_id]

    def _now(self) -> str:
        return format_time(self.clock()) or ""

    async def open(
        self,
        entry: JobEntry,
        job_type: JobType,
        *,
        reason: str | None,
        plan_sha256: str | None,
        actor: str,
        source: str,
    ) -> JobEntry:
        """Open a run request for a READY job of a type that needs approval (``run_request_opened``).

        It expires ``ttl`` seconds from now. An open request
        makes this a 409 ``approval_required`` (one past its expiry is
        closed as expired first, and a new one opened).
        """
        for _ in range(APPROVAL_TRIES):
            async with self._turn(entry.id):
                entry = await self._service.get(entry.id)
                self._service.check_runnable(entry)
                request = request_of(entry)
                moment = self.clock()
                now = format_time(moment) or ""
                if is_open(request):
                    if not has_expired(request, now):
                        missing = request["required"] - len(request["approvals"])
                        raise Conflict(
                            f"this job needs approval: a run request by {request['by']} is waiting for "
                            f"{missing} more approval(s) until {request['expiresAt']}; approve, reject or withdraw it",
                            code=ErrorCode.APPROVAL_REQUIRED,
                        )
                    await self._expire(entry.id, request)
                expires = format_time(moment + dt.timedelta(seconds=self.ttl))
                data = {
                    "requestId": new_job_id(),
                    "reason": reason,
                    "at": now,
                    "expiresAt": expires,
                    "required": job_type.approvers,
                    "planSha256": plan_sha256,
                }
                try:
                    entry = await self._service.record(
                        action=Action.RUN_REQUEST_OPENED, actor=actor, source=source, job_id=entry.id, data=data
                    )
                except ClaimLost:
                    continue  # another node opened one (or ran the job) meanwhile: read again to say which
            log.info("run_request_opened", job_id=entry.id, by=actor, expires_at=expires, required=job_type.approvers)
            return entry
        raise Conflict("the job keeps changing; try again", code=ErrorCode.APPROVAL_REQUIRED)

    async def _pending_request(self, entry: JobEntry) -> Mapping[str, Any]:
        """The job's open run request, or raise: 409 ``already_running`` / 400 ``not_ready`` (the job ran),
        409 ``no_run_request`` (none open, or it expired: then its expiry is recorded first)."""
        self._service.check_runnable(entry)
        request = request_of(entry)
        if not is_open(request):
            state = "" if request is None else f" (the last one was {request['state']})"
            raise Conflict(f"job {entry.id} has no open run request{state}", code=ErrorCode.NO_RUN_REQUEST)
        if has_expired(request, self._now()):
            await self._expire(entry.id, request)
            raise Conflict(
                f"the run request expired at {request['expiresAt']} without its approvals; the job stays READY",
                code=ErrorCode.NO_RUN_REQUEST,
            )
        return request

    async def approve(
        self,
        *,
        job_id: str,
        reason: str | None,
        plan_sha256: str | None,
        actor: str,
        source: str,
        override_id: str | None = None,
    ) -> JobEntry:
        """Approve the job's open run request; the approval that completes it starts the job (at most once).

        Raises 404 ``not_found``, 403 ``self_approval`` (the requester), 409
        ``already_approved``, 409 ``no_run_request`` (none open, or expired),
        409 ``plan_changed`` (``plan_sha256`` differs from the request's: the
        request is closed as superseded), and what :meth:`run` raises when
        the completing approval cannot start the job (nothing is recorded then),
        and 400 ``invalid_field`` when the request was made on a plan and the
        approval names none (an approval binds to the plan its approver saw).
        ``override_id`` (the SAFE_MODE window the approval is made in, checked by
        the caller) goes into the ``run_requested`` record of the start.
        """
        for _ in range(APPROVAL_TRIES):
            async with self._turn(job_id):
                entry = await self._service.get(job_id)
                request = await self._pending_request(entry)
                if same_person(actor, request["by"]):
                    raise SelfApproval("you requested this run: another person must approve it")
                approvals = request["approvals"]
                if any(same_person(a["by"], actor) for a in approvals):
                    raise Conflict(f"{actor} has already approved this run request", code=ErrorCode.ALREADY_APPROVED)
                now = self._now()
                if request["planSha256"] is not None and plan_sha256 is None:
                    # The request was made on a plan: an approval binds to the plan its approver saw.
                    raise InvalidField(
                        "planSha256 is required: this run was requested on a plan; make the plan and approve "
                        "with its sha256 (POST /api/jobs/{id}/plan)"
                    )
                if (
                    plan_sha256 is not None
                    and request["planSha256"] is not None
                    and plan_sha256 != request["planSha256"]
                ):
                    await self._commit_request(
                        Action.RUN_REQUEST_SUPERSEDED,
                        job_id,
                        actor=actor,
                        source=source,
                        data={
                            "requestId": request["id"],
                            "at": now,
                            "reason": "approved plan differs from the requested one",
                            "planSha256": plan_sha256,
                        },
                    )
                    raise Conflict(
                        "the plan you approved is not the plan the run was requested with: the request is closed; "
                        "request the run again with the current plan",
                        code=ErrorCode.PLAN_CHANGED,
                    )
                before = len(approvals)
                try:
                    if before + 1 < request["required"]:
                        data = {"requestId": request["id"], "approvalsBefore": before, "at": now, "reason": reason}
                        return await self._service.record(
                            action=Action.RUN_REQUEST_APPROVED, actor=actor, source=source, job_id=job_id, data=data
                        )
                    data = {
                        "runBy": request["by"],
                        "reason": request["reason"],
                        "requestId": request["id"],
                        "approvalsBefore": before,
                        "approvedAt": now,
                        "approvalReason": reason,
                        "approvers": [*(a["by"] for a in approvals), actor],
                        "planSha256": request["planSha256"],
                    }
                    if override_id:
                        data["overrideId"] = override_id
                    entry = await self._service.start_run(entry, actor=actor, source=source, data=data)
                    log.info("run_request_approved", job_id=job_id, by=actor, requested_by=request["by"], started=True)
                    return entry
                except ClaimLost:
                    continue  # another node changed the request meanwhile: read it again
        raise Conflict("the run request keeps changing; try again", code=ErrorCode.NO_RUN_REQUEST)

    async def reject(self, *, job_id: str, reason: str, actor: str, source: str) -> JobEntry:
        """Close the job's open run request as rejected; the job stays READY.

        Raises 404 ``not_found``, 409 ``no_run_request``, 409 ``already_running`` / 400 ``not_ready``.
        """
        return await self._close(job_id, Action.RUN_REQUEST_REJECTED, reason=reason, actor=actor, source=source)

    async def withdraw(self, *, job_id: str, reason: str | None, actor: str, source: str) -> JobEntry:
        """Close the job's open run request as withdrawn, by its requester only (else 403 ``not_requester``).

        Otherwise raises as :meth:`reject`.
        """
        return await self._close(job_id, Action.RUN_REQUEST_WITHDRAWN, reason=reason, actor=actor, source=source)

    async def _close(self, job_id: str, action: Action, *, reason: str | None, actor: str, source: str) -> JobEntry:
        for _ in range(APPROVAL_TRIES):
            async with self._turn(job_id):
                request = await self._pending_request(await self._service.get(job_id))
                if action is Action.RUN_REQUEST_WITHDRAWN and not same_person(actor, request["by"]):
                    raise NotRequester(f"only {request['by']}, who requested this run, can withdraw the request")
                try:
                    return await self._commit_request(
                        action,
                        job_id,
                        actor=actor,
                        source=source,
                        data={"requestId": request["id"], "at": self._now(), "reason": reason},
                    )
                except ClaimLost:
                    continue
        raise Conflict("the run request keeps changing; try again", code=ErrorCode.NO_RUN_REQUEST)

    async def _commit_request(
        self, action: Action, job_id: str, *, actor: str, source: str, data: dict[str, Any]
    ) -> JobEntry:
        entry = await self._service.record(action=action, actor=actor, source=source, job_id=job_id, data=data)
        log.info(str(action), job_id=job_id, by=actor, request_id=data["requestId"], reason=data.get("reason"))
        return entry

    async def _expire(self, job_id: str, request: Mapping[str, Any]) -> None:
        """Record (actor ``system``) that ``request`` expired; nothing when another node already closed it."""
        with contextlib.suppress(ClaimLost):
            await self._commit_request(
                Action.RUN_REQUEST_EXPIRED,
                job_id,
                actor=SYSTEM_ACTOR,
                source=ENGINE_SOURCE,
                data={
                    "requestId": request["id"],
                    "at": self._now(),
                    "reason": f"not approved by {request['expiresAt']}",
                },
            )

    async def expire_requests(self) -> int:
        """Close every open run request past its ``expiresAt`` (``run_request_expired``); return how many.

        Each is checked again under the job's turn (it may have been approved
        or closed meanwhile); with PostgreSQL the store refuses a second
        expiry of one request, so two nodes sweeping record it once.
        """
        now, expired = self._now(), 0
        for job_id, expires in await self._service.backend.open_requests():
            if not has_expired({"expiresAt": expires}, now):
                continue
            async with self._turn(job_id):
                entry = await self._service.backend.get(job_id)
                request = None if entry is None or entry.status is not JobStatus.READY else request_of(entry)
                if request is not None and is_open(request) and has_expired(request, now):
                    await self._expire(job_id, request)
                    expired += 1
        return expired

    async def _sweep_requests(self) -> None:
        interval = min(REQUEST_SWEEP_SECONDS, max(1.0, self.ttl / 10))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.expire_requests()
            except JournalDown as exc:
                log.warning("run_request_sweep_paused", error=str(exc))
            except Exception:
                log.exception("run_request_sweep_failed")
