"""The server's duration text (the no-JavaScript page; static/js/time.js formatDuration says the same)."""

from __future__ import annotations

import pytest

from admin_gateway.http.templates import format_duration


class TestFormatDuration:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (-3, "0s"),
            (0, "0s"),
            (45.9, "45s"),
            (65, "1m 05s"),
            (3 * 3600 + 3 * 60 + 59, "3h 03m"),
            (2 * 86400 + 4 * 3600 + 5, "2d 4h"),
        ],
    )
    def test_spans_read_in_their_largest_two_units(self, seconds: float, text: str) -> None:
        """Seconds, then minutes and seconds, hours and minutes, days and hours; never negative."""
        assert format_duration(seconds) == text
