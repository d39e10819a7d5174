"""FileJournal on real files with real fsync: append, group commit, replay, snapshots, prune."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from shared.journal.chain import GENESIS, AuditQuery, JournalCorrupt, JournalLocked, Record
from shared.journal.file import FileJournal
from shared.journal.format import list_segments, segment_name
from shared.journal.tools import verify


def opened(directory: Path, **kw: Any) -> tuple[FileJournal, list[Record]]:
    """Open and fully replay a journal; return it and the replayed records."""
    journal = FileJournal.open(directory, **kw)
    return journal, list(journal.replay())


async def add(journal: FileJournal, n: int, *, start: int = 0) -> list[Record]:
    """Append ``n`` engine-like records concurrently (call order = seq order)."""
    return list(
        await asyncio.gather(
            *(
                journal.append(
                    action="job_created", actor="alice", source="10.0.0.1", job_id=f"job-{i % 5}", data={"i": i}
                )
                for i in range(start, start + n)
            )
        )
    )


def apply(state: dict[str, Any], rec: Record) -> None:
    """A toy owner: count records per job and remember the last data."""
    job = state.setdefault(rec.job_id or "-", {"n": 0})
    job["n"] += 1
    job["last"] = rec.data


class TestAppendAndReopen:
    async def test_round_trip_keeps_every_record_and_the_chain(self, tmp_path: Path) -> None:
        """Records appended and durable come back identical, chained, after reopening."""
        journal, replayed = opened(tmp_path / "j")
        assert replayed == [] and journal.head == GENESIS
        written = await add(journal, 10)
        await journal.close()
        journal, replayed = opened(tmp_path / "j")
        assert replayed == written
        assert [r.seq for r in replayed] == list(range(1, 11))
        assert all(b.prev == a.hash for a, b in itertools.pairwise(replayed))
        assert journal.head == written[-1].hash and journal.last_seq == 10
        more = await add(journal, 1)
        assert more[0].seq == 11 and more[0].prev == written[-1].hash
        await journal.close()

    async def test_append_before_replay_is_refused(self, tmp_path: Path) -> None:
        """Appending before the chain head is known would fork the chain."""
        journal = FileJournal.open(tmp_path / "j")
        with pytest.raises(RuntimeError):
            await journal.append(action="a", actor="b", source="c", job_id=None, data={})
        await journal.close()

    async def test_second_open_of_the_same_directory_is_locked_out(self, tmp_path: Path) -> None:
        """Two writers on one journal would interleave chains; the second one is refused."""
        journal, _ = opened(tmp_path / "j")
        with pytest.raises(JournalLocked):
            FileJournal.open(tmp_path / "j")
        await journal.close()
        other, _ = opened(tmp_path / "j")
        await other.close()

    async def test_non_json_data_is_rejected_without_using_a_seq(self, tmp_path: Path) -> None:
        """A record that cannot be serialised fails at once and leaves the chain as it was."""
        journal, _ = opened(tmp_path / "j")
        with pytest.raises(ValueError, match="not JSON compliant"):
            await journal.append(action="a", actor="b", source="c", job_id=None, data={"x": float("nan")})
        rec = (await add(journal, 1))[0]
        assert rec.seq == 1 and rec.prev == GENESIS
        await journal.close()

    async def test_segments_rotate_by_size_and_are_named_by_first_seq(self, tmp_path: Path) -> None:
        """Small segments rotate; each name carries its first seq and replay spans them all."""
        journal, _ = opened(tmp_path / "j", segment_bytes=2000)
        written = []
        for i in range(40):  # one by one, so batches are small and rotation is exercised often
            written += await add(journal, 1, start=i)
        await journal.close()
        segments = list_segments(tmp_path / "j")
        assert len(segments) > 3
        for seg in segments:
            first = json.loads(seg.path.read_bytes().split(b"\n")[0])
            assert seg.name == segment_name(first["seq"])
        _, replayed = opened(tmp_path / "j", segment_bytes=2000)
        assert replayed == written


class TestGroupCommit:
    async def test_concurrent_appends_share_fsyncs_and_all_become_durable(self, tmp_path: Path) -> None:
        """200 concurrent appends cost fewer fsyncs than appends; all are durable, in call order."""
        journal, _ = opened(tmp_path / "j")
        written = await add(journal, 200)
        assert [r.seq for r in written] == list(range(1, 201))
        assert journal.stats.appends == 200
        assert journal.fsync_count < 200
        assert journal.fsync_count == journal.stats.batches
        await journal.close()
        _, replayed = opened(tmp_path / "j")
        assert replayed == written

    async def test_appends_during_an_fsync_join_the_next_batch(self, tmp_path: Path) -> None:
        """Appends issued while a batch is being synced are written together in the next one."""
        journal, _ = opened(tmp_path / "j")
        first = asyncio.ensure_future(journal.append(action="a", actor="x", source="s", job_id=None, data={}))
        await asyncio.sleep(0)  # the flusher takes the first record alone
        rest = [
            asyncio.ensure_future(journal.append(action="b", actor="x", source="s", job_id=None, data={"i": i}))
            for i in range(50)
        ]
        await asyncio.gather(first, *rest)
        assert journal.stats.batches == 2
        await journal.close()


class TestWriterThread:
    async def test_appends_do_not_wait_for_the_default_thread_pool(self, tmp_path: Path) -> None:
        """With every thread of asyncio's default pool blocked, an append is still made durable."""
        journal, _ = opened(tmp_path / "j")
        gate = threading.Event()
        loop = asyncio.get_running_loop()
        # More blocked jobs than the default pool has threads (at most 32): its queue is not drained.
        blocked = [loop.run_in_executor(None, gate.wait, 30.0) for _ in range(40)]
        try:
            written = await asyncio.wait_for(add(journal, 3), timeout=10)
        finally:
            gate.set()
            await asyncio.gather(*blocked)
        assert [r.seq for r in written] == [1, 2, 3]
        await journal.close()


