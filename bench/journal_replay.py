"""Journal benchmark: start-up replay of 1,000,000 records and group-commit append throughput.

    .venv/bin/python -m bench.journal_replay [--records 1000000] [--dir DIR]

1. Generates a journal of engine-like records (job_created, run_requested,
   job_finished, about 280 bytes a line) by writing segment files directly
   with the library's record builder (not one fsync per record), plus a
   snapshot of a job-status map taken 1,000 records before the end.
2. Times ``FileJournal.open`` + full ``replay`` (records applied to a dict
   of jobs) with the snapshot (target < 2 s) and without it (target < 15 s).
3. Times ``audit verify`` over the whole journal.
4. Times appends from 64 concurrent appenders with fsync (group commit),
   without fsync, and to a MemoryJournal, and reports fsyncs per append.

Prints a Markdown table for ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from shared.journal.chain import GENESIS, MemoryJournal, Record, canonical_json, make_record_line
from shared.journal.file import DEFAULT_SEGMENT_BYTES, FileJournal
from shared.journal.format import segment_name
from shared.journal.snapshot import write_snapshot_file
from shared.journal.tools import verify

SNAPSHOT_GAP = 1_000


def engine_like(i: int) -> dict[str, Any]:
    """The i-th record of a create → run → finish cycle, with small realistic data."""
    job = f"{i // 3:08x}-5c1e-4b7a-9d3e-7f2a1c0b{i // 3 % 10000:04d}"
    kind = i % 3
    if kind == 0:
        return {
            "action": "job_created",
            "job_id": job,
            "actor": "alice",
            "source": "10.20.30.40",
            "data": {"type": "db_backup", "params": {"db": "orders", "full": i % 2 == 0}, "status": "READY"},
        }
    if kind == 1:
        return {
            "action": "run_requested",
            "job_id": job,
            "actor": "alice",
            "source": "10.20.30.40",
            "data": {"before": "READY", "after": "RUNNING"},
        }
    return {
        "action": "job_finished",
        "job_id": job,
        "actor": "system",
        "source": "engine",
        "data": {"before": "RUNNING", "after": "DONE", "exitCode": 0, "reason": None},
    }


def apply(jobs: dict[str, str], rec: Record) -> None:
    """What an owner does per record, roughly: update the job's status."""
    if rec.job_id is not None:
        jobs[rec.job_id] = rec.data.get("after") or rec.data.get("status") or "?"


def generate(directory: Path, records: int) -> tuple[int, float]:
    """Write ``records`` records in 64 MiB segments and a snapshot; return (bytes, seconds)."""
    start = time.perf_counter()
    directory.mkdir(parents=True)
    prev, seq, size, total = GENESIS, 1, 0, 0
    jobs: dict[str, str] = {}
    out = open(directory / segment_name(1), "wb")  # noqa: SIM115 (swapped for the next segment mid-loop)
    at = "2025-01-01T00:00:00.000Z"
    buf: list[bytes] = []
    for i in range(records):
        rec, line = make_record_line(seq=seq, prev=prev, at=at, **engine_like(i))
        if size + len(line) > DEFAULT_SEGMENT_BYTES:
            out.writelines(buf)
            buf = []
            out.close()
            out = open(directory / segment_name(seq), "wb")  # noqa: SIM115 (closed after the loop)
            size = 0
        buf.append(line)
        size += len(line)
        total += len(line)
        prev, seq = rec.hash, seq + 1
        apply(jobs, rec)
        if rec.seq == records - SNAPSHOT_GAP:
            write_snapshot_file(
                directory, seq=rec.seq, head=rec.hash, at=at, state_bytes=canonical_json({"jobs": jobs})
            )
    out.writelines(buf)
    out.close()
    return total, time.perf_counter() - start


def timed_open(directory: Path) -> tuple[float, int, int | None]:
    """Open and replay, applying records; return (seconds, records replayed, snapshot seq)."""
    start = time.perf_counter()
    journal = FileJournal.open(directory)
    jobs: dict[str, str] = {}
    if journal.snapshot is not None:
        jobs = journal.snapshot.state["jobs"]
    n = 0
    for rec in journal.replay():
        apply(jobs, rec)
        n += 1
    elapsed = time.perf_counter() - start
    snap = journal.snapshot.seq if journal.snapshot else None
    asyncio.run(journal.close())
    return elapsed, n, snap


async def append_rate(journal: Any, total: int, writers: int) -> float:
    """Appends per second with ``writers`` concurrent appenders doing ``total`` appends in all."""

    async def writer(w: int) -> None:
        for i in range(total // writers):
            await journal.append(**engine_like(w * 1_000_000 + i))

    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return total / (time.perf_counter() - start)


async def appends(directory: Path, total: int, writers: int) -> list[tuple[str, float, str]]:
    """Compare durable, unsynced and in-memory appends."""
    rows = []
    for label, fsync in (("file journal, fsync (group commit)", True), ("file journal, no fsync", False)):
        path = directory / f"append-{fsync}"
        journal = FileJournal.open(path, fsync=fsync)
        list(journal.replay())
        rate = await append_rate(journal, total, writers)
        detail = (
            f"{journal.stats.batches} batches, {journal.stats.fsyncs} fsyncs "
            f"({journal.stats.appends / max(journal.stats.batches, 1):.1f} records each)"
        )
        await journal.close()
        rows.append((label, rate, detail))
    rows.append(("memory journal", await append_rate(MemoryJournal(), total, writers), "-"))
    # Without concurrency every append pays a whole fsync: what group commit saves.
    journal = FileJournal.open(directory / "append-serial")
    list(journal.replay())
    rate = await append_rate(journal, total // 20, 1)
    rows.append(("file journal, fsync, ONE appender", rate, f"{journal.stats.fsyncs} fsyncs, 1 per record"))
    await journal.close()
    return rows


def main() -> None:
    """Run the benchmark and print the results table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="journal-bench-", dir=args.dir))
    try:
        directory = work / "journal"
        size, gen = generate(directory, args.records)
        snap_file = next((directory / "snapshots").iterdir())
        with_snap = timed_open(directory)
        stashed = work / snap_file.name
        snap_file.rename(stashed)
        os.sync()
        without = timed_open(directory)
        start = time.perf_counter()
        checked = verify(directory)
        verify_time = time.perf_counter() - start
        assert checked.ok and checked.count == args.records, checked
        rate_rows = asyncio.run(appends(work, args.appends, args.writers))
        print(
            f"journal: {args.records:,} records, {size / 2**20:.0f} MiB in "
            f"{len(list(directory.glob('segment-*')))} segments, generated in {gen:.1f} s; "
            f"snapshot {stashed.stat().st_size / 2**20:.1f} MiB\n"
        )
        print("| measurement | result | target |")
        print("|---|---|---|")
        print(
            f"| open + replay, snapshot at seq {with_snap[2]:,} ({with_snap[1]:,} records replayed) "
            f"| {with_snap[0]:.2f} s | < 2 s |"
        )
        print(f"| open + replay, no snapshot ({without[1]:,} records) | {without[0]:.2f} s | < 15 s |")
        print(f"| `audit verify` (strict: hashes, links and canonical form) | {verify_time:.2f} s | - |")
        for label, rate, detail in rate_rows:
            who = "1 appender" if "ONE" in label else f"{args.writers} concurrent appenders"
            print(f"| append, {who}, {label.replace(', ONE appender', '')} | {rate:,.0f} /s | {detail} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
