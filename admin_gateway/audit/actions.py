"""The audit actions the panel's Action filter offers: every action either journal writes.

The gateway's come from :mod:`admin_gateway.audit.trail`; the engine's are
its journal's action names (``engine_hub.store.actions`` and the SAFE_MODE
override's), listed here by name because the gateway does not import the
engine. The filter itself takes any action name, so a new action is found
before it is listed: :func:`action_choices` also offers the ones on screen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from admin_gateway.audit import trail

#: Gateway actions written through an intent (``<action>_requested``) and an outcome record.
_MUTATIONS: Final = (
    trail.JOB_CREATE,
    trail.JOB_RUN,
    trail.JOB_PLAN,
    trail.JOB_CANCEL,
    trail.JOB_APPROVE,
    trail.JOB_REJECT,
    trail.JOB_WITHDRAW,
    trail.SAFE_MODE_OVERRIDE_REQUEST,
    trail.SAFE_MODE_OVERRIDE_APPROVE,
    trail.SAFE_MODE_OVERRIDE_END,
    trail.AUDIT_EXPORT,
)
#: Every action the gateway's journal holds.
GATEWAY_ACTIONS: Final = (
    trail.LOGIN_SUCCEEDED,
    trail.LOGIN_FAILED,
    trail.LOGOUT,
    trail.SESSION_EXPIRED,
    trail.ACCESS_DENIED,
    trail.CSRF_REFUSED,
    trail.SAFE_MODE_REFUSED,
    *(name for action in _MUTATIONS for name in (trail.requested(action), action)),
)
#: Every action the engine's journal holds (its job actions, then the override window's).
ENGINE_ACTIONS: Final = (
    "job_created",
    "run_requested",
    "job_started",
    "log_truncated",
    "job_finished",
    "cancel_requested",
    "job_interrupted",
    "log_expired",
    "job_planned",
    "run_request_opened",
    "run_request_approved",
    "run_request_rejected",
    "run_request_withdrawn",
    "run_request_expired",
    "run_request_superseded",
    "safe_mode_override_requested",
    "safe_mode_override_approved",
    "safe_mode_override_ended",
    "safe_mode_override_expired",
)


def action_choices(*extra: Iterable[str | None]) -> list[str]:
    """The Action filter's options, sorted: every known action plus ``extra`` (seen on screen, the chosen one)."""
    found = {name for names in extra for name in names if name}
    return sorted({*GATEWAY_ACTIONS, *ENGINE_ACTIONS, *found})
