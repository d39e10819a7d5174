"""Offline tools over a journal directory: verify, export, head, query and prune.

These read the files directly and take no lock, so they work on a journal
that is in use (``audit verify`` on a running engine) or on a copy. Both
``engine-hub audit …`` and ``admin-gateway audit …`` use them through
:mod:`shared.journal.cli`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import attrs

from shared.contract import format_time
from shared.journal.chain import GENESIS, AuditQuery, JournalCorrupt, Record, canonical_json
from shared.journal.format import (
    PRUNE_FILE,
    BadRecord,
    ChainBroken,
    ChainWalker,
    LineError,
    SegmentInfo,
    find_record_line,
    iter_lines_reversed,
    list_segments,
    parse_line,
    read_prune_marks,
    segment_index_for,
)
from shared.journal.snapshot import (
    SnapshotHeader,
    SnapshotInvalid,
    read_snapshot_header,
    snapshot_files,
    sync_dir,
    valid_snapshots,
)

ExportFormat = Literal["jsonl", "csv"]
CSV_COLUMNS = ("seq", "at", "actor", "source", "action", "jobId", "data", "prev", "hash")


@attrs.frozen(kw_only=True)
class VerifyResult:
    """The outcome of :func:`verify`.

    ``ok`` is true when every record checks out; otherwise ``first_bad`` names
    the first bad record. ``torn_tail`` reports an incomplete last line (a
    write in progress, or a crash the next start will clean up): not a
    failure. ``head`` is the hash of the last intact record.
    """

    ok: bool
    count: int
    first_seq: int
    last_seq: int
    head: str
    first_bad: BadRecord | None
    torn_tail: bool

    def to_json(self) -> dict[str, Any]:
        """Return the JSON shape printed by ``audit verify --json``."""
        return {
            "ok": self.ok,
            "count": self.count,
            "firstSeq": self.first_seq,
            "lastSeq": self.last_seq,
            "head": self.head,
            "firstBad": self.first_bad.to_json() if self.first_bad else None,
            "tornTail": self.torn_tail,
        }


@attrs.frozen(kw_only=True)
class HeadInfo:
    """The newest record of a journal: keep ``hash`` elsewhere to detect truncation later."""

    seq: int
    hash: str
    at: str | None


def _audit_walker(directory: Path) -> ChainWalker | BadRecord:
    """A strict walker over the whole journal, starting after a logged prune if there was one."""
    segments = list_segments(directory)
    first = next((s for s in segments if s.path.stat().st_size > 0), None)
    if first is None or first.first_seq == 1:
        return ChainWalker(segments, strict=True)
    prev = read_prune_marks(directory).get(first.first_seq)
    if prev is None:
        return BadRecord(
            segment=first.name,
            line=1,
            seq=None,
            reason=f"records before seq {first.first_seq} are missing and no prune record accounts for them",
        )
    return ChainWalker(segments, strict=True, expected_seq=first.first_seq, expected_prev=prev)


def verify(directory: Path, *, expected_head: str | None = None) -> VerifyResult:
    """Check every record's hash and the chain across all segments of ``directory``.

    Detects altered records (hash), removed or reordered records and
    segments (seq and ``prev`` links, segment names), snapshots that claim
    records the journal no longer has, and, given ``expected_head`` (a head
    saved earlier with ``audit head``), a tail that was cut off or rewritten:
    the saved head must still be in the chain.
    """
    walker = _audit_walker(directory)
    if isinstance(walker, BadRecord):
        return VerifyResult(ok=False, count=0, first_seq=0, last_seq=0, head=GENESIS, first_bad=walker, torn_tail=False)
    first_seq = walker.last_seq + 1
    snapshots = _snapshot_heads(directory)
    head_found = expected_head is None or expected_head == walker.head
    bad: BadRecord | None = None
    try:
        for rec in walker:
            if not head_found and rec.hash == expected_head:
                head_found = True
            snap = snapshots.get(rec.seq)
            if snap is not None and snap.head != rec.hash:
                bad = BadRecord(
                    segment=walker.segment,
                    line=walker.line,
                    seq=rec.seq,
                    reason=f"snapshot {snap.path.name} was taken at a different record "
                    "with this seq: the journal was rewritten",
                )
                break
    except ChainBroken as exc:
        bad = exc.bad
    end = BadRecord(
        segment=walker.end_segment.name if walker.end_segment else "(none)",
        line=walker.line + 1,
        seq=walker.last_seq + 1,
        reason="",
    )
    if bad is None:
        beyond = [s for s in snapshots.values() if s.seq > walker.last_seq]
        if beyond:
            snap = max(beyond, key=lambda s: s.seq)
            bad = attrs.evolve(
                end,
                reason=f"snapshot {snap.path.name} covers seq {snap.seq} but the "
                f"journal ends at seq {walker.last_seq}: records were removed "
                "from the end",
            )
        elif not head_found:
            bad = attrs.evolve(
                end,
                reason=f"the saved head {expected_head} is not in the chain: "
                "records were removed from the end or the chain was rewritten",
            )
    return VerifyResult(
        ok=bad is None,
        count=walker.count,
        first_seq=first_seq,
        last_seq=walker.last_seq,
        head=walker.head,
        first_bad=bad,
        torn_tail=walker.torn is not None,
    )


def _snapshot_heads(directory: Path) -> dict[int, SnapshotHeader]:
    heads = {}
    for _, path in snapshot_files(directory):
        try:
            header = read_snapshot_header(path)
        except (OSError, SnapshotInvalid):
            continue  # an unreadable snapshot is skipped at start; it says nothing about the chain
        heads[header.seq] = header
    return heads


def head(directory: Path, *, prog: str = "engine-hub") -> HeadInfo:
    """Return the newest complete record's seq and hash (seq 0 and ``GENESIS`` when empty).

    Checks that record's own hash, not the chain (that is :func:`verify`).
    An incomplete last line is skipped; a complete record whose hash does
    not match raises :class:`JournalCorrupt`.
    """
    for seg in reversed(list_segments(directory)):
        lineno = 0
        for line in iter_lines_reversed(seg.path):
            lineno += 1
            try:
                rec = parse_line(line, expected_seq=None, expected_prev=None, strict=True)
            except LineError as exc:
                if exc.seq is None:
                    continue  # a torn write, cut at the next start
                total = seg.path.read_bytes().count(b"\n")
                raise JournalCorrupt(
                    segment=seg.name, line=total - lineno + 1, seq=exc.seq, reason=exc.reason, prog=prog
                ) from None
            return HeadInfo(seq=rec.seq, hash=rec.hash, at=rec.at)
    return HeadInfo(seq=0, hash=GENESIS, at=None)


def records(directory: Path, *, prog: str = "engine-hub") -> Iterator[Record]:
    """Yield every record of ``directory``'s journal, oldest first, checking the chain as it goes.

    After a logged prune the first record is the first kept one, chained
    from the prune's ``prev``. Raises :class:`JournalCorrupt` at the first bad
    record (after the records before it were yielded); an incomplete last
    line is not a record and not an error.
    """
    walker = _audit_walker(directory)
    if isinstance(walker, BadRecord):
        raise JournalCorrupt(segment=walker.segment, line=walker.line, seq=walker.seq, reason=walker.reason, prog=prog)
    try:
        yield from walker
    except ChainBroken as exc:
        raise JournalCorrupt(
            segment=exc.bad.segment, line=exc.bad.line, seq=exc.bad.seq, reason=exc.bad.reason, prog=prog
        ) from None


def export(
    directory: Path,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    fmt: ExportFormat = "jsonl",
    prog: str = "engine-hub",
) -> Iterator[str]:
    """Yield the records with ``since <= at < until`` as text lines (newline included), oldest first.

    The chain is verified while exporting (:func:`records`), so an export is
    only ever of an intact journal: :class:`JournalCorrupt` is raised at the
    first bad record (after the lines before it were yielded). The lines are
    :class:`ExportLines`'.
    """
    lines = ExportLines(since=since, until=until, fmt=fmt)
    yield from lines.header()
    for rec in records(directory, prog=prog):
        yield from lines.of(rec)


class ExportLines:
    """The text lines of ``audit export`` for records fed oldest first, whatever holds them (files or a table).

    Only records with ``since <= at < until`` give a line. ``jsonl`` lines
    are the canonical JSON of each record, verifiable on their own. ``csv``
    has the columns :data:`CSV_COLUMNS` (``data`` as JSON) after a header
    line and, so that a spreadsheet never runs a cell as a formula, text
    cells starting with ``= + - @`` or a tab/CR get a leading ``'``.
    """

    def __init__(self, *, since: dt.datetime | None, until: dt.datetime | None, fmt: ExportFormat) -> None:
        self._lo, self._hi = format_time(since), format_time(until)
        self._fmt = fmt
        self._buf = io.StringIO()
        self._writer = csv.writer(self._buf, lineterminator="\n")

    def header(self) -> list[str]:
        """The lines before the first record (the CSV header; none for JSON Lines)."""
        if self._fmt != "csv":
            return []
        self._writer.writerow(CSV_COLUMNS)
        return [_take(self._buf)]

    def of(self, rec: Record) -> list[str]:
        """The line of ``rec`` (newline included), or none when it is outside the time range."""
        if (self._lo is not None and rec.at < self._lo) or (self._hi is not None and rec.at >= self._hi):
            return []
        if self._fmt == "jsonl":
            return [canonical_json(rec.to_json()).decode() + "\n"]
        self._writer.writerow(
            [
                rec.seq,
                rec.at,
                csv_cell(rec.actor),
                csv_cell(rec.source),
                csv_cell(rec.action),
                csv_cell(rec.job_id or ""),
                canonical_json(rec.data).decode(),
                rec.prev,
                rec.hash,
            ]
        )
        return [_take(self._buf)]


def _take(buf: io.StringIO) -> str:
    text = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return text


def csv_cell(value: str) -> str:
    """``value`` as a CSV text cell a spreadsheet shows as text: a leading ``'`` when it starts like a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _line_seq(line: bytes) -> int | None:
    # ``seq`` is the last top-level key but ``source``, whose quotes are escaped,
    # so the last `,"seq":` in a line is the record's own.
    i = line.rfind(b',"seq":')
    j = line.find(b",", i + 7)
    try:
        return int(line[i + 7 : j]) if i >= 0 and j > 0 else None
    except ValueError:
        return None


