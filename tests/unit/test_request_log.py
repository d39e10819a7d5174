"""The fast per-request log line writes exactly what structlog would, and steps aside when reconfigured."""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
from typing import Any

import structlog
from structlog.testing import capture_logs

from shared.log import _fast_iso, configure_logging, flush_logs, log_request

FIELDS: dict[str, Any] = {"request_id": "0123abcd", "method": "GET", "path": '/api/jobs/"quoted"\\ünï\n', "status": 404,
          "ms": 1.25}


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    flush_logs()
    return [json.loads(line) for line in buf.getvalue().splitlines()]


class TestLogRequest:
    def test_same_line_as_structlog(self, json_log: io.StringIO) -> None:
        """The fast line has the keys, order and values of structlog's own rendering, escaping included."""
        structlog.get_logger("http").info("request", **FIELDS)
        log_request(**FIELDS)
        slow, fast = _lines(json_log)
        assert slow.pop("ts") <= fast.pop("ts")
        assert list(fast.items()) == list(slow.items())
        assert fast["path"] == FIELDS["path"]

    def test_respects_level(self) -> None:
        """At level warning, request lines (info) are not written."""
        buf = io.StringIO()
        configure_logging(json_output=True, stream=buf, level="warning")
        try:
            log_request(**FIELDS)
            assert _lines(buf) == []
        finally:
            configure_logging(json_output=False, stream=sys.stderr)

    def test_capture_logs_still_sees_requests(self, json_log: io.StringIO) -> None:
        """When structlog is reconfigured (capture_logs), the line goes through structlog."""
        with capture_logs() as captured:
            log_request(**FIELDS)
        assert captured == [{**FIELDS, "event": "request", "log_level": "info"}]
        assert _lines(json_log) == []


class TestTimestamp:
    def test_matches_iso_format_across_milliseconds_and_seconds(self) -> None:
        """The cached timestamp text is the UTC ISO 8601 millisecond of each instant, also after a cache hit."""
        base = 1_800_000_000.0
        for now in (base + 0.0004, base + 0.0009, base + 0.001, base + 0.999, base + 1.0, base + 0.5, base + 61.25):
            expected = dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            assert _fast_iso(now) == expected
