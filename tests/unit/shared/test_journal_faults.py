"""The file journal fails closed on real write faults and recovers without a restart.

Disk full is real: a 256 KiB tmpfs mounted for the test (needs root, which
CI and the dev machines are; skipped elsewhere). An I/O error from fsync
cannot be caused for real without a faulty device, so it is injected at the
OS boundary through the writer's :class:`OsFiles` seam; the journal itself
is the real one.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from pathlib import Path

from structlog.testing import capture_logs

from shared.journal.chain import JournalUnavailable, Record
from shared.journal.file import FileJournal
from shared.journal.format import list_segments
from shared.journal.tools import verify
from shared.journal.writer import OsFiles
from tests.disk import fill

BIG = {"blob": "x" * 600}  # big enough that a batch cannot fit in a page's slack


async def append_big(journal: FileJournal, n: int) -> list[Record | BaseException]:
    """Append ``n`` large records concurrently, returning results or exceptions."""
    return list(
        await asyncio.gather(
            *(
                journal.append(action="job_created", actor="alice", source="10.0.0.1", job_id=f"j{i}", data=BIG)
                for i in range(n)
            ),
            return_exceptions=True,
        )
    )


class TestDiskFull:
    async def test_disk_full_fails_closed_then_recovers_without_reopening(self, tiny_fs: Path) -> None:
        """ENOSPC: every waiting append fails, nothing is written, health drops; freeing space heals it."""
        journal = FileJournal.open(tiny_fs / "journal")
        list(journal.replay())
        good = await append_big(journal, 5)
        head, seg = journal.head, list_segments(tiny_fs / "journal")[0].path
        size = seg.stat().st_size
        filler = fill(tiny_fs)

        with capture_logs() as logs:
            failed = await append_big(journal, 20)
        assert all(isinstance(r, JournalUnavailable) for r in failed)
        assert not journal.healthy
        assert (journal.head, journal.last_seq) == (head, 5)
        assert seg.stat().st_size == size  # a partial write was cut back
        errors = [e for e in logs if e["event"] == "journal_write_failed"]
        assert errors and errors[0]["log_level"] == "error" and errors[0]["errno"] == errno.ENOSPC
        assert await journal.write_snapshot({"x": "y" * 10_000}, seq=5, head=head) is None

        filler.unlink()
        recovered = await append_big(journal, 3)
        assert journal.healthy
        assert [r.seq for r in recovered if isinstance(r, Record)] == [6, 7, 8]
        assert isinstance(recovered[0], Record) and recovered[0].prev == head
        await journal.close()

        journal = FileJournal.open(tiny_fs / "journal")
        assert list(journal.replay()) == good + recovered
        await journal.close()
        assert verify(tiny_fs / "journal").ok


class FlakyFiles(OsFiles):
    """Real OS calls, except that fsync (and optionally truncate) can be made to fail with EIO."""

    def __init__(self) -> None:
        self.fail_sync = False
        self.fail_truncate = False
        self.hold = threading.Event()
        self.hold.set()
        self.in_sync = threading.Event()

    def sync(self, fd: int) -> None:
        """fsync, or EIO while ``fail_sync`` (after waiting for ``hold``)."""
        self.in_sync.set()
        self.hold.wait(10)
        if self.fail_sync:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().sync(fd)

    def truncate(self, fd: int, size: int) -> None:
        """ftruncate, or EIO while ``fail_truncate``."""
        if self.fail_truncate:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().truncate(fd, size)


async def wait_for(condition: threading.Event, timeout: float = 5.0) -> None:
    """Poll a thread event from the loop without blocking it."""
    deadline = time.monotonic() + timeout
    while not condition.is_set():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


class TestIoError:
    async def test_fsync_error_fails_the_batch_and_every_append_queued_behind_it(self, tmp_path: Path) -> None:
        """Appends chained on a failed batch fail too; the next append reuses the rolled-back seq."""
        files = FlakyFiles()
        journal = FileJournal.open(tmp_path / "j", files=files)
        list(journal.replay())
        await append_big(journal, 2)
        seg = list_segments(tmp_path / "j")[0].path
        size = seg.stat().st_size
        files.fail_sync = True
        files.hold.clear()
        files.in_sync.clear()
        first = asyncio.ensure_future(append_big(journal, 1))
        await wait_for(files.in_sync)  # the first batch is now inside fsync
        queued = asyncio.ensure_future(append_big(journal, 4))
        await asyncio.sleep(0)
        files.hold.set()
        results = await first + await queued
        assert all(isinstance(r, JournalUnavailable) for r in results)
        assert seg.stat().st_size == size and journal.last_seq == 2

        files.fail_sync = False
        again = await append_big(journal, 1)
        assert isinstance(again[0], Record) and again[0].seq == 3 and journal.healthy
        await journal.close()
        assert verify(tmp_path / "j").count == 3

    async def test_when_even_the_cut_back_fails_the_next_write_cuts_first(self, tmp_path: Path) -> None:
        """If truncating after a failed fsync fails, the file is reopened and cut before the next write."""
        files = FlakyFiles()
        journal = FileJournal.open(tmp_path / "j", files=files)
        list(journal.replay())
        await append_big(journal, 2)
        files.fail_sync = files.fail_truncate = True
        assert isinstance((await append_big(journal, 3))[0], JournalUnavailable)
        seg = list_segments(tmp_path / "j")[0].path
        assert b'"jobId":"j2"' in seg.read_bytes()  # the failed batch's bytes are still there

        files.fail_truncate = True
        files.fail_sync = False
        assert isinstance((await append_big(journal, 1))[0], JournalUnavailable)  # cannot cut: refuse
        files.fail_truncate = False
        ok = await append_big(journal, 1)
        assert isinstance(ok[0], Record) and ok[0].seq == 3
        await journal.close()
        result = verify(tmp_path / "j")
        assert result.ok and result.count == 3 and result.head == ok[0].hash
