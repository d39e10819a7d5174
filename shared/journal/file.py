"""The durable journal: hash-chained JSON Lines in segment files, with group commit.

Life cycle of a :class:`FileJournal`::

    journal = FileJournal.open(data_dir / "journal", prog="engine-hub")
    snapshot = journal.snapshot            # the newest valid snapshot, or None
    state = dict(snapshot.state) if snapshot is not None else {}
    for record in journal.replay():        # the records after it, verified as they are read
        ...                                # fold record into state
    record = await journal.append(action="job_created", actor="admin", source="127.0.0.1",
                                  job_id=None, data={})   # durable when it returns
    await journal.write_snapshot(state, seq=journal.last_seq, head=journal.head)
    await journal.close()

(The engine does exactly this in ``engine_hub.http.app.restore`` and
``engine_hub.store.snapshots``.)

Durability and ordering. ``append`` assigns seq and ``prev`` synchronously,
so records are chained in call order. The bytes are written by one worker
thread; every append that arrives while a write is in flight (or in the same
loop iteration) joins the next batch, and a batch costs one ``write`` and one
``fdatasync`` (group commit). An append returns only after its batch is synced.
That thread is the journal's own, not one of asyncio's default pool: work
queued there by others (password hashing in the gateway) must not hold up
an append.

Failing closed. If a batch cannot be written or synced, every append waiting
on it or queued behind it raises :class:`JournalUnavailable`, the chain head
rolls back to the last durable record, the segment is cut back to its last
durable offset, :attr:`healthy` turns false and ``journal_write_failed`` is
logged at ERROR. The next append simply tries again; when it succeeds the
journal is healthy again (``journal_recovered``), without a restart.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime as dt
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import structlog

from shared.contract import format_time, utcnow
from shared.journal.chain import (
    GENESIS,
    AuditQuery,
    JournalCorrupt,
    JournalLocked,
    JournalUnavailable,
    Record,
    Snapshot,
    canonical_json,
    make_record_line,
    query_newest_first,
)
from shared.journal.format import (
    LOCK_FILE,
    ChainBroken,
    ChainWalker,
    LineError,
    SegmentInfo,
    find_record_line,
    list_segments,
    parse_line,
    segment_index_for,
)
from shared.journal.snapshot import sync_dir, valid_snapshots, write_snapshot_file
from shared.journal.tools import newest_first_from_files, prune_segments
from shared.journal.writer import OsFiles, SegmentWriter

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
DEFAULT_RETENTION_DAYS = 400
#: Records kept in memory for queries. About 1 KiB each, so ~10 MiB; older
#: records are read back from the segment files on demand.
DEFAULT_RECENT_LIMIT = 10_000

log = structlog.get_logger("journal")


@attrs.define
class JournalStats:
    """Counters of what the journal did since it was opened."""

    appends: int = 0  # records made durable
    batches: int = 0  # write calls (group commits)
    fsyncs: int = 0
    failures: int = 0  # batches that failed


@attrs.frozen
class _Pending:
    record: Record
    line: bytes
    future: asyncio.Future[Record]


class FileJournal:
    """A durable, hash-chained journal in a directory. Create it with :meth:`open`."""

    def __init__(
        self,
        directory: Path,
        *,
        prog: str,
        files: OsFiles,
        segment_bytes: int,
        fsync: bool,
        retention_days: int,
        recent_limit: int,
        lock_fd: int,
    ) -> None:
        """Internal: use :meth:`open`."""
        self.directory = directory
        self.prog = prog
        self.retention_days = retention_days
        self.stats = JournalStats()
        self._files = files
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._lock_fd = lock_fd
        self._recent: collections.deque[Record] = collections.deque(maxlen=recent_limit)
        self._snapshot: Snapshot | None = None
        self._segments: list[SegmentInfo] = []
        self._replayed = False
        self._closed = False
        self._healthy = True
        self._durable_seq = 0
        self._durable_head = GENESIS
        self._next_seq = 1
        self._head = GENESIS
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._writer: SegmentWriter | None = None
        # One thread: batches are written one at a time anyway. It starts with the first batch.
        self._write_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-writer")
        self._maintenance = asyncio.Lock()

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        prog: str = "engine-hub",
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = True,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        recent_limit: int = DEFAULT_RECENT_LIMIT,
        files: OsFiles | None = None,
    ) -> FileJournal:
        """Open (creating if needed) the journal in ``directory`` and load its newest valid snapshot.

        Takes an exclusive lock (:class:`JournalLocked` if another process
        holds it). ``prog`` names the CLI in error messages. ``fsync=False``
        is for benchmarks only: appends are then not durable. Blocking: call
        it from a thread if the event loop is already serving. Then iterate
        :meth:`replay` before appending.
        """
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            sync_dir(directory.parent)
        lock_fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(lock_fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(lock_fd)
            raise JournalLocked(f"journal {directory} is in use by another process (pid {holder})") from None
        os.ftruncate(lock_fd, 0)
        os.pwrite(lock_fd, f"{os.getpid()}\n".encode(), 0)
        journal = cls(
            directory,
            prog=prog,
            files=files or OsFiles(),
            segment_bytes=segment_bytes,
            fsync=fsync,
            retention_days=retention_days,
            recent_limit=recent_limit,
            lock_fd=lock_fd,
        )
        try:
            journal._segments = list_segments(directory)
            journal._snapshot = next(valid_snapshots(directory), None)
        except BaseException:
            journal._release_lock()
            raise
        return journal

    @property
    def snapshot(self) -> Snapshot | None:
        """The newest valid snapshot (restore its ``state`` before replaying), or ``None``."""
        return self._snapshot

    def replay(self) -> Iterator[Record]:
        """Yield the records after the snapshot, oldest first, checking the chain as it goes.

        Raises :class:`JournalCorrupt` (naming segment, line and seq) at the
        first record that does not check out. A torn last line is cut off
        with a ``journal_torn_tail_truncated`` warning. Appending is allowed
        once the iterator is exhausted.
        """
        if self._replayed:
            raise RuntimeError("the journal was already replayed")
        walker = self._walker()
        try:
            for record in walker:
                self._recent.append(record)
                yield record
        except ChainBroken as exc:
            raise self._corrupt(exc.bad.segment, exc.bad.line, exc.bad.seq, exc.bad.reason) from None
        if walker.torn is not None:
            torn = walker.torn
            log.warning(
                "journal_torn_tail_truncated",
                segment=str(torn.segment),
                line=torn.line,
                offset=torn.offset,
                bytes=torn.length,
            )
            with open(torn.segment, "r+b") as f:
                f.truncate(torn.offset)
                os.fsync(f.fileno())
        self._durable_seq, self._durable_head = walker.last_seq, walker.head
        self._next_seq, self._head = walker.last_seq + 1, walker.head
        end = walker.end_segment
        # Keep appending to the last segment, unless it is an empty leftover whose
        # name would not match the next seq; the first batch then starts a new one.
        if end is not None and (walker.end_offset > 0 or end.first_seq == self._next_seq):
            path, offset = end.path, walker.end_offset
        else:
            path, offset = None, 0
        self._writer = SegmentWriter(
            self.directory,
            files=self._files,
            segment_bytes=self._segment_bytes,
            fsync=self._fsync,
            path=path,
            good_offset=offset,
        )
        self._replayed = True
        log.info(
            "journal_opened",
            directory=str(self.directory),
            seq=self._durable_seq,
            snapshot_seq=self._snapshot.seq if self._snapshot else None,
            replayed=walker.count,
        )

    def _walker(self) -> ChainWalker:
        """Plan where replay starts: after the snapshot's record, or at the first record."""
        segments = self._segments
        snap = self._snapshot
        if snap is None or snap.seq == 0:
            first = next((s for s in segments if s.path.stat().st_size > 0), None)
            if first is not None and first.first_seq != 1:
                raise self._corrupt(
                    first.name,
                    1,
                    first.first_seq,
                    f"records before seq {first.first_seq} are gone (pruned or deleted) "
                    "and no valid snapshot covers them",
                )
            return ChainWalker(segments) if segments else ChainWalker([])
        index = segment_index_for(segments, snap.seq)
        if index is None:
            # The segment holding the snapshot's record was pruned: the tail must
            # start right after it and chain from its hash (checked by the walker).
            later = [i for i, s in enumerate(segments) if s.first_seq > snap.seq]
            if not later:
                raise self._corrupt(
                    "(none)",
                    0,
                    snap.seq,
                    f"the snapshot covers seq {snap.seq} but the journal has no segment at or after it",
                )
            return ChainWalker(segments, start_index=later[0], expected_seq=snap.seq + 1, expected_prev=snap.head)
        seg = segments[index]
        found = find_record_line(seg.path, snap.head)
        if found is None:
            raise self._corrupt(
                seg.name,
                0,
                snap.seq,
                f"the snapshot covers seq {snap.seq} with head {snap.head[:16]}…, "
                "but that record is not in the journal: the journal was truncated or "
                "rewritten after the snapshot",
            )
        line, end, lineno = found
        try:
            parse_line(line, expected_seq=snap.seq, expected_prev=None, strict=False)
        except LineError as exc:
            raise self._corrupt(seg.name, lineno, snap.seq, f"the snapshot's record: {exc.reason}") from None
        return ChainWalker(
            segments,
            start_index=index,
            start_offset=end,
            start_line=lineno + 1,
            expected_seq=snap.seq + 1,
            expected_prev=snap.head,
        )

    def _corrupt(self, segment: str, line: int, seq: int | None, reason: str) -> JournalCorrupt:
        exc = JournalCorrupt(segment=segment, line=line, seq=seq, reason=reason, prog=self.prog)
        log.error("journal_corrupt", directory=str(self.directory), segment=segment, line=line, seq=seq, reason=reason)
        return exc

    # --------------------------------------------------------------- appending

    @property
    def head(self) -> str:
        """The hash of the newest durable record (``GENESIS`` when empty)."""
        return self._durable_head

    @property
    def last_seq(self) -> int:
        """The seq of the newest durable record (0 when empty)."""
        return self._durable_seq

    @property
    def healthy(self) -> bool:
        """False from a failed write until the next successful one."""
        return self._healthy

    @property
    def fsync_count(self) -> int:
        """How many fsyncs the journal made (fewer than appends under concurrency)."""
        return self.stats.fsyncs

    async def append(self, *, action: str, actor: str, source: str, job_id: str | None, data: dict[str, Any]) -> Record:
        """Append one record; return it once it is durable (see the module doc).

        Raises :class:`JournalUnavailable` if it could not be made durable (the
        record then does not exist: its seq will be reused), ``TypeError`` /
        ``ValueError`` if ``data`` is not JSON, and ``RuntimeError`` if called
        before :meth:`replay` finished.
        """
        if not self._replayed:
            raise RuntimeError("replay the journal before appending")
        if self._closed:
            raise JournalUnavailable("the journal is closed")
        record, line = make_record_line(
            seq=self._next_seq, prev=self._head, action=action, actor=actor, source=source, job_id=job_id, data=data
        )
        self._next_seq += 1
        self._head = record.hash
        future: asyncio.Future[Record] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(record, line, future))
        if self._flusher is None:
            # Started as a task, so every append made before it first runs joins its batch.
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        assert self._writer is not None
        writer = self._writer
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                payload = b"".join(p.line for p in batch)
                try:
                    await asyncio.get_running_loop().run_in_executor(
                        self._write_thread, writer.write_batch, batch[0].record.seq, payload
                    )
                except asyncio.CancelledError:
                    # The loop is shutting down mid-write. The worker thread may still
                    # finish the write, so the in-memory head can no longer be trusted:
                    # refuse further appends (a restart replays whatever reached the disk).
                    self._closed = True
                    self._fail(batch, JournalUnavailable("the journal is closing"), log_it=False)
                    raise
                except Exception as exc:
                    self._fail(batch, exc)
                else:
                    self._commit(batch)
        finally:
            self._flusher = None

    def _commit(self, batch: list[_Pending]) -> None:
        last = batch[-1].record
        self._durable_seq, self._durable_head = last.seq, last.hash
        self.stats.appends += len(batch)
        self.stats.batches += 1
        self.stats.fsyncs += self._fsync
        for p in batch:
            self._recent.append(p.record)
        if not self._healthy:
            self._healthy = True
            log.warning("journal_recovered", directory=str(self.directory), seq=last.seq)
        for p in batch:
            if not p.future.done():
                p.future.set_result(p.record)

    def _fail(self, batch: list[_Pending], exc: BaseException, *, log_it: bool = True) -> None:
        # Records queued behind the failed batch chain from it: they fail too, and
        # the head rolls back to the last durable record.
        failed = batch + self._pending
        self._pending = []
        self._next_seq, self._head = self._durable_seq + 1, self._durable_head
        self._healthy = False
        self.stats.failures += 1
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        if log_it:
            log.error(
                "journal_write_failed",
                directory=str(self.directory),
                segment=str(self._writer.path if self._writer else None),
                errno=getattr(exc, "errno", None),
                error=reason,
                first_seq=failed[0].record.seq,
                records=len(failed),
                exc_type=type(exc).__name__,
            )
        for p in failed:
            if not p.future.done():
                p.future.set_exception(JournalUnavailable(f"journal cannot be written: {reason}"))

    async def close(self) -> None:
        """Wait for pending appends, then close the segment and release the lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
        # A write cancelled at shutdown may still be running in the thread: let it end before closing the file.
        await asyncio.to_thread(self._write_thread.shutdown)
        if self._writer is not None:
            self._writer.close()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = -1

    # ------------------------------------------------------------------ reading

    def recent(self) -> Sequence[Record]:
        """The newest durable records kept in memory (at most ``recent_limit``), oldest first."""
        return list(self._recent)

    async def query(self, query: AuditQuery) -> list[Record]:
        """Durable records matching ``query``, newest first.

        Served from memory while the recent records suffice, then from the
        segment files (read backwards in a worker thread; see
        :func:`shared.journal.tools.newest_first_from_files` for the cost).
        """
        recent = list(self._recent)
        found = query_newest_first(reversed(recent), query)
        if len(found) >= query.limit:
            return found
        oldest = recent[0].seq if recent else self._durable_seq + 1
        before = oldest if query.before is None else min(query.before, oldest)
        if before <= 1:
            return found
        rest = attrs.evolve(query, before=before, limit=query.limit - len(found))
        return found + await asyncio.to_thread(newest_first_from_files, self.directory, rest)

    # ---------------------------------------------------- snapshots and pruning

    async def write_snapshot(self, state: dict[str, Any], *, seq: int, head: str) -> Snapshot | None:
        """Durably store ``state``: the owner's state including every record up to ``seq``/``head``.

        The state is serialised before this coroutine first waits, so the
        caller may change it right after calling. ``seq`` must be durable
        (``ValueError`` otherwise: a snapshot must never cover a record that
        could still be lost). Returns ``None`` and logs
        ``journal_snapshot_failed`` at ERROR if the file cannot be written:
        snapshots only speed up starts, so that is not a reason to stop.
        """
        if not 0 <= seq <= self._durable_seq:
            raise ValueError(f"snapshot seq {seq} is not durable (last durable seq {self._durable_seq})")
        known = {r.seq: r.hash for r in self._recent}
        expected = GENESIS if seq == 0 else known.get(seq, head)
        if head != expected:
            raise ValueError(f"snapshot head does not match record {seq}")
        state_bytes = canonical_json(state)
        at = format_time(utcnow()) or ""
        async with self._maintenance:
            try:
                path = await asyncio.to_thread(
                    write_snapshot_file, self.directory, seq=seq, head=head, at=at, state_bytes=state_bytes
                )
            except OSError as exc:
                log.error(
                    "journal_snapshot_failed", directory=str(self.directory), seq=seq, error=exc.strerror or str(exc)
                )
                return None
        log.info("journal_snapshot_written", path=str(path), seq=seq, bytes=len(state_bytes))
        return Snapshot(seq=seq, head=head, at=at, state=state)

    async def prune(self, *, now: dt.datetime | None = None) -> list[str]:
        """Delete segments older than ``retention_days`` that snapshots cover; return their names.

        Only a prefix of the segments goes, never the one being written and
        never a record that the oldest kept snapshot does not cover; each
        prune is logged in ``pruned.jsonl`` so that ``audit verify`` still
        accepts the shortened chain.
        """
        current = self._writer.path if self._writer is not None else None
        async with self._maintenance:
            removed = await asyncio.to_thread(
                prune_segments,
                self.directory,
                retention=dt.timedelta(days=self.retention_days),
                now=now or utcnow(),
                keep=current,
            )
        if removed:
            log.info("journal_pruned", directory=str(self.directory), segments=removed)
        return removed
