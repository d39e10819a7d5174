"""The store's own guard of run requests (engine_hub/store/requests.py), as both stores apply it."""

from __future__ import annotations

from typing import Any

import pytest

from engine_hub.store.actions import Action
from engine_hub.store.backend import ClaimLost, EmbeddedBackend
from engine_hub.store.embedded import JobStore
from engine_hub.store.entry import StoreError
from engine_hub.store.requests import has_expired, next_request
from shared.journal.chain import MemoryJournal
from tests.unit.engine.chains import Chain

OPENED = {"requestId": "r1", "reason": "why", "at": "2026-01-01T00:00:00.000Z", "expiresAt": "2026-01-01T01:00:00.000Z"}


def opened(required: int = 1) -> dict[str, Any]:
    """An open request by alice needing ``required`` approvals."""
    request = next_request(None, Action.RUN_REQUEST_OPENED, actor="alice", data={**OPENED, "required": required})
    assert request is not None
    return request


def approval(before: int, *, final: bool) -> dict[str, Any]:
    """The data of an approval of r1 made when it had ``before`` approvals."""
    if final:
        return {"requestId": "r1", "approvalsBefore": before, "approvedAt": "2026-01-01T00:10:00.000Z"}
    return {"requestId": "r1", "approvalsBefore": before, "at": "2026-01-01T00:10:00.000Z"}


class TestNextRequest:
    def test_open_then_approve_then_start(self) -> None:
        """A quorum of two: bob's approval keeps it open, carol's run_requested closes it as approved."""
        request = next_request(opened(2), Action.RUN_REQUEST_APPROVED, actor="bob", data=approval(0, final=False))
        assert request is not None and request["state"] == "open"
        done = next_request(request, Action.RUN_REQUESTED, actor="carol", data=approval(1, final=True))
        assert done is not None
        assert (done["state"], [a["by"] for a in done["approvals"]], done["closedBy"]) == (
            "approved",
            ["bob", "carol"],
            "carol",
        )

    @pytest.mark.parametrize(
        ("actor", "data", "fragment"),
        [
            ("alice", approval(0, final=True), "cannot approve"),
            ("bob", {**approval(0, final=True), "requestId": "r2"}, "not the job's open run request"),
            ("bob", approval(1, final=True), "changed meanwhile"),
            ("bob", approval(0, final=False), "only the approval that completes"),
        ],
    )
    def test_refused_approvals(self, actor: str, data: dict[str, Any], fragment: str) -> None:
        """Self-approval, another request, a stale count and an approval that should have started it are refused."""
        action = Action.RUN_REQUESTED if "approvedAt" in data else Action.RUN_REQUEST_APPROVED
        with pytest.raises(StoreError, match=fragment):
            next_request(opened(1), action, actor=actor, data=data)

    def test_names_differing_in_case_are_one_person(self) -> None:
        """ALICE cannot approve alice's request, nor BOB count twice after bob."""
        with pytest.raises(StoreError, match="cannot approve"):
            next_request(opened(1), Action.RUN_REQUESTED, actor="ALICE", data=approval(0, final=True))
        request = next_request(opened(2), Action.RUN_REQUEST_APPROVED, actor="bob", data=approval(0, final=False))
        with pytest.raises(StoreError, match="already approved"):
            next_request(request, Action.RUN_REQUESTED, actor="BOB", data=approval(1, final=True))

    def test_a_repeated_approver_is_refused(self) -> None:
        """bob cannot count twice toward a quorum."""
        request = next_request(opened(2), Action.RUN_REQUEST_APPROVED, actor="bob", data=approval(0, final=False))
        with pytest.raises(StoreError, match="already approved"):
            next_request(request, Action.RUN_REQUESTED, actor="bob", data=approval(1, final=True))

    def test_no_plain_run_and_no_second_request_while_one_is_open(self) -> None:
        """run_requested without requestId, or a second opened, is refused while a request is open."""
        with pytest.raises(StoreError, match="only its approval starts it"):
            next_request(opened(), Action.RUN_REQUESTED, actor="bob", data={"runBy": "bob"})
        with pytest.raises(StoreError, match="already open"):
            next_request(opened(), Action.RUN_REQUEST_OPENED, actor="bob", data={**OPENED, "required": 1})

    @pytest.mark.parametrize(
        ("action", "state"),
        [
            (Action.RUN_REQUEST_REJECTED, "rejected"),
            (Action.RUN_REQUEST_WITHDRAWN, "withdrawn"),
            (Action.RUN_REQUEST_EXPIRED, "expired"),
            (Action.RUN_REQUEST_SUPERSEDED, "superseded"),
        ],
    )
    def test_closing_is_final(self, action: Action, state: str) -> None:
        """Each closing action closes the request once; nothing changes it after."""
        data = {"requestId": "r1", "at": "2026-01-01T00:20:00.000Z", "reason": "r"}
        closed = next_request(opened(), action, actor="carol", data=data)
        assert closed is not None and (closed["state"], closed["closedBy"], closed["closeReason"]) == (
            state,
            "carol",
            "r",
        )
        with pytest.raises(StoreError, match="not the job's open run request"):
            next_request(closed, action, actor="carol", data=data)
        assert next_request(closed, Action.RUN_REQUESTED, actor="bob", data={"runBy": "bob"}) == closed

    def test_expiry_is_at_expires_at(self) -> None:
        """A request has expired at its expiresAt, not a millisecond before."""
        assert not has_expired(opened(), "2026-01-01T00:59:59.999Z")
        assert has_expired(opened(), "2026-01-01T01:00:00.000Z")


class TestEmbeddedBackendRefusesFirst:
    async def test_a_request_change_that_does_not_fit_is_refused_before_the_journal(self) -> None:
        """A stale approval, or a plain run while a request is open, is ClaimLost and writes nothing."""
        backend = EmbeddedBackend(store=JobStore())
        journal = MemoryJournal()
        backend.use_journal(journal)
        created = Chain().created("t.guarded")
        assert created.job_id is not None
        job_id = created.job_id
        await backend.commit(action=Action.JOB_CREATED, actor="admin", source="t", job_id=job_id, data=created.data)
        opened = {**OPENED, "required": 2}
        await backend.commit(action=Action.RUN_REQUEST_OPENED, actor="alice", source="t", job_id=job_id, data=opened)
        written = len(journal.recent())
        stale = {**approval(1, final=False)}
        with pytest.raises(ClaimLost, match="changed meanwhile"):
            await backend.commit(action=Action.RUN_REQUEST_APPROVED, actor="bob", source="t", job_id=job_id, data=stale)
        with pytest.raises(ClaimLost, match="only its approval starts it"):
            await backend.commit(action=Action.RUN_REQUESTED, actor="bob", source="t", job_id=job_id, data={})
        assert len(journal.recent()) == written