def _line_at(line: bytes) -> bytes:
    # ``at`` follows ``action`` and ``actor`` (strings) and precedes ``data``.
    i = line.find(b',"at":"')
    return line[i + 7 : i + 31] if i >= 0 else b""


def newest_first_from_files(directory: Path, query: AuditQuery) -> list[Record]:
    """Answer ``query`` newest first by reading the segments backwards.

    Cost: lines are first screened with byte searches (seq, time, jobId,
    actor, action, outcome) and only candidates are parsed, so a scan runs at roughly disk
    speed; memory stays within one read block plus ``limit`` records.
    With ``before`` the scan starts in the segment holding that seq; with
    ``since`` it stops after the first segment reaching older records (so a
    clock stepped back across a segment boundary can hide a record from a
    ``since`` query, never from an unbounded one or from ``export``).
    Each returned record's own hash is checked; lines that do not parse or
    check out are skipped (``audit verify`` is the tool to find them).
    """
    test = query.predicate()
    since = (format_time(query.since) or "").encode() or None
    needles = []
    if query.job_id is not None:
        needles.append(b'"jobId":' + canonical_json(query.job_id))
    if query.actor is not None:
        needles.append(b'"actor":' + canonical_json(query.actor))
    if query.actor_prefix is not None:
        # JSON escapes character by character, so the escaped prefix (without its closing
        # quote) starts the escaped actor.
        needles.append(b'"actor":' + canonical_json(query.actor_prefix)[:-1])
    if query.action is not None:
        needles.append(b'"action":' + canonical_json(query.action))
    if query.outcome is not None:
        needles.append(b'"outcome":' + canonical_json(query.outcome))
    found: list[Record] = []
    for seg in reversed(list_segments(directory)):
        if query.before is not None and seg.first_seq >= query.before:
            continue
        older = False
        for line in iter_lines_reversed(seg.path):
            seq = _line_seq(line)
            if seq is None or (query.before is not None and seq >= query.before):
                continue
            if since is not None and _line_at(line) < since:
                older = True
                continue
            if needles and not all(n in line for n in needles):
                continue
            try:
                rec = parse_line(line, expected_seq=None, expected_prev=None, strict=False)
            except LineError:
                continue
            if test(rec):
                found.append(rec)
                if len(found) >= query.limit:
                    return found
        if older:
            break
    return found


