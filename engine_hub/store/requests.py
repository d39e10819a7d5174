"""Run requests (two-person rule): what each record does to a job's ``runRequest``, for both stores.

A job whose type declares ``approval = "required"`` is not started by a RUN:
the RUN opens a *run request* (``run_request_opened``), other people approve
it (``run_request_approved``) and the approval that reaches the type's
``approvers`` count starts the job: that approval *is* the ``run_requested``
record (its ``data`` carries ``requestId``, the approval and every approver),
so the approval and the claim of the run are one change, durable together or
not at all. A request is otherwise closed by ``run_request_rejected``,
``run_request_withdrawn``, ``run_request_expired`` or
``run_request_superseded`` (an approval bound to another plan); the job stays
READY.

:func:`next_request` is the one function that turns such a record into the
job's new ``runRequest`` JSON: the embedded store applies it to its wire
JSON (live and in replay), the PostgreSQL store under the job row's lock. It
refuses (:class:`StoreError`) a record that does not fit: a second open
request, a request id that is not the open one, the requester or a repeated
approver approving, an approval count that moved since the service read it
(``approvalsBefore``: a concurrent approval won; the service reads again).
The job service checks all of this before it writes, with error codes a
client can act on; this is the store's own guard.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any, Final, TypeGuard

from engine_hub.store.actions import Action
from engine_hub.store.entry import JobEntry, StoreError
from shared.contract import parse_time

#: The states of a run request (``shared.contract.RUN_REQUEST_STATES``) that are not closing ones.
OPEN: Final = "open"
APPROVED: Final = "approved"

#: The state a closing action leaves the request in.
CLOSING: Final = {
    Action.RUN_REQUEST_REJECTED: "rejected",
    Action.RUN_REQUEST_WITHDRAWN: "withdrawn",
    Action.RUN_REQUEST_EXPIRED: "expired",
    Action.RUN_REQUEST_SUPERSEDED: "superseded",
}


def is_open(request: Mapping[str, Any] | None) -> TypeGuard[Mapping[str, Any]]:
    """Whether ``request`` (a job's ``runRequest``, or ``None``) is open."""
    return request is not None and request.get("state") == OPEN


def same_person(one: str, other: str) -> bool:
    """Whether two actor names name one person for the two-person rule: equal once NFKC-normalised and
    case-folded (``Alice`` and ``alice``; the gateway never lets two users take such names)."""
    return unicodedata.normalize("NFKC", one).casefold() == unicodedata.normalize("NFKC", other).casefold()


def request_of(entry: JobEntry) -> dict[str, Any] | None:
    """The job's latest run request (its wire ``runRequest``), or ``None``."""
    if b'"runRequest":{' not in entry.encoded:
        return None  # most jobs never had one: no parse
    request: dict[str, Any] | None = entry.wire().get("runRequest")
    return request


def has_expired(request: Mapping[str, Any], now: str) -> bool:
    """Whether ``request``'s ``expiresAt`` is at or before ``now`` (RFC 3339 text)."""
    expires, moment = parse_time(str(request["expiresAt"])), parse_time(now)
    return expires is not None and moment is not None and expires <= moment


def _text(data: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if type(value) is not str:
        raise StoreError(f"{name} must be a string")
    return value


def next_request(
    current: Mapping[str, Any] | None, action: Action, *, actor: str, data: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The job's ``runRequest`` after ``action`` by ``actor`` with ``data``; raises :class:`StoreError`.

    ``run_requested`` without ``requestId`` (a type needing no approval)
    leaves an earlier, closed request as it is, and is refused while one is
    open: only its approval may start the job then.
    """
    if action is Action.RUN_REQUEST_OPENED:
        if is_open(current):
            raise StoreError("a run request is already open for this job")
        required = data["required"]
        if type(required) is not int or required < 1:
            raise StoreError("required must be a positive integer")
        return {
            "id": _text(data, "requestId", required=True),
            "by": actor,
            "reason": _text(data, "reason"),
            "at": _text(data, "at", required=True),
            "expiresAt": _text(data, "expiresAt", required=True),
            "planSha256": _text(data, "planSha256"),
            "required": required,
            "approvals": [],
            "state": OPEN,
            "closedAt": None,
            "closedBy": None,
            "closeReason": None,
        }
    if action is Action.RUN_REQUESTED and data.get("requestId") is None:
        if is_open(current):
            raise StoreError("the job has an open run request: only its approval starts it")
        return None if current is None else dict(current)
    if current is None or not is_open(current) or current.get("id") != data.get("requestId"):
        raise StoreError(f"{action}: request {data.get('requestId')!r} is not the job's open run request")
    request = dict(current)
    if action in CLOSING:
        request.update(
            state=CLOSING[action],
            closedAt=_text(data, "at", required=True),
            closedBy=actor,
            closeReason=_text(data, "reason"),
        )
        return request
    # An approval: run_request_approved, or run_requested (the approval that completes it).
    final = action is Action.RUN_REQUESTED
    approvals = list(request["approvals"])
    if same_person(actor, request["by"]):
        raise StoreError(f"{actor!r} requested this run and cannot approve it")
    if any(same_person(a["by"], actor) for a in approvals):
        raise StoreError(f"{actor!r} has already approved this run request")
    if data.get("approvalsBefore") != len(approvals):
        raise StoreError("the run request's approvals changed meanwhile")
    at = _text(data, "approvedAt" if final else "at", required=True)
    reason = _text(data, "approvalReason" if final else "reason")
    approvals.append({"by": actor, "at": at, "reason": reason})
    if final != (len(approvals) >= request["required"]):
        raise StoreError("only the approval that completes a run request starts the job, and it must")
    request["approvals"] = approvals
    if final:
        request.update(state=APPROVED, closedAt=at, closedBy=actor, closeReason=None)
    return request
