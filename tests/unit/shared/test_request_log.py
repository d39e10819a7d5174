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

FIELDS: dict[str, Any] = {
    "request_id": "0123abcd",
    "method": "GET",
    "path": '/api/jobs/"quoted"\\ünï\n',
    "status": 404,
    "ms": 1.25,
}


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

    def test_ms_is_rounded_to_two_decimals(self, json_log: io.StringIO) -> None:
        """The elapsed milliseconds are written with two decimals, on the fast and the structlog path."""
        log_request(**{**FIELDS, "ms": 1.23456})
        with capture_logs() as captured:
            log_request(**{**FIELDS, "ms": 1.23456})
        assert _lines(json_log)[0]["ms"] == 1.23
        assert captured[0]["ms"] == 1.23

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


class _CountingStream(io.StringIO):
    """A stream counting its ``write`` and ``flush`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


class TestBufferedLineLogger:
    def test_batches_request_lines_into_few_writes(self) -> None:
        """Many request lines reach the stream in whole batches, all of them, in order."""
        from shared.log import BATCH_LINES, BufferedLineLogger

        stream = _CountingStream()
        logger = BufferedLineLogger(stream)
        for i in range(BATCH_LINES * 3 + 5):
            logger.write_line(f"{i}\n")
        assert stream.writes == 3
        logger.flush()
        assert stream.writes == 4
        assert stream.getvalue().splitlines() == [str(i) for i in range(BATCH_LINES * 3 + 5)]

    def test_urgent_line_is_written_and_flushed_at_once(self) -> None:
        """A warning or error is written and flushed immediately, after the lines pending before it."""
        from shared.log import BufferedLineLogger

        stream = _CountingStream()
        logger = BufferedLineLogger(stream)
        logger.write_line("info\n")
        assert stream.getvalue() == ""
        logger.err("boom")
        assert stream.getvalue() == "info\nboom\n"
        assert stream.flushes == 1

    def test_line_after_a_quiet_spell_is_written_at_once(self) -> None:
        """A line arriving more than FLUSH_INTERVAL after the last flush is written and flushed immediately."""
        from shared.log import FLUSH_INTERVAL, BufferedLineLogger

        stream = _CountingStream()
        logger = BufferedLineLogger(stream)
        logger._last_flush -= FLUSH_INTERVAL  # as if the last flush were that long ago
        logger.write_line("started\n")
        assert stream.getvalue() == "started\n"
        assert stream.flushes == 1