class TestTornTail:
    async def test_partial_last_line_is_cut_with_a_warning(self, tmp_path: Path) -> None:
        """A write torn by a crash is removed at start, logged, and the chain goes on."""
        journal, _ = opened(tmp_path / "j")
        written = await add(journal, 5)
        await journal.close()
        seg = list_segments(tmp_path / "j")[0].path
        good = seg.stat().st_size
        with open(seg, "ab") as f:
            f.write(b'{"hash":"abc123","action":"job_cre')
        with capture_logs() as logs:
            journal, replayed = opened(tmp_path / "j")
        assert replayed == written
        assert seg.stat().st_size == good
        torn = [e for e in logs if e["event"] == "journal_torn_tail_truncated"]
        assert torn and torn[0]["log_level"] == "warning" and torn[0]["line"] == 6
        rec = (await add(journal, 1))[0]
        assert rec.seq == 6 and rec.prev == written[-1].hash
        await journal.close()

    async def test_unparsable_complete_last_line_is_cut_too(self, tmp_path: Path) -> None:
        """Garbage that reached the disk as the final line (e.g. zero fill) is a torn tail."""
        journal, _ = opened(tmp_path / "j")
        written = await add(journal, 3)
        await journal.close()
        seg = list_segments(tmp_path / "j")[0].path
        with open(seg, "ab") as f:
            f.write(b"\x00\x00\x00\x00\n")
        journal, replayed = opened(tmp_path / "j")
        assert replayed == written
        await journal.close()


class TestCorruption:
    async def _journal(self, directory: Path, n: int = 10, **kw: Any) -> list[Record]:
        journal, _ = opened(directory, **kw)
        written = await add(journal, n)
        await journal.close()
        return written

    def _rewrite_line(self, seg: Path, index: int, old: bytes, new: bytes) -> None:
        lines = seg.read_bytes().split(b"\n")
        assert old in lines[index]
        lines[index] = lines[index].replace(old, new, 1)
        seg.write_bytes(b"\n".join(lines))

    async def test_altered_record_in_the_middle_stops_the_start_naming_it(self, tmp_path: Path) -> None:
        """One changed byte mid-journal raises JournalCorrupt with segment, line, seq and the verify hint."""
        await self._journal(tmp_path / "j")
        seg = list_segments(tmp_path / "j")[0].path
        self._rewrite_line(seg, 3, b'"actor":"alice"', b'"actor":"alicf"')
        journal = FileJournal.open(tmp_path / "j", prog="admin-gateway")
        with pytest.raises(JournalCorrupt) as err:
            list(journal.replay())
        assert (err.value.segment, err.value.line, err.value.seq) == (seg.name, 4, 4)
        assert "hash mismatch" in str(err.value)
        assert "admin-gateway audit verify" in str(err.value)
        await journal.close()

    async def test_unparsable_line_before_the_tail_is_corruption_not_a_torn_tail(self, tmp_path: Path) -> None:
        """Only the very last line may be torn; garbage followed by records is corruption."""
        await self._journal(tmp_path / "j")
        seg = list_segments(tmp_path / "j")[0].path
        lines = seg.read_bytes().split(b"\n")
        lines[7] = lines[7][:40]
        seg.write_bytes(b"\n".join(lines))
        journal = FileJournal.open(tmp_path / "j")
        with pytest.raises(JournalCorrupt) as err:
            list(journal.replay())
        assert err.value.line == 8 and err.value.seq is None
        await journal.close()

    async def test_torn_line_in_an_older_segment_is_corruption(self, tmp_path: Path) -> None:
        """A segment that was complete when the next one started cannot have a torn tail."""
        journal, _ = opened(tmp_path / "j", segment_bytes=1000)
        for i in range(12):
            await add(journal, 1, start=i)
        await journal.close()
        first = list_segments(tmp_path / "j")[0].path
        first.write_bytes(first.read_bytes()[:-30])
        journal = FileJournal.open(tmp_path / "j")
        with pytest.raises(JournalCorrupt) as err:
            list(journal.replay())
        assert err.value.segment == first.name
        await journal.close()

    async def test_deleted_segment_is_detected_at_start(self, tmp_path: Path) -> None:
        """Removing a whole middle segment shows as a gap between segment names and the chain."""
        journal, _ = opened(tmp_path / "j", segment_bytes=1000)
        for i in range(12):
            await add(journal, 1, start=i)
        await journal.close()
        segments = list_segments(tmp_path / "j")
        segments[1].path.unlink()
        journal = FileJournal.open(tmp_path / "j")
        with pytest.raises(JournalCorrupt) as err:
            list(journal.replay())
        assert err.value.segment == segments[2].name and "missing" in str(err.value)
        await journal.close()


