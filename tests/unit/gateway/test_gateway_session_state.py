"""A request's session as the gateway's handlers see it: a plain mapping with changed/new flags."""

from __future__ import annotations

import pytest

from admin_gateway.auth.sessions import SessionState


def _loaded() -> tuple[SessionState, dict[str, object]]:
    stored: dict[str, object] = {"user": "alice", "gen": 1}
    return SessionState("the-id", stored), stored


class TestFlags:
    def test_a_session_without_a_record_is_new_and_unchanged(self) -> None:
        """A state built without a stored record is new, empty and unchanged."""
        state = SessionState()
        assert (state.new, state.changed, state.id, len(state)) == (True, False, None, 0)

    def test_a_loaded_session_is_neither_new_nor_changed(self) -> None:
        """A state for a stored record carries its id and data, and is not new or changed."""
        state, _ = _loaded()
        assert (state.new, state.changed, state.id) == (False, False, "the-id")
        assert dict(state) == {"user": "alice", "gen": 1}

    def test_reading_does_not_change_it(self) -> None:
        """get, [], in, len and iteration leave ``changed`` false."""
        state, _ = _loaded()
        assert state.get("user") == "alice"
        assert state["gen"] == 1
        assert state.get("missing") is None
        assert "user" in state
        assert sorted(state) == ["gen", "user"]
        assert not state.changed

    @pytest.mark.parametrize("write", ["set", "delete", "clear", "pop", "update"])
    def test_every_write_changes_it(self, write: str) -> None:
        """Setting, deleting, clearing, popping or updating a key marks the session changed."""
        state, _ = _loaded()
        if write == "set":
            state["csrf"] = "token"
        elif write == "delete":
            del state["gen"]
        elif write == "clear":
            state.clear()
        elif write == "pop":
            state.pop("user")
        else:
            state.update(user="bob")
        assert state.changed

    def test_writes_never_touch_the_loaded_record(self) -> None:
        """The first write copies the data: the record the state was loaded from stays as stored."""
        state, stored = _loaded()
        state["user"] = "bob"
        del state["gen"]
        assert stored == {"user": "alice", "gen": 1}
        assert dict(state) == {"user": "bob"}

    def test_a_missing_key_raises_key_error(self) -> None:
        """``[]`` and ``del`` of an absent key raise KeyError, as a dict does."""
        state = SessionState()
        with pytest.raises(KeyError):
            state["nope"]
        with pytest.raises(KeyError):
            del state["nope"]


class TestRotateAndEnd:
    def test_rotate_drops_the_id_and_keeps_the_data(self) -> None:
        """``rotate`` makes the state new (a fresh id at save) and changed, with its data kept."""
        state, _ = _loaded()
        state.rotate()
        assert (state.new, state.changed, state.id) == (True, True, None)
        assert dict(state) == {"user": "alice", "gen": 1}

    def test_end_empties_and_changes_it(self) -> None:
        """``end`` leaves an empty, changed state (saved so, the session is deleted)."""
        state, stored = _loaded()
        state.end()
        assert state.changed
        assert len(state) == 0
        assert stored == {"user": "alice", "gen": 1}

    def test_end_without_a_session_still_counts_as_a_change(self) -> None:
        """A logout without a session is a change too (a stale cookie is cleared at save)."""
        state = SessionState()
        state.end()
        assert state.changed and state.new
