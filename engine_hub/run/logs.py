"""Captured output of job runs, kept in memory with bounded size.

Each job has a buffer of lines ``{seq, at, stream, text}`` numbered from 1.
A buffer keeps at most ``max_lines`` lines and ``max_bytes`` bytes: past
that, the oldest lines are dropped and the buffer is marked truncated (the
tail of a run's output is what an operator needs). Across all jobs at most
``max_total_bytes`` are kept: past that, the buffers of the jobs that
finished longest ago are dropped whole. Sequence numbers never restart, so a
reader polling with ``after=N`` sees a gap, never a repeat.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Final, Protocol

import attrs

from shared.contract import format_time, utcnow

#: Longest line kept; longer lines are cut and end with this marker.
MAX_LINE_CHARS: Final = 16 * 1024
CUT_MARKER: Final = "… [line cut]"
#: Most lines one read returns.
MAX_READ_LINES: Final = 5000
#: ``stream`` of the lines the engine writes itself (the size cap's marker).
MARKER_STREAM: Final = "engine"


def cut_line(text: str) -> str:
    """``text``, or its first :data:`MAX_LINE_CHARS` characters and :data:`CUT_MARKER` when it is longer."""
    return text[:MAX_LINE_CHARS] + CUT_MARKER if len(text) > MAX_LINE_CHARS else text


def byte_cap_reason(max_bytes: int) -> str:
    """The ``log_truncated`` reason of a store that keeps the first ``max_bytes`` of a job's output."""
    return f"output limit of {max_bytes} bytes reached; later output is dropped"


def byte_cap_marker(max_bytes: int) -> str:
    """The text of the one marker line that ends a log cut at ``max_bytes`` (stream :data:`MARKER_STREAM`)."""
    limit = f"{max_bytes / (1024 * 1024):g} MiB" if max_bytes >= 1024 * 1024 else f"{max_bytes} bytes"
    return f"[output truncated: this job's log reached its {limit} limit; later output was dropped]"


@attrs.define(kw_only=True)
class _Buffer:
    lines: deque[tuple[int, str, str, str]] = attrs.Factory(deque)
    next_seq: int = 1
    size: int = 0
    dropped: int = 0


@attrs.frozen(kw_only=True)
class LogPage:
    """One read of a job's log: the lines after the cursor and the cursor to pass next."""

    lines: list[dict[str, Any]]
    next: int
    truncated: bool

    def to_json(self) -> dict[str, Any]:
        """Return ``{"lines": [...], "next": N, "truncated": bool}``."""
        return {"lines": self.lines, "next": self.next, "truncated": self.truncated}


class LogStore(Protocol):
    """What the job service needs from a job log store (in memory, in files or in PostgreSQL).

    ``append`` and ``repair`` are plain calls: ``append`` only buffers (it runs for every line a
    process prints, on the event loop, and never raises). ``finish``, ``read`` and ``close`` are
    awaited: a store in a database does I/O for them.
    """

    @property
    def cap_reason(self) -> str:
        """Why a job's log was cut, for the ``log_truncated`` journal record."""

    def append(self, job_id: str, stream: str, text: str) -> bool:
        """Add one line; return True the first time this job's log hits its cap."""

    async def finish(self, job_id: str) -> None:
        """The job's run is over: once this returns, every line appended for it is readable."""

    def repair(self, job_id: str) -> int:
        """The job's run was cut by a crash: drop a torn last line of its log; return the bytes dropped."""

    @property
    def disk_bytes(self) -> int | None:
        """Total bytes of job log files on disk, or None when logs are kept in memory."""

    async def read(self, job_id: str, *, after: int = 0, limit: int = MAX_READ_LINES) -> LogPage:
        """Return up to ``limit`` lines with ``seq > after``, oldest first."""

    async def close(self) -> None:
        """The engine stops: write out whatever is buffered."""


def _line_size(text: str) -> int:
    # Approximate memory cost: the text plus the fixed per-line overhead of the tuple.
    return len(text) + 64


class JobLogs:
    """Per-job line buffers with per-job and global bounds."""

    def __init__(
        self, *, max_lines: int = 10_000, max_bytes: int = 2 * 1024 * 1024, max_total_bytes: int = 256 * 1024 * 1024
    ) -> None:
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._max_total = max_total_bytes
        self._buffers: dict[str, _Buffer] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._total = 0

    @property
    def cap_reason(self) -> str:
        """Why a job's log was cut: the oldest lines are dropped past the per-job bounds."""
        return "output limit reached; the oldest lines are dropped"

    async def close(self) -> None:
        """Nothing to write out: memory only."""

    def repair(self, job_id: str) -> int:
        """Nothing to repair: memory does not survive a crash."""
        return 0

    @property
    def disk_bytes(self) -> int | None:
        """None: memory only."""
        return None

    @property
    def total_bytes(self) -> int:
        """Approximate bytes held across all buffers."""
        return self._total

    def append(self, job_id: str, stream: str, text: str) -> bool:
        """Add one line to a job's log; return True when this line made it drop lines for the first time."""
        text = cut_line(text)
        buf = self._buffers.get(job_id)
        if buf is None:
            buf = self._buffers[job_id] = _Buffer()
        size = _line_size(text)
        buf.lines.append((buf.next_seq, format_time(utcnow()) or "", stream, text))
        buf.next_seq += 1
        buf.size += size
        self._total += size
        first_drop = False
        while buf.lines and (len(buf.lines) > self._max_lines or buf.size > self._max_bytes):
            _, _, _, old = buf.lines.popleft()
            freed = _line_size(old)
            buf.size -= freed
            self._total -= freed
            first_drop = first_drop or buf.dropped == 0
            buf.dropped += 1
        if self._total > self._max_total:
            self._evict()
        return first_drop

    async def finish(self, job_id: str) -> None:
        """Mark a job's run as over: its buffer may now be evicted when memory runs short."""
        if job_id in self._buffers:
            self._finished[job_id] = None
            if self._total > self._max_total:
                self._evict()

    def _evict(self) -> None:
        # Drop whole buffers of the runs that ended longest ago, keeping their numbering.
        while self._total > self._max_total and self._finished:
            job_id, _ = self._finished.popitem(last=False)
            buf = self._buffers[job_id]
            self._total -= buf.size
            buf.dropped += len(buf.lines)
            buf.lines.clear()
            buf.size = 0

    async def read(self, job_id: str, *, after: int = 0, limit: int = MAX_READ_LINES) -> LogPage:
        """Return up to ``limit`` lines with ``seq > after``, oldest first.

        ``next`` is the ``after`` to pass on the next call (0 before any
        output); it never runs ahead of the newest line. ``truncated`` says lines were dropped.
        """
        buf = self._buffers.get(job_id)
        if buf is None:
            return LogPage(lines=[], next=0, truncated=False)
        last = buf.next_seq - 1
        lines: list[dict[str, Any]] = []
        if buf.lines:
            first = buf.lines[0][0]
            start = max(0, after + 1 - first)
            stop = min(len(buf.lines), start + limit)
            for i in range(start, stop):
                seq, at, stream, text = buf.lines[i]
                lines.append({"seq": seq, "at": at, "stream": stream, "text": text})
        # With nothing to return, point at the newest line: lines before it were dropped
        # or the caller's cursor ran ahead; either way polling resumes from there.
        nxt = lines[-1]["seq"] if lines else last
        return LogPage(lines=lines, next=nxt, truncated=buf.dropped > 0)