class TestSnapshots:
    async def test_snapshot_plus_tail_equals_full_replay(self, tmp_path: Path) -> None:
        """Restoring the snapshot and replaying the tail rebuilds exactly the full-replay state."""
        journal, _ = opened(tmp_path / "j", segment_bytes=3000)
        state: dict[str, Any] = {}
        for rec in await add(journal, 30):
            apply(state, rec)
        snap = await journal.write_snapshot(state, seq=journal.last_seq, head=journal.head)
        assert snap is not None and snap.seq == 30
        for i in range(30, 45):
            for rec in await add(journal, 1, start=i):
                apply(state, rec)
        await journal.close()

        journal, tail = opened(tmp_path / "j")
        assert journal.snapshot is not None and journal.snapshot.seq == 30
        assert [r.seq for r in tail] == list(range(31, 46))
        rebuilt = journal.snapshot.state
        for rec in tail:
            apply(rebuilt, rec)
        await journal.close()

        (tmp_path / "j" / "snapshots" / "snapshot-000000000030.json").unlink()
        journal, everything = opened(tmp_path / "j")
        assert journal.snapshot is None and len(everything) == 45
        full: dict[str, Any] = {}
        for rec in everything:
            apply(full, rec)
        assert rebuilt == full == state
        await journal.close()

    async def test_snapshot_must_cover_only_durable_records(self, tmp_path: Path) -> None:
        """A snapshot claiming a seq past the durable head (or the wrong head) is refused."""
        journal, _ = opened(tmp_path / "j")
        await add(journal, 3)
        with pytest.raises(ValueError, match="is not durable"):
            await journal.write_snapshot({}, seq=4, head=journal.head)
        with pytest.raises(ValueError, match="head does not match"):
            await journal.write_snapshot({}, seq=3, head=GENESIS)
        await journal.close()

    async def test_damaged_newest_snapshot_falls_back_to_the_older_one(self, tmp_path: Path) -> None:
        """A torn newest snapshot is skipped with a warning; the older one plus a longer tail is used."""
        journal, _ = opened(tmp_path / "j")
        await add(journal, 5)
        await journal.write_snapshot({"at": 5}, seq=5, head=journal.head)
        await add(journal, 5, start=5)
        await journal.write_snapshot({"at": 10}, seq=10, head=journal.head)
        await journal.close()
        newest = tmp_path / "j" / "snapshots" / "snapshot-000000000010.json"
        newest.write_bytes(newest.read_bytes()[:-5])
        with capture_logs() as logs:
            journal, tail = opened(tmp_path / "j")
        assert journal.snapshot is not None and journal.snapshot.state == {"at": 5}
        assert [r.seq for r in tail] == list(range(6, 11))
        assert any(e["event"] == "journal_snapshot_invalid" for e in logs)
        await journal.close()

    async def test_snapshot_ahead_of_a_truncated_journal_stops_the_start(self, tmp_path: Path) -> None:
        """Records a snapshot covers must still be in the journal: lost records are not silently ignored."""
        journal, _ = opened(tmp_path / "j")
        await add(journal, 8)
        await journal.write_snapshot({}, seq=8, head=journal.head)
        await journal.close()
        seg = list_segments(tmp_path / "j")[0].path
        lines = seg.read_bytes().split(b"\n")
        seg.write_bytes(b"\n".join(lines[:6]) + b"\n")
        journal = FileJournal.open(tmp_path / "j")
        with pytest.raises(JournalCorrupt) as err:
            list(journal.replay())
        assert err.value.seq == 8 and "truncated" in str(err.value)
        await journal.close()

    async def test_only_the_two_newest_snapshots_are_kept(self, tmp_path: Path) -> None:
        """Old snapshots are removed as new ones are written."""
        journal, _ = opened(tmp_path / "j")
        for i in range(4):
            await add(journal, 1, start=i)
            await journal.write_snapshot({"i": i}, seq=journal.last_seq, head=journal.head)
        await journal.close()
        names = sorted(p.name for p in (tmp_path / "j" / "snapshots").iterdir())
        assert names == ["snapshot-000000000003.json", "snapshot-000000000004.json"]


