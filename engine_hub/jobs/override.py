"""Break-glass for SAFE_MODE (issue 15): the override window's rules, on top of the store's records.

SAFE_MODE is the gateways' setting; the engine keeps the one thing all of
them must agree on, the override window (:mod:`engine_hub.store.override`),
in its store and hash chain. :class:`OverrideService` enforces:

- **one at a time**: a request while a window is requested or open is 409
  ``override_active``;
- **four eyes**: the window opens only when a different actor approves it
  (403 ``self_approval`` for the requester); it opens at that moment for the
  requested minutes;
- **time closes it**: every check compares ``until`` with :attr:`clock`,
  so a run after the end is refused even if nobody looked
  (:meth:`require_open`: 409 ``override_closed``). The ``expired`` record
  is written once, by :meth:`settle`: lazily before each change, and by the
  periodic sweep (:meth:`run_sweep`) of every engine process; the store's
  one-step change (:meth:`engine_hub.store.backend.Backend.change_override`)
  makes it conditional, so two nodes never both write it;
- a request nobody approves lapses after
  :data:`engine_hub.store.override.REQUEST_TTL_MINUTES` the same way;
- anyone may end a window early, or withdraw a pending request (``ended``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any, Final

import structlog
from aiohttp import web

from engine_hub.errors import Conflict, Forbidden, JournalDown, NotFound
from engine_hub.store.backend import Backend
from engine_hub.store.embedded import SYSTEM_ACTOR
from engine_hub.store.override import (
    ACTIVE,
    REQUEST_TTL_MINUTES,
    OverrideAction,
    Window,
    WindowState,
)
from engine_hub.store.requests import same_person
from shared.contract import ErrorCode, format_time

log = structlog.get_logger("engine.override")

#: ``source`` of the records the engine writes on its own (expiries).
ENGINE_SOURCE: Final = "engine"


class _NothingToDo(Exception):
    """A sweep found, under the lock, that the window was already closed (by another node or request)."""


class OverrideService:
    """The override window's commands and checks, over a store; times from ``clock`` (epoch seconds)."""

    def __init__(self, *, backend: Backend, clock: Callable[[], float], sweep_every: float) -> None:
        self.backend = backend
        self.clock = clock
        self.sweep_every = sweep_every

    def now(self) -> str:
        """The time of a check or a change, as record text."""
        return self._text(self.clock())

    @staticmethod
    def _text(epoch: float) -> str:
        return format_time(dt.datetime.fromtimestamp(epoch, dt.UTC)) or ""

    async def current(self) -> Window | None:
        """The window that is requested or open now, or ``None`` (one past its end counts as closed)."""
        window = await self.backend.override()
        if window is None or window.state_at(self.now()) not in ACTIVE:
            return None
        return window

    async def require_open(self, window_id: str) -> None:
        """Raise 409 ``override_closed`` unless ``window_id`` names the window open at this moment."""
        window = await self.backend.override()
        now = self.now()
        if window is None or window.id != window_id or not window.is_open_at(now):
            state = "unknown" if window is None or window.id != window_id else str(window.state_at(now))
            raise Conflict(
                f"SAFE_MODE override {window_id!r} is not open (it is {state}); ask for a new window",
                code=ErrorCode.OVERRIDE_CLOSED,
            )

    async def request(self, *, reason: str, minutes: int, actor: str, source: str) -> Window:
        """Ask for a window of ``minutes``; it opens only when another actor approves it.

        Raises 409 ``override_active`` while a window is requested or open.
        """
        await self.settle()
        epoch = self.clock()
        now = self._text(epoch)

        def decide(current: Window | None) -> dict[str, Any]:
            if current is not None and current.state in ACTIVE:
                raise Conflict(
                    f"a SAFE_MODE override window is already {current.state_at(now)} "
                    f"(requested by {current.requested_by}); end it first",
                    code=ErrorCode.OVERRIDE_ACTIVE,
                )
            return {
                "windowId": str(uuid.uuid4()),
                "reason": reason,
                "minutes": minutes,
                "requestedAt": now,
                "requestExpiresAt": self._text(epoch + REQUEST_TTL_MINUTES * 60),
            }

        window = await self.backend.change_override(
            action=OverrideAction.REQUESTED, actor=actor, source=source, decide=decide
        )
        log.warning("safe_mode_override_requested", window_id=window.id, by=actor, minutes=minutes, reason=reason)
        return window

    async def approve(self, *, window_id: str, actor: str, source: str) -> Window:
        """Open the requested window ``window_id`` now, for its minutes; ``actor`` must not be its requester.

        Raises 404 ``not_found`` (no such pending or open window), 409
        ``override_closed`` (not pending any more), 403 ``self_approval``.
        """
        await self.settle()
        epoch = self.clock()
        now = self._text(epoch)

        def decide(current: Window | None) -> dict[str, Any]:
            window = self._named(current, window_id)
            if window.state is not WindowState.REQUESTED or window.state_at(now) is not WindowState.REQUESTED:
                raise Conflict(
                    f"SAFE_MODE override {window_id} is {window.state_at(now)}, not waiting for approval",
                    code=ErrorCode.OVERRIDE_CLOSED,
                )
            if same_person(actor, window.requested_by):
                raise Forbidden(
                    f"{actor} asked for this SAFE_MODE override and cannot approve it: another person must",
                    code=ErrorCode.SELF_APPROVAL,
                )
            return {"windowId": window.id, "openedAt": now, "until": self._text(epoch + window.minutes * 60)}

        window = await self.backend.change_override(
            action=OverrideAction.APPROVED, actor=actor, source=source, decide=decide
        )
        log.warning(
            "safe_mode_override_opened",
            window_id=window.id,
            requested_by=window.requested_by,
            approved_by=actor,
            until=window.until,
        )
        return window

    async def end(self, *, window_id: str, actor: str, source: str) -> Window:
        """End the open window ``window_id`` now, or withdraw it while it waits for approval (anyone may).

        Raises 404 ``not_found``, 409 ``override_closed`` (already ended or expired).
        """
        await self.settle()
        now = self.now()

        def decide(current: Window | None) -> dict[str, Any]:
            window = self._named(current, window_id)
            if window.state_at(now) not in ACTIVE:
                raise Conflict(
                    f"SAFE_MODE override {window_id} is already {window.state_at(now)}",
                    code=ErrorCode.OVERRIDE_CLOSED,
                )
            return {"windowId": window.id, "endedAt": now}

        window = await self.backend.change_override(
            action=OverrideAction.ENDED, actor=actor, source=source, decide=decide
        )
        log.warning("safe_mode_override_ended", window_id=window.id, by=actor)
        return window

    @staticmethod
    def _named(current: Window | None, window_id: str) -> Window:
        if current is None or current.id != window_id:
            raise NotFound(f"no SAFE_MODE override window {window_id!r} is pending or open")
        return current

    async def settle(self) -> Window | None:
        """Write the ``expired`` record of a window past its end, once; return the window it closed, if any.

        Conditional: decided again under the store's lock, so of several
        callers (requests, sweeps on several nodes) exactly one writes it.
        """
        window = await self.backend.override()
        now = self.now()
        if window is None or window.state not in ACTIVE or window.state_at(now) in ACTIVE:
            return None

        def decide(current: Window | None) -> dict[str, Any]:
            if current is None or current.id != window.id or current.state not in ACTIVE:
                raise _NothingToDo
            opened = current.state is WindowState.OPEN
            return {
                "windowId": current.id,
                "expiredAt": current.until if opened else current.request_expires_at,
                "phase": "window" if opened else "request",
            }

        try:
            closed = await self.backend.change_override(
                action=OverrideAction.EXPIRED, actor=SYSTEM_ACTOR, source=ENGINE_SOURCE, decide=decide
            )
        except _NothingToDo:
            return None
        log.warning("safe_mode_override_expired", window_id=closed.id, at=closed.ended_at)
        return closed

    async def run_sweep(self) -> None:
        """Every ``sweep_every`` seconds, :meth:`settle`, forever (cancel to stop); a store that is down is retried."""
        while True:
            await asyncio.sleep(self.sweep_every)
            try:
                await self.settle()
            except JournalDown as exc:
                log.error("override_sweep_failed", error=exc.message)


#: The app's override service (set by ``create_app``).
OVERRIDES: Final = web.AppKey("overrides", OverrideService)
