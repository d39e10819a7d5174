"""Job output in files, one per job, that survive restarts.

``<data-dir>/logs/<job id>.log`` holds one line per output line,
``<seq>\\t<at>\\t<stream>\\t<text>``, numbered from 1. Text never holds a
newline (the runner splits on them) and the tab before it is the last
separator, so any text is stored as is.

A job's file is capped (``max_bytes``, default 10 MiB): the line that would
pass the cap is replaced by one marker line (stream ``engine``) and the rest
of the run's output is dropped. Unlike the in-memory logs, the *beginning*
of the output is kept: it is on disk already, and it usually says what the
job set out to do.

Writes are cheap: each job's lines go to a buffered file object, written
out when the buffer fills, :data:`FLUSH_DELAY` after a line arrives (one
timer for all jobs, so a chatty job costs a few writes a second, not one a
line), when someone reads that job's log (a reader always sees every line
so far) and when the run ends. Nothing is fsynced: the journal is the audit
trail; a crash loses at most the output of the last :data:`FLUSH_DELAY`.

Reads seek: for every file read, a sparse index (the offset of every
:data:`CHECKPOINT`-th line) is built once by scanning it and kept for the
files read most recently, so ``after=N`` costs one seek and a short read.

A torn last line. A crash (SIGKILL) can leave a file ending in part of a
line: the buffer is written out in blocks, not lines. Readers never serve
it, and :meth:`FileJobLogs.repair` cuts it off (with a
``job_log_torn_tail_truncated`` warning, as the journal does for its own
tail) when the engine starts again and records the run as interrupted, and
before anything is appended to such a file, so no later line is glued to it.

Size on disk. :attr:`FileJobLogs.disk_bytes` is the total size of the log
files: summed once by :meth:`FileJobLogs.open`, then kept up to date by
every write, repair and :meth:`FileJobLogs.delete` (``/metrics`` reads it
without touching the disk). Log retention (:mod:`engine_hub.run.log_retention`)
deletes the files of jobs that finished long ago.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any, Final

import structlog

from engine_hub.run.logs import (
    MARKER_STREAM,
    MAX_READ_LINES,
    LogPage,
    byte_cap_marker,
    byte_cap_reason,
    cut_line,
)
from shared.contract import format_time, utcnow
from shared.torn import whole_lines_end

log = structlog.get_logger("engine.joblogs")

DEFAULT_MAX_BYTES: Final = 10 * 1024 * 1024
#: Write buffer per running job.
BUFFER_BYTES: Final = 64 * 1024
#: Longest time a line waits in a buffer before it is written to its file.
FLUSH_DELAY: Final = 0.2
#: Every CHECKPOINT-th line's offset is indexed.
CHECKPOINT: Final = 256
#: How many files' indexes are kept (each is ~8 bytes per CHECKPOINT lines).
INDEX_CACHE: Final = 256
#: File name suffix of a job's log.
SUFFIX: Final = ".log"
#: ``stream`` values a line may have (the marker's is ``engine``).
STREAMS: Final = frozenset({"stdout", "stderr", MARKER_STREAM})


class _Writer:
    """The open file of a job whose run is writing, and where it stands."""

    __slots__ = ("capped", "file", "next_seq", "offsets", "size")

    def __init__(self, file: IO[bytes] | None, next_seq: int, size: int, offsets: list[int]) -> None:
        self.file = file
        self.next_seq = next_seq
        self.size = size
        self.capped = False
        self.offsets = offsets  # offset of line 1, CHECKPOINT+1, 2*CHECKPOINT+1, ...


class _FileIndex:
    __slots__ = ("end", "last_seq", "offsets", "truncated")

    def __init__(self, offsets: list[int], last_seq: int, end: int, truncated: bool) -> None:
        self.offsets = offsets
        self.last_seq = last_seq
        self.end = end
        self.truncated = truncated


class FileJobLogs:
    """Per-job log files under ``directory`` with a per-job byte cap (same interface as JobLogs)."""

    def __init__(self, directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._writers: dict[str, _Writer] = {}
        self._dirty: set[str] = set()
        self._flush_timer: asyncio.TimerHandle | None = None
        self._indexes: collections.OrderedDict[str, _FileIndex] = collections.OrderedDict()
        self._disk_bytes = 0

    @property
    def cap_reason(self) -> str:
        """Why a job's log was cut: the per-job file size cap."""
        return byte_cap_reason(self.max_bytes)

    @property
    def disk_bytes(self) -> int:
        """Total size of the job log files (including lines still in write buffers), kept without a scan."""
        return self._disk_bytes

    def open(self) -> None:
        """Create the directory (mode 0700) if needed and sum the sizes of its log files (blocking).

        Raises ``OSError``.
        """
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._disk_bytes = sum(size for _, size, _ in self.files())

    def files(self) -> Iterator[tuple[str, int, float]]:
        """Yield ``(job id, size, mtime)`` for every log file in the directory (blocking; one scan)."""
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.endswith(SUFFIX) and entry.is_file(follow_symlinks=False):
                    try:
                        stat = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # deleted meanwhile
                    yield entry.name.removesuffix(SUFFIX), stat.st_size, stat.st_mtime

    def _path(self, job_id: str) -> Path:
        # Job ids are uuids the engine made (never user input), so they are safe file names.
        return self.directory / f"{job_id}{SUFFIX}"

    def repair(self, job_id: str) -> int:
        """Cut a torn last line (left by a crash mid-write) off a job's log file; return the bytes cut.

        Logs ``job_log_torn_tail_truncated`` (warning) when it cuts. A file
        that is missing, whole or open for writing is left alone (0); one
        that cannot be read or cut is logged and left alone too (the torn
        line is still never served).
        """
        if job_id in self._writers:
            return 0
        path = self._path(job_id)
        try:
            with open(path, "r+b") as f:
                size = f.seek(0, os.SEEK_END)
                end = whole_lines_end(f, size)
                if end == size:
                    return 0
                f.truncate(end)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.error("job_log_repair_failed", job_id=job_id, error=exc.strerror or str(exc))
            return 0
        log.warning("job_log_torn_tail_truncated", job_id=job_id, offset=end, bytes=size - end)
        self._disk_bytes -= size - end
        self._indexes.pop(job_id, None)
        return size - end

    @contextlib.asynccontextmanager
    async def sweeping(self) -> AsyncIterator[bool]:
        """Log retention may always sweep: this process alone owns the directory."""
        yield True

    async def old_logs(self, cutoff: dt.datetime) -> list[tuple[str, int]]:
        """``(job id, size)`` of the files not modified since ``cutoff`` (one scan, in a worker thread)."""
        stamp = cutoff.timestamp()
        return await asyncio.to_thread(lambda: [(job, size) for job, size, mtime in self.files() if mtime < stamp])

    async def delete_log(self, job_id: str) -> int | None:
        """:meth:`delete`, for log retention."""
        return self.delete(job_id)

    def delete(self, job_id: str) -> int | None:
        """Delete a job's log file (not while its run writes); return its size, or None if there was none.

        Raises ``OSError`` when the file exists but cannot be deleted.
        """
        if job_id in self._writers:
            raise RuntimeError(f"the log of job {job_id} is open for writing")
        path = self._path(job_id)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return None
        self._disk_bytes -= size
        self._indexes.pop(job_id, None)
        return size

    def append(self, job_id: str, stream: str, text: str) -> bool:
        """Add one line to a job's log; return True when this line hit the cap (the marker was written).

        A file that cannot be written (disk full) loses output, not the run:
        the failure is logged once per job and later lines are dropped.
        """
        writer = self._writers.get(job_id)
        if writer is None:
            writer = self._start(job_id)
            if writer is None:
                return False
        if writer.capped:
            return False
        text = cut_line(text)
        at = format_time(utcnow()) or ""
        line = f"{writer.next_seq}\t{at}\t{stream}\t{text}\n".encode()
        capped = writer.size + len(line) > self.max_bytes
        if capped:
            writer.capped = True
            line = f"{writer.next_seq}\t{at}\t{MARKER_STREAM}\t{byte_cap_marker(self.max_bytes)}\n".encode()
        try:
            assert writer.file is not None  # only a capped writer has no file
            writer.file.write(line)
        except OSError as exc:
            self._fail(job_id, writer, exc)
            return False
        if writer.next_seq % CHECKPOINT == 1:
            writer.offsets.append(writer.size)
        writer.next_seq += 1
        writer.size += len(line)
        self._disk_bytes += len(line)
        self._dirty.add(job_id)
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush_dirty)
        return capped

    def _flush_dirty(self) -> None:
        self._flush_timer = None
        dirty, self._dirty = self._dirty, set()
        for job_id in dirty:
            self.flush(job_id)

    def _start(self, job_id: str) -> _Writer | None:
        path = self._path(job_id)
        self.repair(job_id)  # a torn line left by a crash would otherwise swallow the first new one
        try:
            file = open(path, "ab", buffering=BUFFER_BYTES)  # noqa: SIM115 - lives as long as the run
        except OSError as exc:
            log.error("job_log_unwritable", job_id=job_id, path=str(path), error=exc.strerror or str(exc))
            writer = self._writers[job_id] = _Writer(None, 1, 0, [])
            writer.capped = True  # output of this run is dropped; the run itself goes on
            return None
        size = file.tell()
        if size:
            # A job runs once, so an existing file is left by a crash mid-run: continue its numbering.
            index = self._index(job_id)
            writer = _Writer(file, index.last_seq + 1 if index else 1, size, list(index.offsets) if index else [])
        else:
            writer = _Writer(file, 1, 0, [])
        self._indexes.pop(job_id, None)
        self._writers[job_id] = writer
        return writer

    def _fail(self, job_id: str, writer: _Writer, exc: OSError) -> None:
        log.error("job_log_write_failed", job_id=job_id, error=exc.strerror or str(exc))
        writer.capped = True  # stop trying for this run; the journal is unaffected

    def flush(self, job_id: str) -> None:
        """Write out a running job's buffered lines (readers call this first)."""
        writer = self._writers.get(job_id)
        if writer is not None and writer.file is not None:
            try:
                writer.file.flush()
            except OSError as exc:
                self._fail(job_id, writer, exc)

    async def finish(self, job_id: str) -> None:
        """The run is over: write out and close its file."""
        self._finish(job_id)

    def _finish(self, job_id: str) -> None:
        writer = self._writers.pop(job_id, None)
        if writer is not None and writer.file is not None:
            try:
                writer.file.close()
            except OSError as exc:
                log.error("job_log_write_failed", job_id=job_id, error=exc.strerror or str(exc))
                return
            self._cache(job_id, _FileIndex(writer.offsets, writer.next_seq - 1, writer.size, writer.capped))

    def _cache(self, job_id: str, index: _FileIndex) -> None:
        self._indexes[job_id] = index
        self._indexes.move_to_end(job_id)
        if len(self._indexes) > INDEX_CACHE:
            self._indexes.popitem(last=False)

    async def close(self) -> None:
        """Write out and close every open file (engine shutdown)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        for job_id in list(self._writers):
            self._finish(job_id)

    async def read(self, job_id: str, *, after: int = 0, limit: int = MAX_READ_LINES) -> LogPage:
        """Return up to ``limit`` lines with ``seq > after``, oldest first (see :class:`LogPage`).

        The file is read on the event loop (no thread hop): a page costs one seek and a short read.
        """
        return self._read(job_id, after, limit)

    def _read(self, job_id: str, after: int, limit: int) -> LogPage:
        writer = self._writers.get(job_id)
        if writer is not None:
            self.flush(job_id)
            index = _FileIndex(writer.offsets, writer.next_seq - 1, writer.size, writer.capped)
        else:
            found = self._index(job_id)
            if found is None:
                return LogPage(lines=[], next=0, truncated=False)
            index = found
        last = index.last_seq
        if after >= last:
            return LogPage(lines=[], next=last, truncated=index.truncated)
        block = after // CHECKPOINT
        if block >= len(index.offsets):
            return LogPage(lines=[], next=last, truncated=index.truncated)
        seq = block * CHECKPOINT + 1
        lines: list[dict[str, Any]] = []
        try:
            with open(self._path(job_id), "rb") as f:
                f.seek(index.offsets[block])
                remaining = index.end - index.offsets[block]
                for raw in f:
                    remaining -= len(raw)
                    if remaining < 0 or not raw.endswith(b"\n"):
                        break
                    if seq > after:
                        lines.append(_parse(raw, seq))
                        if len(lines) >= limit:
                            break
                    seq += 1
        except OSError as exc:
            log.error("job_log_unreadable", job_id=job_id, error=exc.strerror or str(exc))
        return LogPage(lines=lines, next=lines[-1]["seq"] if lines else last, truncated=index.truncated)

    def _index(self, job_id: str) -> _FileIndex | None:
        index = self._indexes.get(job_id)
        if index is not None:
            self._indexes.move_to_end(job_id)
            return index
        try:
            with open(self._path(job_id), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("job_log_unreadable", job_id=job_id, error=exc.strerror or str(exc))
            return None
        end = data.rfind(b"\n") + 1  # a torn last line (a crash mid-write) is not a line
        offsets: list[int] = []
        pos, seq, last_start = 0, 0, 0
        while pos < end:
            if seq % CHECKPOINT == 0:
                offsets.append(pos)
            last_start = pos
            pos = data.index(b"\n", pos) + 1
            seq += 1
        # The marker can only be the last line: nothing is written after it.
        truncated = seq > 0 and data[last_start:end].split(b"\t", 3)[2:3] == [MARKER_STREAM.encode()]
        index = _FileIndex(offsets, seq, end, truncated)
        self._cache(job_id, index)
        return index


def _parse(raw: bytes, seq: int) -> dict[str, Any]:
    parts = raw[:-1].decode(errors="replace").split("\t", 3)
    if len(parts) != 4:
        return {"seq": seq, "at": "", "stream": MARKER_STREAM, "text": "[unreadable log line]"}
    return {"seq": seq, "at": parts[1], "stream": parts[2], "text": parts[3]}
