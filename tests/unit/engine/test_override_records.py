"""The override window's fold (engine_hub/store/override.py): records that fit, records a replay must refuse."""

from __future__ import annotations

from typing import Any

import pytest

from engine_hub.store.embedded import JobStore
from engine_hub.store.entry import StoreError
from engine_hub.store.override import Window, WindowState, apply_record, fold
from shared.journal.chain import GENESIS, Record, make_record

T0 = "2030-01-01T00:00:00.000Z"
T1 = "2030-01-01T00:05:00.000Z"
UNTIL = "2030-01-01T00:20:00.000Z"


class _Chain:
    """Records chained one after another, as a journal writes them."""

    def __init__(self) -> None:
        self.seq, self.head = 0, GENESIS

    def next(self, action: str, actor: str, **data: Any) -> Record:
        record = make_record(
            seq=self.seq + 1, prev=self.head, action=action, actor=actor, source="test", job_id=None, data=data
        )
        self.seq, self.head = record.seq, record.hash
        return record


def _requested(chain: _Chain, window_id: str = "w1", actor: str = "alice") -> Record:
    return chain.next(
        "safe_mode_override_requested",
        actor,
        windowId=window_id,
        reason="INC-1",
        minutes=15,
        requestedAt=T0,
        requestExpiresAt="2030-01-01T00:15:00.000Z",
    )


def _approved(chain: _Chain, actor: str = "carol", window_id: str = "w1") -> Record:
    return chain.next("safe_mode_override_approved", actor, windowId=window_id, openedAt=T1, until=UNTIL)


class TestFold:
    def test_request_approve_expire(self) -> None:
        """Requested, approved by another actor, then expired: the window says who, when and until when."""
        chain = _Chain()
        records = [
            _requested(chain),
            _approved(chain),
            chain.next("safe_mode_override_expired", "system", windowId="w1", expiredAt=UNTIL, phase="window"),
        ]
        window = fold(records)
        assert window is not None
        assert (window.state, window.requested_by, window.approved_by, window.until, window.ended_at) == (
            WindowState.EXPIRED,
            "alice",
            "carol",
            UNTIL,
            UNTIL,
        )

    def test_time_closes_an_open_window_without_a_record(self) -> None:
        """An open window is expired at ``until`` by its stored end alone, and open just before."""
        chain = _Chain()
        window = fold([_requested(chain), _approved(chain)])
        assert window is not None
        assert window.is_open_at("2030-01-01T00:19:59.999Z")
        assert window.state_at(UNTIL) is WindowState.EXPIRED
        assert Window.from_json(window.to_json()) == window

    @pytest.mark.parametrize(
        ("name", "build"),
        [
            ("self-approval", lambda c, w: _approved(c, actor="alice")),
            ("another window", lambda c, w: _approved(c, window_id="w2")),
            ("second request", lambda c, w: _requested(c, window_id="w2")),
            ("end before request", None),
        ],
    )
    def test_records_that_do_not_fit_are_refused(self, name: str, build: Any) -> None:
        """A replay refuses a self-approval, a change of another window, a second active request, an orphan end."""
        chain = _Chain()
        if build is None:
            with pytest.raises(StoreError):
                apply_record(None, chain.next("safe_mode_override_ended", "bob", windowId="w1", endedAt=T1))
            return
        window = apply_record(None, _requested(chain))
        with pytest.raises(StoreError):
            apply_record(window, build(chain, window))

    def test_the_job_store_replays_override_records_with_jobs(self) -> None:
        """The embedded store's replay applies override records beside job records and moves its seq and head."""
        chain = _Chain()
        store = JobStore()
        records = [_requested(chain), _approved(chain)]
        assert store.replay(records) == 2
        assert store.override is not None and store.override.state is WindowState.OPEN
        assert (store.seq, store.head) == (2, records[-1].hash)
        assert store.cut().override == store.override