class TestPrune:
    async def _old_journal(self, directory: Path) -> FileJournal:
        """A journal with several segments and a snapshot covering the first ones."""
        journal, _ = opened(directory, segment_bytes=1000, retention_days=30)
        for i in range(20):
            await add(journal, 1, start=i)
        return journal

    async def test_prune_never_deletes_segments_no_snapshot_covers(self, tmp_path: Path) -> None:
        """Without snapshots nothing goes, however old; with one, only what it covers goes."""
        journal = await self._old_journal(tmp_path / "j")
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
        assert await journal.prune(now=later) == []
        before = list_segments(tmp_path / "j")
        await journal.write_snapshot({}, seq=7, head=next(r for r in journal.recent() if r.seq == 7).hash)
        await journal.write_snapshot({}, seq=journal.last_seq, head=journal.head)
        removed = await journal.prune(now=later)
        remaining = list_segments(tmp_path / "j")
        assert removed and len(remaining) == len(before) - len(removed)
        # Everything left after the prune starts at or before the oldest snapshot's next record.
        assert remaining[0].first_seq <= 8
        await journal.close()

    async def test_prune_keeps_segments_younger_than_retention(self, tmp_path: Path) -> None:
        """Covered but recent segments are kept for audit."""
        journal = await self._old_journal(tmp_path / "j")
        await journal.write_snapshot({}, seq=journal.last_seq, head=journal.head)
        await journal.write_snapshot({}, seq=journal.last_seq, head=journal.head)
        assert await journal.prune() == []
        await journal.close()

    async def test_pruned_journal_still_opens_from_its_snapshot(self, tmp_path: Path) -> None:
        """After pruning, a start uses the snapshot and replays the kept tail."""
        journal = await self._old_journal(tmp_path / "j")
        await journal.write_snapshot({"k": 1}, seq=journal.last_seq, head=journal.head)
        await journal.write_snapshot({"k": 2}, seq=journal.last_seq, head=journal.head)
        await add(journal, 3, start=100)
        removed = await journal.prune(now=dt.datetime.now(dt.UTC) + dt.timedelta(days=31))
        assert removed
        await journal.close()
        journal, tail = opened(tmp_path / "j")
        assert journal.snapshot is not None and [r.seq for r in tail] == [21, 22, 23]
        await journal.close()
        result = verify(tmp_path / "j")  # the logged prune explains the missing start
        assert result.ok and result.first_seq > 1 and result.last_seq == 23


class TestQuery:
    async def test_query_reaches_past_memory_into_the_files(self, tmp_path: Path) -> None:
        """With a tiny in-memory window, older matches are read back from disk, newest first."""
        journal, _ = opened(tmp_path / "j", recent_limit=5, segment_bytes=2000)
        for i in range(40):
            await add(journal, 1, start=i)
        assert len(journal.recent()) == 5
        found = await journal.query(AuditQuery(job_id="job-2", limit=100))
        assert [r.seq for r in found] == [38, 33, 28, 23, 18, 13, 8, 3]
        page = await journal.query(AuditQuery(job_id="job-2", limit=3, before=28))
        assert [r.seq for r in page] == [23, 18, 13]
        assert await journal.query(AuditQuery(actor="bob")) == []
        await journal.close()

    async def test_query_time_bounds(self, tmp_path: Path) -> None:
        """since is inclusive, until exclusive."""
        journal, _ = opened(tmp_path / "j", recent_limit=2)
        recs = await add(journal, 6)
        at = dt.datetime.fromisoformat(recs[0].at.replace("Z", "+00:00"))
        found = await journal.query(AuditQuery(since=at, until=at + dt.timedelta(days=1)))
        assert [r.seq for r in found] == [r.seq for r in reversed(recs) if r.at >= recs[0].at]
        assert await journal.query(AuditQuery(until=at)) == [r for r in reversed(recs) if r.at < recs[0].at]
        await journal.close()
