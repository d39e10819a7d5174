"""Snapshots of the job store, so that a start replays only the journal's tail.

A snapshot has two parts:

- ``<data-dir>/state/jobs-<seq, 12 digits>.tsv``: every job. The first line is
  a JSON object of columns (``seq``, ``id``, ``type`` as an index into
  ``types``, ``status`` as an index into ``statuses``, ``pid``, ``canceller``,
  ``truncated``, ``size``), one value per job; then each job's bytes as the
  store holds them (wire JSON, or packed for a cold job: see
  :mod:`engine_hub.store.packing`), back to back in the same order, ``size``
  bytes each. Loading it thus parses one JSON document of small values and
  no job at all (a JSON document holding 300,000 jobs takes seconds to
  parse; slicing takes a fraction), and packs nothing again.
- the journal library's snapshot (``journal/snapshots/snapshot-<seq>.json``,
  see :mod:`shared.journal.snapshot`), whose state names that file with its
  sha256, size and job count and the packing scheme, and holds the legacy
  results and engine log.
  The library checksums the state and ties it to the chain's head hash, so
  the jobs file is covered too.

Format 2 (before packing: one wire JSON line per job after the columns) is
still loaded; its cold jobs are then packed by the engine's background task
(see :mod:`engine_hub.store.embedded`). A snapshot of another format or packing
scheme stops the start with a message saying how to start from the journal
alone.

The jobs file is written (temporary name, fsync, rename, directory fsync)
before the library's snapshot, so a snapshot never names a file that is not
wholly there. Jobs files that no kept snapshot names are deleted afterwards.

:class:`Snapshotter` decides when: every ``records`` records, or
``seconds`` after the last snapshot if anything changed, and once more at a
clean stop. Taking the copy of the store costs a list copy on the event loop
(entries are immutable); writing it happens in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import attrs
import structlog

from engine_hub.errors import StartupError
from engine_hub.store.embedded import JobEntry, JobStore, StoreCut
from engine_hub.store.override import Window
from engine_hub.store.packing import PACKING, is_packed, pack, wire_bytes
from shared.contract import JobStatus, outcome_of
from shared.journal.chain import Snapshot
from shared.journal.file import FileJournal
from shared.journal.snapshot import snapshot_files, sync_dir, write_durably

log = structlog.get_logger("engine.snapshots")

FORMAT: Final = 3
#: The format before packing, still read: one wire JSON line per job.
FORMAT_LINES: Final = 2
JOBS_FILE_RE: Final = re.compile(r"^jobs-(\d{12})\.tsv$")
#: How often the snapshot policy is checked.
CHECK_INTERVAL: Final = 1.0


def jobs_file_name(seq: int) -> str:
    """The name of the jobs file of the snapshot at ``seq``."""
    return f"jobs-{seq:012d}.tsv"


@attrs.frozen(kw_only=True)
class JobsFile:
    """A written jobs file: name, sha256, size and how many jobs it holds."""

    name: str
    sha256: str
    size: int
    count: int


_STATUS_ORDER: Final = tuple(JobStatus)


def _columns(entries: list[JobEntry]) -> bytes:
    types = sorted({e.type for e in entries})
    type_index = {t: i for i, t in enumerate(types)}
    status_index = {s: i for i, s in enumerate(_STATUS_ORDER)}
    columns = {
        "types": types,
        "statuses": [str(s) for s in _STATUS_ORDER],
        "seq": [e.seq for e in entries],
        "id": [e.id for e in entries],
        "type": [type_index[e.type] for e in entries],
        "status": [status_index[e.status] for e in entries],
        "pid": [e.pid for e in entries],
        "canceller": [e.cancel_requested_by for e in entries],
        "truncated": [int(e.log_truncated) for e in entries],
        "size": [len(e.stored) for e in entries],
        "logExpired": [int(e.log_expired) for e in entries],
        "nameKey": [e.name_key for e in entries],
    }
    return json.dumps(columns, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _chunks(entries: list[JobEntry]) -> Iterator[bytes]:
    yield _columns(entries)
    for start in range(0, len(entries), 4096):
        yield b"".join([e.stored for e in entries[start : start + 4096]])


def write_jobs_file(directory: Path, cut: StoreCut) -> JobsFile:
    """Durably write the jobs of ``cut`` to ``directory``. Blocking; raises ``OSError``."""
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        sync_dir(directory.parent)
    final = directory / jobs_file_name(cut.seq)
    digest = hashlib.sha256()
    size = 0
    entries = cut.entries

    def chunks() -> Iterator[bytes]:
        nonlocal size
        for chunk in _chunks(entries):
            digest.update(chunk)
            size += len(chunk)
            yield chunk

    write_durably(final, chunks())
    return JobsFile(name=final.name, sha256=digest.hexdigest(), size=size, count=len(entries))


def snapshot_state(cut: StoreCut, jobs: JobsFile) -> dict[str, Any]:
    """The state handed to the journal's snapshot: the jobs file's identity and the legacy views."""
    return {
        "format": FORMAT,
        "packing": PACKING,
        "jobsFile": jobs.name,
        "jobsSha256": jobs.sha256,
        "jobsBytes": jobs.size,
        "jobCount": jobs.count,
        "results": cut.results,
        "engineLog": cut.engine_logs,
        # The SAFE_MODE override window: its records may be older than the snapshot (absent before issue 15).
        "safeModeOverride": cut.override.to_json() if cut.override is not None else None,
        # Every job's JSON has "runRequest" (issue 15); older snapshots' jobs get it at load.
        "runRequests": True,
        # ... and "outcome", "copyOf" and "copies" (issue 16); older snapshots' jobs get them at load.
        "outcomes": True,
    }


def load_snapshot(store: JobStore, snapshot: Snapshot, directory: Path) -> None:
    """Fill an empty ``store`` from ``snapshot`` and its jobs file in ``directory``. Blocking.

    Raises :class:`StartupError` naming the file when the jobs file is
    missing or does not match what the snapshot recorded.
    """
    state = snapshot.state
    name = state.get("jobsFile")
    form = state.get("format")
    hint = (
        f"move journal/snapshots/snapshot-{snapshot.seq:012d}.json aside to start from the journal "
        "alone (slower), after checking the disk"
    )
    if form not in (FORMAT, FORMAT_LINES) or not isinstance(name, str) or not JOBS_FILE_RE.match(name):
        raise StartupError(
            f"snapshot at seq {snapshot.seq} is not an engine snapshot of format {FORMAT} or {FORMAT_LINES}; {hint}"
        )
    if form == FORMAT and state.get("packing") != PACKING:
        raise StartupError(
            f"snapshot at seq {snapshot.seq} packs jobs as {state.get('packing')!r}, which this "
            f"version cannot read (it packs as {PACKING!r}); {hint}"
        )
    path = directory / name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read {path}: {exc.strerror or exc}; {hint}") from None
    if len(raw) != state.get("jobsBytes") or hashlib.sha256(raw).hexdigest() != state.get("jobsSha256"):
        raise StartupError(f"{path} does not match snapshot seq {snapshot.seq} (size or sha256); {hint}")
    try:
        entries = _entries(raw) if form == FORMAT else _entries_lines(raw)
    except (ValueError, KeyError, IndexError, TypeError):
        raise StartupError(f"{path} is not a job table of format {form}; {hint}") from None
    saved = state.get("safeModeOverride")
    try:
        override = Window.from_json(saved) if saved is not None else None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StartupError(f"snapshot at seq {snapshot.seq} holds a malformed safeModeOverride; {hint}") from None
    if len(entries) != state.get("jobCount"):
        raise StartupError(f"{path} holds {len(entries)} jobs, its snapshot says {state.get('jobCount')}; {hint}")
    if not state.get("runRequests"):
        entries = [_with_run_request(entry) for entry in entries]
    if not state.get("outcomes"):
        entries = [_with_outcome(entry) for entry in entries]
    store.load(
        entries=entries,
        results=[str(r) for r in state.get("results", [])],
        engine_logs=list(state.get("engineLog", [])),
        seq=snapshot.seq,
        head=snapshot.head,
        override=override,
    )


def _with_run_request(entry: JobEntry) -> JobEntry:
    """``entry`` with ``"runRequest":null`` last in its JSON, as jobs written before run requests lack it."""
    plain = entry.encoded
    if b'"runRequest":' in plain:
        return entry
    # The wire JSON is an object whose last field (history) is followed by the closing brace only.
    added = plain[:-1] + b',"runRequest":null}'
    return entry._replace(stored=pack(added) if is_packed(entry.stored) else added)


def _with_outcome(entry: JobEntry) -> JobEntry:
    """``entry`` with ``outcome`` (derived), ``"copyOf":null`` and ``"copies":[]`` last in its JSON, as jobs
    written before issue 16 lack them (after ``runRequest``, which :func:`_with_run_request` put last)."""
    plain = entry.encoded  # the snapshot's flag says no job has the fields: no per-job check
    error = json.loads(plain).get("error") if entry.status is JobStatus.FAILED else None
    outcome = json.dumps(outcome_of(entry.status, error)).encode()
    added = plain[:-1] + b',"outcome":' + outcome + b',"copyOf":null,"copies":[]}'
    return entry._replace(stored=pack(added) if is_packed(entry.stored) else added)


def _entries(raw: bytes) -> list[JobEntry]:
    end = raw.index(b"\n")
    columns = json.loads(raw[:end])
    sizes = columns["size"]
    if not all(type(n) is int and n > 0 for n in sizes):
        raise ValueError("job sizes must be positive integers")
    offsets = list(itertools.accumulate(sizes, initial=end + 1))
    if offsets[-1] != len(raw):
        raise ValueError("job sizes do not add up to the file")
    stored = [raw[a:b] for a, b in itertools.pairwise(offsets)]
    # Wire JSON is an object; anything else must be packed bytes (checked once here, not per read).
    if not all(b[:1] == b"{" or is_packed(b) for b in stored):
        raise ValueError("a job is neither wire JSON nor packed")
    return _build(columns, stored)


def _entries_lines(raw: bytes) -> list[JobEntry]:
    lines = raw.split(b"\n")
    return _build(json.loads(lines[0]), lines[1:-1])


def _build(columns: dict[str, Any], stored: list[bytes]) -> list[JobEntry]:
    types = [sys.intern(t) for t in columns["types"]]
    statuses = [JobStatus(s) for s in columns["statuses"]]
    count = len(stored)
    if not all(
        len(columns[name]) == count for name in ("seq", "id", "type", "status", "pid", "canceller", "truncated")
    ):
        raise ValueError("columns and jobs differ in length")
    # Snapshots written before log retention existed have no logExpired column: no log had expired.
    expired = columns.get("logExpired") or [0] * count
    if len(expired) != count:
        raise ValueError("columns and jobs differ in length")
    # Snapshots written before name search (issue 16) have no nameKey column: read each job's name once.
    names = columns.get("nameKey")
    if names is None:
        names = [json.loads(wire_bytes(b))["name"].casefold() for b in stored]
    if len(names) != count or not all(type(n) is str for n in names):
        raise ValueError("columns and jobs differ in length")
    return list(
        map(
            JobEntry,
            columns["seq"],
            columns["id"],
            [types[i] for i in columns["type"]],
            [statuses[i] for i in columns["status"]],
            stored,
            columns["pid"],
            columns["canceller"],
            [bool(t) for t in columns["truncated"]],
            [bool(e) for e in expired],
            [sys.intern(n) for n in names],
        )
    )


def remove_unreferenced(state_dir: Path, journal_dir: Path) -> None:
    """Delete jobs files that no snapshot in ``journal_dir`` names (by seq)."""
    kept = {seq for seq, _ in snapshot_files(journal_dir)}
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(state_dir):
            m = JOBS_FILE_RE.match(name)
            if (m and int(m.group(1)) not in kept) or (name.startswith(".jobs-") and name.endswith(".tmp")):
                with contextlib.suppress(OSError):
                    (state_dir / name).unlink()


class Snapshotter:
    """Takes snapshots of a store into a file journal on a records/time policy."""

    def __init__(self, *, store: JobStore, journal: FileJournal, state_dir: Path, records: int, seconds: float) -> None:
        self.store = store
        self.journal = journal
        self.state_dir = state_dir
        self.records = records
        self.seconds = seconds
        snap = journal.snapshot
        self.last_seq = snap.seq if snap is not None else 0
        self.last_time = time.monotonic()
        self._lock = asyncio.Lock()

    def due(self) -> bool:
        """Whether the policy asks for a snapshot now."""
        behind = self.store.seq - self.last_seq
        return behind >= self.records or (behind > 0 and time.monotonic() - self.last_time >= self.seconds)

    async def run(self) -> None:
        """Check the policy now (a start after a long tail snapshots at once), then every
        :data:`CHECK_INTERVAL` seconds, forever (cancel to stop)."""
        while True:
            if self.due():
                await self.take()
            await asyncio.sleep(CHECK_INTERVAL)

    async def take(self) -> bool:
        """Take a snapshot now if anything changed since the last; return whether one was written.

        Never raises for a disk problem: a failed snapshot is logged at ERROR
        (the journal still holds everything; the next start only replays more).
        Shielded: a caller cancelled mid-way (shutdown) does not stop a write in
        progress, and the next call waits for it.
        """
        return await asyncio.shield(self._take())

    async def _take(self) -> bool:
        async with self._lock:
            store, journal = self.store, self.journal
            if store.seq == self.last_seq:
                return False
            if store.seq != journal.last_seq:
                return False  # a record is durable but not yet applied: try again at the next check
            cut = store.cut()
            started = time.perf_counter()
            try:
                jobs = await asyncio.to_thread(write_jobs_file, self.state_dir, cut)
            except OSError as exc:
                log.error("snapshot_failed", seq=cut.seq, error=exc.strerror or str(exc))
                self.last_time = time.monotonic()  # retry at the next interval, not every second
                return False
            snap = await journal.write_snapshot(snapshot_state(cut, jobs), seq=cut.seq, head=cut.head)
            self.last_time = time.monotonic()
            if snap is None:
                return False
            self.last_seq = cut.seq
            log.info(
                "snapshot_taken",
                seq=cut.seq,
                jobs=jobs.count,
                bytes=jobs.size,
                seconds=round(time.perf_counter() - started, 3),
            )
            await asyncio.to_thread(remove_unreferenced, self.state_dir, journal.directory)
            try:
                await journal.prune()
            except OSError as exc:
                log.error("journal_prune_failed", error=exc.strerror or str(exc))
            return True
