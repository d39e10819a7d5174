"""The SAFE_MODE override window (break-glass, issue 15): its journal records and the state they build.

A window is asked for by one person (``safe_mode_override_requested``),
opened by a second one (``safe_mode_override_approved``), and closed either
early by anyone (``safe_mode_override_ended``) or by time: its ``until``
passes (``safe_mode_override_expired``, written by the engine). A request
nobody approves lapses after :data:`REQUEST_TTL_MINUTES` the same way. At
most one window is requested or open at a time.

Every record is a record of the engine's hash chain with ``jobId`` null,
and its ``data`` carries every time the change set (``requestedAt``,
``openedAt``, ``until``…), taken from the engine's clock, so replaying the
records rebuilds the window exactly. :func:`apply_record` is the one fold
of a record onto the window before it, for both stores: the embedded store
applies it as it appends and replays; the PostgreSQL store folds the newest
window's records read back from the chain (:mod:`engine_hub.store.override_pg`).

Time closes a window by itself: :meth:`Window.state_at` compares the stored
``until`` (or the request's ``requestExpiresAt``) with the time of the
check, so a window past its end is closed whether or not its ``expired``
record has been written yet. Times are ``shared.contract.format_time``
text (fixed width, UTC), so comparing them as strings compares times.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final

import attrs

from engine_hub.store.entry import StoreError
from engine_hub.store.requests import same_person
from shared.journal.chain import Record


class OverrideAction(enum.StrEnum):
    """The journal actions of the override window (records with ``jobId`` null)."""

    REQUESTED = "safe_mode_override_requested"
    APPROVED = "safe_mode_override_approved"
    ENDED = "safe_mode_override_ended"
    EXPIRED = "safe_mode_override_expired"


#: Each override action by its journal name.
OVERRIDE_ACTIONS: Final = {a.value: a for a in OverrideAction}


class WindowState(enum.StrEnum):
    """Where a window is: asked for, open (runs allowed under SAFE_MODE), ended early, or closed by time."""

    REQUESTED = "requested"
    OPEN = "open"
    ENDED = "ended"
    EXPIRED = "expired"


#: States in which a window blocks a new request.
ACTIVE: Final = frozenset({WindowState.REQUESTED, WindowState.OPEN})
#: Shortest and longest window, and the default (minutes).
MIN_MINUTES: Final = 1
MAX_MINUTES: Final = 60
DEFAULT_MINUTES: Final = 15
#: How long a request waits for its approval before it lapses (minutes).
REQUEST_TTL_MINUTES: Final = 15


@attrs.frozen(kw_only=True)
class Window:
    """One override window as its records left it (``state`` is the stored one; see :meth:`state_at`)."""

    id: str
    requested_by: str
    reason: str
    minutes: int
    requested_at: str
    request_expires_at: str
    state: WindowState
    approved_by: str | None = None
    opened_at: str | None = None
    until: str | None = None
    ended_by: str | None = None
    ended_at: str | None = None

    def state_at(self, now: str) -> WindowState:
        """The state at time ``now``: an open window past ``until``, or a request past its
        ``requestExpiresAt``, is expired even before its record is written."""
        if self.state is WindowState.OPEN and self.until is not None and self.until <= now:
            return WindowState.EXPIRED
        if self.state is WindowState.REQUESTED and self.request_expires_at <= now:
            return WindowState.EXPIRED
        return self.state

    def is_open_at(self, now: str) -> bool:
        """Whether runs may use this window at ``now``."""
        return self.state_at(now) is WindowState.OPEN

    def to_json(self, now: str | None = None) -> dict[str, Any]:
        """The wire shape (``SafeModeOverride`` in both OpenAPI documents); ``state`` as of ``now`` when given."""
        return {
            "id": self.id,
            "requestedBy": self.requested_by,
            "reason": self.reason,
            "minutes": self.minutes,
            "requestedAt": self.requested_at,
            "requestExpiresAt": self.request_expires_at,
            "state": str(self.state if now is None else self.state_at(now)),
            "approvedBy": self.approved_by,
            "openedAt": self.opened_at,
            "until": self.until,
            "endedBy": self.ended_by,
            "endedAt": self.ended_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Window:
        """The window of :meth:`to_json`'s shape (a snapshot's copy); raises ``KeyError``/``ValueError``."""
        return cls(
            id=str(data["id"]),
            requested_by=str(data["requestedBy"]),
            reason=str(data["reason"]),
            minutes=int(data["minutes"]),
            requested_at=str(data["requestedAt"]),
            request_expires_at=str(data["requestExpiresAt"]),
            state=WindowState(data["state"]),
            approved_by=data.get("approvedBy"),
            opened_at=data.get("openedAt"),
            until=data.get("until"),
            ended_by=data.get("endedBy"),
            ended_at=data.get("endedAt"),
        )


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data[name]
    if type(value) is not str or not value:
        raise StoreError(f"{name} must be a non-empty string")
    return value


def apply_record(current: Window | None, record: Record) -> Window:
    """Return the window after ``record`` (an override action) is applied to ``current`` (the newest window).

    Raises :class:`StoreError` when the record does not fit: a request while
    one is active, a change of another window, an approval by the requester,
    a step out of order. The live path checks all of this before it writes,
    so this means a corrupt journal or a bug.
    """
    action = OVERRIDE_ACTIONS.get(record.action)
    if action is None:
        raise StoreError(f"unknown override action {record.action!r}")
    data = record.data
    try:
        if action is OverrideAction.REQUESTED:
            if current is not None and current.state in ACTIVE:
                raise StoreError(f"{action}: window {current.id} is still {current.state}")
            minutes = data["minutes"]
            if type(minutes) is not int or not MIN_MINUTES <= minutes <= MAX_MINUTES:
                raise StoreError(f"{action}: minutes must be an integer from {MIN_MINUTES} to {MAX_MINUTES}")
            return Window(
                id=_text(data, "windowId"),
                requested_by=record.actor,
                reason=_text(data, "reason"),
                minutes=minutes,
                requested_at=_text(data, "requestedAt"),
                request_expires_at=_text(data, "requestExpiresAt"),
                state=WindowState.REQUESTED,
            )
        window_id = _text(data, "windowId")
        if current is None or current.id != window_id:
            raise StoreError(f"{action}: window {window_id} is not the newest window")
        if current.state not in ACTIVE:
            raise StoreError(f"{action}: window {window_id} is already {current.state}")
        if action is OverrideAction.APPROVED:
            if current.state is not WindowState.REQUESTED:
                raise StoreError(f"{action}: window {window_id} is {current.state}, not requested")
            if same_person(record.actor, current.requested_by):
                raise StoreError(f"{action}: {record.actor} approved their own request")
            return attrs.evolve(
                current,
                state=WindowState.OPEN,
                approved_by=record.actor,
                opened_at=_text(data, "openedAt"),
                until=_text(data, "until"),
            )
        if action is OverrideAction.ENDED:
            return attrs.evolve(
                current, state=WindowState.ENDED, ended_by=record.actor, ended_at=_text(data, "endedAt")
            )
        return attrs.evolve(current, state=WindowState.EXPIRED, ended_at=_text(data, "expiredAt"))
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{action}: malformed record data: {exc!r}") from None


def fold(records: list[Record]) -> Window | None:
    """The newest window built from ``records`` (override records, oldest first), or ``None``."""
    window: Window | None = None
    for record in records:
        window = apply_record(window, record)
    return window