def _last_record(seg: SegmentInfo) -> Record | None:
    for line in iter_lines_reversed(seg.path):
        try:
            return parse_line(line, expected_seq=None, expected_prev=None, strict=False)
        except LineError:
            return None
    return None


def _snapshot_in_journal(segments: list[SegmentInfo], seq: int, head_hash: str) -> bool:
    index = segment_index_for(segments, seq)
    return index is not None and find_record_line(segments[index].path, head_hash) is not None


def prune_segments(directory: Path, *, retention: dt.timedelta, now: dt.datetime, keep: Path | None) -> list[str]:
    """Delete the oldest segments whose records are all older than ``now - retention`` and
    covered by the *oldest* kept snapshot (so a damaged newest snapshot still leaves a
    way to start). Never deletes ``keep`` (the segment being written) or the newest
    segment. Logs the cut in ``pruned.jsonl`` first. Returns the deleted file names.
    """
    snaps = list(valid_snapshots(directory))
    segments = list_segments(directory)
    if not snaps or len(segments) < 2:
        return []
    oldest = min(snaps, key=lambda s: s.seq)
    if not _snapshot_in_journal(segments, oldest.seq, oldest.head):
        return []  # a snapshot that does not match the journal covers nothing
    cutoff = format_time(now - retention) or ""
    doomed: list[SegmentInfo] = []
    last: Record | None = None
    for seg in segments[:-1]:
        if seg.path == keep:
            break
        rec = _last_record(seg)
        if rec is not None:
            if rec.seq > oldest.seq or rec.at >= cutoff:
                break
            last = rec
        doomed.append(seg)
    if not doomed:
        return []
    if last is not None:
        mark = {
            "firstKeptSeq": last.seq + 1,
            "prev": last.hash,
            "at": format_time(now),
            "removed": [s.name for s in doomed],
        }
        path = directory / PRUNE_FILE
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, canonical_json(mark) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            sync_dir(directory)
    for seg in doomed:
        seg.path.unlink()
    sync_dir(directory)
    return [s.name for s in doomed]
