"""structlog set-up shared by both processes.

Output is JSON lines when the stream is not a TTY and readable console output
when it is. The JSON path is kept cheap on purpose: the per-request summary
line is the hottest log call in the system, and structlog's default chain
(plus a flush per line) costs more than the request itself. Lines are written
to a buffered stream and flushed at most every ``FLUSH_INTERVAL`` seconds, at
once for warnings and errors, and at exit.

When JSON lines go to a regular file (``>> engine.log``, systemd's
``StandardOutput=append:``), a partial last line that a killed predecessor
left there is cut off at start-up with a ``log_torn_tail_truncated``
warning (:mod:`shared.torn`), so no line is ever glued onto a fragment.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import sys
import threading
import time
from typing import IO, Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from shared.torn import drop_torn_tail

FLUSH_INTERVAL = 0.25
#: Lines collected before they are handed to the stream in one write.
BATCH_LINES = 64
_URGENT = frozenset({"warning", "error", "critical", "exception"})


def _timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # time.time() plus a cached per-second prefix is several times cheaper than TimeStamper.
    event_dict["ts"] = _fast_iso(time.time())
    return event_dict


#: (millisecond, its ISO 8601 text) of the last timestamp made, and the text of its second: one
#: tuple each, so that a thread never pairs a millisecond with another one's text.
_iso_ms: tuple[int, str] = (-1, "")
_iso_second: tuple[int, str] = (-1, "")


def _fast_iso(now: float) -> str:
    global _iso_ms, _iso_second
    ms = int(now * 1000)
    cached_ms, text = _iso_ms
    if ms != cached_ms:
        sec, frac = divmod(ms, 1000)
        cached_sec, prefix = _iso_second
        if sec != cached_sec:
            prefix = dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
            _iso_second = (sec, prefix)
        text = f"{prefix}.{frac:03d}Z"
        _iso_ms = (ms, text)
    return text


class BufferedLineLogger:
    """A structlog logger writing whole lines to a stream, in batches.

    Thread-safe. Lines are collected and handed to the stream
    ``BATCH_LINES`` at a time (one ``write`` per batch costs a fraction of
    one per line, which matters for the per-request line) and flushed at
    most every ``FLUSH_INTERVAL`` seconds. A line written when the last
    flush is older than that, and any urgent line (warning and above), is
    written and flushed at once: a quiet process's lines and every error
    appear immediately for an operator tailing the log.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._last_flush = time.monotonic()

    def _emit(self, message: str, urgent: bool) -> None:
        self.write_line(message + "\n", urgent)

    def write_line(self, line: str, urgent: bool = False) -> None:
        """Write ``line``, which ends with a newline (the hot path of :func:`log_request`)."""
        with self._lock:
            pending = self._pending
            pending.append(line)
            now = time.monotonic()
            due = urgent or now - self._last_flush >= FLUSH_INTERVAL
            if due or len(pending) >= BATCH_LINES:
                self._stream.write("".join(pending))
                pending.clear()
                if due:
                    self._stream.flush()
                    self._last_flush = now

    def flush(self) -> None:
        """Write and flush whatever is pending."""
        with self._lock:
            try:
                if self._pending:
                    self._stream.write("".join(self._pending))
                    self._pending.clear()
                self._stream.flush()
            except ValueError:  # stream already closed at interpreter exit
                pass
            self._last_flush = time.monotonic()

    def msg(self, message: str) -> None:
        """Write one line."""
        self._emit(message, False)

    def err(self, message: str) -> None:
        """Write one line and flush at once."""
        self._emit(message, True)

    info = debug = msg
    warning = error = critical = exception = fatal = err
    log = msg


_logger: BufferedLineLogger | None = None
#: The renderer ending the chain of the last JSON ``configure_logging``: while structlog's chain
#: still ends with it, nobody (capture_logs, a test) has replaced our configuration.
_json_renderer: Any = None
_min_level = logging.INFO
_http_log = structlog.get_logger("http")
_encode_str = json.encoder.encode_basestring  # C-accelerated where available; keeps non-ASCII as is


def flush_logs() -> None:
    """Flush buffered log lines (called periodically by each app and at exit)."""
    if _logger is not None:
        _logger.flush()


def configure_logging(*, json_output: bool | None = None, level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog for a process.

    ``json_output=None`` picks JSON when ``stream`` is not a TTY. ``level`` is
    a stdlib level name. Safe to call more than once (the last call wins).
    """
    global _logger, _json_renderer, _min_level
    if _logger is not None:
        _logger.flush()  # lines still pending go to the stream they were meant for
    out = stream if stream is not None else sys.stdout
    if json_output is None:
        json_output = not out.isatty()
    min_level = _min_level = logging.getLevelNamesMapping()[level.upper()]
    if json_output:
        _logger = BufferedLineLogger(out)
        processors: list[Any] = [
            structlog.processors.add_log_level,
            _timestamp,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
        logger_factory: Any = lambda *_: _logger  # noqa: E731
        _json_renderer = processors[-1]
    else:
        _logger = None
        _json_renderer = None
        processors = [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(),
        ]
        logger_factory = structlog.PrintLoggerFactory(out)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=logger_factory,
        cache_logger_on_first_use=False,
    )
    if json_output:
        _drop_torn_output(out)


def _drop_torn_output(out: IO[str]) -> None:
    # A previous process killed mid-write may have left part of a line at the end of a log file
    # this one appends to: cut it off (as the journal does), or our first line would continue it.
    try:
        out.flush()
        fd = out.fileno()
    except (OSError, ValueError):  # no file behind the stream (a StringIO) or closed
        return
    cut = drop_torn_tail(fd)
    if cut:
        structlog.get_logger("log").warning("log_torn_tail_truncated", bytes=cut)


# default=str so that an odd value (a Path, an exception) never kills a log call. One encoder
# for all calls: json.dumps() with options builds a new encoder every time.
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":"))


def _dumps(obj: Any, **kw: Any) -> str:
    return _ENCODER.encode(obj)


def log_request(*, request_id: str, method: str, path: str, status: int, ms: float) -> None:
    """Write the per-request summary line: event ``request`` with these fields, at info level.

    It is the hottest log call of both processes, so in JSON mode the line is
    formatted directly (about a microsecond, against several for structlog's
    processor chain), with the same keys, order and format as
    ``structlog.get_logger("http").info("request", ...)``. When structlog has
    been reconfigured since :func:`configure_logging` (for instance by
    ``structlog.testing.capture_logs``), it goes through structlog instead.
    ``ms`` is written rounded to two decimals.
    """
    logger = _logger
    processors = structlog.get_config()["processors"]
    if logger is not None and processors and processors[-1] is _json_renderer:
        if _min_level <= logging.INFO:
            # % over one tuple, not an f-string: the cheapest way to build the line, once per request.
            logger.write_line(
                '{"request_id":%s,"method":%s,"path":%s,"status":%d,"ms":%.2f,'  # noqa: UP031
                '"event":"request","level":"info","ts":"%s"}\n'
                % (_encode_str(request_id), _encode_str(method), _encode_str(path), status, ms, _fast_iso(time.time()))
            )
        return
    _http_log.info("request", request_id=request_id, method=method, path=path, status=status, ms=round(ms, 2))


atexit.register(flush_logs)
