"""The audit page's pure parts: the Engine log's time cursor, the job-name cache, the action list."""

from __future__ import annotations

import pytest

from admin_gateway.audit.actions import ENGINE_ACTIONS, GATEWAY_ACTIONS, action_choices
from admin_gateway.audit.job_names import MAX_CACHED, TTL, JobNames
from admin_gateway.http.engine_log_page import BadCursor, page_of, parse_cursor
from engine_hub.store.actions import Action
from engine_hub.store.override import OverrideAction


def entry(ts: str | None, n: int) -> dict[str, object]:
    """A log entry at ``ts`` told apart by ``n``."""
    return {"level": "INFO", "message": f"m{n}", "jobId": None, "timestamp": ts}


class TestLogPaging:
    def test_pages_walk_every_entry_once_newest_first(self) -> None:
        """Following older cursors from the newest page shows each entry once, in time order."""
        entries = [entry(f"2026-12-04T14:{m:02d}:00.000Z", m) for m in range(23)]  # oldest first, as the engine
        seen: list[object] = []
        before = None
        for _ in range(10):
            page = page_of(entries, before, size=5)
            seen += [e["message"] for e in page.entries]
            if page.older is None:
                break
            before = page.older
        assert seen == [f"m{m}" for m in reversed(range(23))]

    def test_entries_at_the_boundary_time_stay_together(self) -> None:
        """Entries sharing the last shown time all go on that page, so the time cursor skips none."""
        entries = [entry("2026-12-04T14:00:00.000Z", 0)] + [entry("2026-12-04T14:01:00.000Z", n) for n in range(1, 5)]
        first = page_of(entries, None, size=2)
        assert len(first.entries) == 4 and first.older == "2026-12-04T14:01:00.000Z"
        assert [e["message"] for e in page_of(entries, first.older, size=2).entries] == ["m0"]

    def test_cursor_parsing(self) -> None:
        """A cursor is any RFC 3339 time, written as the engine writes times; anything else is refused."""
        assert parse_cursor("") is None
        assert parse_cursor("2026-12-04T15:37:00+01:00") == "2026-12-04T14:37:00.000Z"
        with pytest.raises(BadCursor):
            parse_cursor("yesterday")


class TestJobNames:
    def test_answers_expire_and_the_cache_is_bounded(self) -> None:
        """A remembered name is fresh for TTL seconds; past MAX_CACHED jobs the oldest are dropped."""
        now = [0.0]
        names = JobNames(clock=lambda: now[0])
        names.remember("a", "nightly")
        names.remember("b", None)
        assert names.cached("a") == (True, "nightly") and names.cached("b") == (True, None)
        now[0] = TTL + 1
        assert names.cached("a") == (False, None)
        for i in range(MAX_CACHED + 1):
            names.remember(f"j{i}", "x")
        assert names.cached("j0") == (False, None) and names.cached(f"j{MAX_CACHED}") == (True, "x")


class TestActions:
    def test_engine_actions_are_the_engines(self) -> None:
        """The Action filter lists exactly the actions the engine's journal writes."""
        assert set(ENGINE_ACTIONS) == {a.value for a in Action} | {a.value for a in OverrideAction}

    def test_choices_add_what_is_seen(self) -> None:
        """Actions seen on screen or chosen join the known ones, sorted, without duplicates."""
        choices = action_choices(["job_copy"], ["job_run", None])
        assert choices == sorted(choices) and "job_copy" in choices
        assert set(GATEWAY_ACTIONS) <= set(choices) and "audit_export_requested" in choices
