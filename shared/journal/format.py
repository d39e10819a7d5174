"""The journal's on-disk format and the chain walk shared by replay and audit.

A journal directory holds:

- ``segment-<first seq, 12 digits>.jsonl``: records, one JSON object a line
  (see :func:`shared.journal.chain.make_record_line` for the exact line layout).
  A segment's name carries the seq of its first record, so a reader finds the
  segment holding a given seq from the directory listing alone, and a deleted
  segment shows up as a seq gap.
- ``snapshots/``: the owner's state as of some record (:mod:`shared.journal.snapshot`).
- ``pruned.jsonl``: one line per retention prune, ``{"firstKeptSeq", "prev", ...}``,
  so that a journal whose oldest segments were deleted on purpose still
  verifies, while one whose oldest segment vanished otherwise does not.

:class:`ChainWalker` reads segments in order and checks every record against
the one before it; :class:`shared.journal.file.FileJournal` uses it to replay
and :mod:`shared.journal.tools` to verify.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from shared.journal.chain import GENESIS, LINE_BODY_START, Record, canonical_json

SEGMENT_RE = re.compile(r"^segment-(\d{12})\.jsonl$")
PRUNE_FILE = "pruned.jsonl"
SNAPSHOT_DIR = "snapshots"
LOCK_FILE = ".lock"

_HASH_PREFIX = b'{"hash":"'
_HASH_START = len(_HASH_PREFIX)
_HASH_END = _HASH_START + 64
_READ_CHUNK = 8 * 1024 * 1024
_DECODER = json.JSONDecoder()


def segment_name(first_seq: int) -> str:
    """Return the file name of the segment whose first record has ``first_seq``."""
    return f"segment-{first_seq:012d}.jsonl"


@attrs.frozen(kw_only=True)
class SegmentInfo:
    """One segment file and the seq its name says it starts at."""

    first_seq: int
    path: Path

    @property
    def name(self) -> str:
        """The file name (used in error messages)."""
        return self.path.name


def list_segments(directory: Path) -> list[SegmentInfo]:
    """Return the segments of ``directory`` in seq order (other files are ignored)."""
    out = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        m = SEGMENT_RE.match(name)
        if m:
            out.append(SegmentInfo(first_seq=int(m.group(1)), path=directory / name))
    out.sort(key=lambda s: s.first_seq)
    return out


def segment_index_for(segments: list[SegmentInfo], seq: int) -> int | None:
    """Return the index of the segment that would hold ``seq`` (the last starting at or before it)."""
    found = None
    for i, seg in enumerate(segments):
        if seg.first_seq <= seq:
            found = i
        else:
            break
    return found


def read_prune_marks(directory: Path) -> dict[int, str]:
    """Return ``{first kept seq: hash of the record before it}`` from the prune log."""
    marks: dict[int, str] = {}
    try:
        raw = (directory / PRUNE_FILE).read_bytes()
    except FileNotFoundError:
        return marks
    for line in raw.split(b"\n"):
        try:
            obj = json.loads(line)
            marks[int(obj["firstKeptSeq"])] = str(obj["prev"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn prune line only loses a mark; verify then reports the gap
    return marks


@attrs.frozen(kw_only=True)
class BadRecord:
    """Where and why a chain check failed (``line`` is 1-based)."""

    segment: str
    line: int
    seq: int | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        """Return the wire shape ``{segment, line, seq, reason}``."""
        return {"segment": self.segment, "line": self.line, "seq": self.seq, "reason": self.reason}


class ChainBroken(Exception):
    """Raised by :class:`ChainWalker` at the first record that does not check out."""

    def __init__(self, bad: BadRecord) -> None:
        super().__init__(bad.reason)
        self.bad = bad


@attrs.frozen(kw_only=True)
class TornTail:
    """An incomplete last line of the last segment: a write cut short by a crash."""

    segment: Path
    offset: int
    line: int
    length: int


class LineError(Exception):
    """One line is not a valid next record (``seq`` is ``None`` if it could not be read)."""

    def __init__(self, reason: str, seq: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seq = seq


def parse_line(line: bytes, *, expected_seq: int | None, expected_prev: str | None, strict: bool) -> Record:
    """Check one line (without its newline) as the record after ``expected_prev`` and return it.

    Checks the layout, field types, seq and ``prev`` link (unless the
    expected value is ``None``: a record checked on its own) and hash. The hash is
    computed over the raw bytes after the hash field, which *are* the hashed
    body when the writer was this library; ``strict`` also checks that those
    bytes are the canonical JSON of the body, so that any third-party verifier
    computing ``sha256(prev + canonical_json(body))`` agrees. Raises
    :class:`LineError`.
    """
    # Hot path of replay: one decode, one JSON parse, one sha256, few branches.
    if line[:_HASH_START] != _HASH_PREFIX or line[_HASH_END:LINE_BODY_START] != b'",':
        raise LineError("unparsable record")
    try:
        text = line.decode()
        # raw_decode skips json.loads' whitespace handling: measurably faster.
        obj, end = _DECODER.raw_decode(text)
    except ValueError:  # includes UnicodeDecodeError
        raise LineError("unparsable record") from None
    if end != len(text) or type(obj) is not dict:
        raise LineError("unparsable record")
    seq = obj.get("seq")
    if type(seq) is not int:
        raise LineError("malformed record: seq is not an integer")
    digest = text[_HASH_START:_HASH_END]
    get = obj.get
    at, actor, source, action, prev, job_id, data = (
        get("at"),
        get("actor"),
        get("source"),
        get("action"),
        get("prev"),
        get("jobId"),
        get("data"),
    )
    if (
        get("hash") != digest
        or type(at) is not str
        or type(actor) is not str
        or type(source) is not str
        or type(action) is not str
        or type(prev) is not str
        or type(data) is not dict
        or (job_id is not None and type(job_id) is not str)
        or len(obj) != 9
    ):
        raise LineError("malformed record: missing, extra or mistyped fields", seq)
    if expected_seq is not None and seq != expected_seq:
        raise LineError(
            f"expected seq {expected_seq}, found {seq}: records are missing, duplicated or out of order", seq
        )
    if expected_prev is not None and prev != expected_prev:
        raise LineError("chain broken: prev is not the hash of the record before", seq)
    body = b"{" + line[LINE_BODY_START:]
    # The computed digest is lowercase hex, so equality also proves the field is well-formed.
    if hashlib.sha256(prev.encode() + body).hexdigest() != digest:
        raise LineError("hash mismatch: record content was altered", seq)
    if strict:
        del obj["hash"]
        if canonical_json(obj) != body:
            raise LineError("record is not in canonical form", seq)
    return Record(
        seq=seq, at=at, actor=actor, source=source, action=action, job_id=job_id, data=data, prev=prev, hash=digest
    )


def iter_segment_lines(path: Path, offset: int = 0) -> Iterator[tuple[int, bytes, bool]]:
    """Yield ``(byte offset, line, complete)`` for each line of ``path`` from ``offset``.

    ``line`` has no newline; ``complete`` is false only for a final fragment
    that has no newline (a torn write or one still in progress). Reads in
    chunks so that memory stays bounded whatever the segment size.
    """
    with open(path, "rb") as f:
        f.seek(offset)
        pos = offset
        rest = b""
        while True:
            chunk = f.read(_READ_CHUNK)
            if not chunk:
                break
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            for part in parts:
                yield pos, part, True
                pos += len(part) + 1
        if rest:
            yield pos, rest, False


def iter_lines_reversed(path: Path, end: int | None = None, block: int = 1024 * 1024) -> Iterator[bytes]:
    """Yield the complete lines of ``path`` before byte ``end``, last first.

    A trailing fragment without a newline (a write in progress) is skipped.
    Memory is bounded by ``block`` plus the longest line.
    """
    with open(path, "rb") as f:
        pos = f.seek(0, os.SEEK_END) if end is None else end
        carry = b""
        dropped = False
        while pos > 0:
            size = min(block, pos)
            pos -= size
            f.seek(pos)
            parts = (f.read(size) + carry).split(b"\n")
            carry = parts[0]
            tail = parts[1:]
            if not dropped:
                if not tail:
                    continue  # no newline yet: all of it is the fragment after the last one
                tail.pop()  # the bytes after the last newline: empty or an incomplete line
                dropped = True
            yield from reversed(tail)
        if dropped:
            yield carry  # the file's first line


class ChainWalker:
    """Walk segments from a starting point, checking every record against the one before.

    Iterate it to get the records in order; it raises :class:`ChainBroken` at
    the first bad one; :attr:`segment` and :attr:`line` locate the record just
    yielded. An incomplete or unparsable *last* line of the *last*
    segment is not an error: it is left in :attr:`torn` for the caller to cut
    (replay) or report (verify). After iteration, :attr:`count`,
    :attr:`last_seq`, :attr:`head`, :attr:`end_segment` and
    :attr:`end_offset` describe the intact chain.
    """

    def __init__(
        self,
        segments: list[SegmentInfo],
        *,
        start_index: int = 0,
        start_offset: int = 0,
        start_line: int = 1,
        expected_seq: int = 1,
        expected_prev: str = GENESIS,
        strict: bool = False,
    ) -> None:
        self._segments = segments
        self._start_index = start_index
        self._start_offset = start_offset
        self._start_line = start_line
        self._strict = strict
        self.count = 0
        self.last_seq = expected_seq - 1
        self.head = expected_prev
        self.torn: TornTail | None = None
        self.segment = ""
        self.line = 0
        self.end_segment: SegmentInfo | None = segments[start_index] if segments[start_index:] else None
        self.end_offset = start_offset

    def __iter__(self) -> Iterator[Record]:
        segments = self._segments
        strict = self._strict
        # The newest segment that holds anything: the only place a torn write can be.
        last_index = next(
            (i for i in range(len(segments) - 1, -1, -1) if segments[i].path.stat().st_size > 0), len(segments) - 1
        )
        seq = self.last_seq + 1
        prev = self.head
        for index in range(self._start_index, len(segments)):
            seg = segments[index]
            first = index == self._start_index
            offset = self._start_offset if first else 0
            lineno = (self._start_line if first else 1) - 1
            self.end_segment, self.end_offset = seg, offset
            if offset == 0:
                if seg.path.stat().st_size == 0:
                    continue  # an empty segment (left by a failed rotation) holds no records
                if seg.first_seq != seq:
                    raise ChainBroken(
                        BadRecord(
                            segment=seg.name,
                            line=1,
                            seq=None,
                            reason=f"segment name says it starts at seq {seg.first_seq} but the chain "
                            f"continues at seq {seq}: records or segments are missing",
                        )
                    )
            self.segment = seg.name
            lines = iter_segment_lines(seg.path, offset)
            for pos, line, complete in lines:
                lineno += 1
                try:
                    if not complete:
                        raise LineError("incomplete last line")
                    rec = parse_line(line, expected_seq=seq, expected_prev=prev, strict=strict)
                except LineError as exc:
                    # A torn write can only be the very end of the newest segment, and
                    # leaves bytes that do not parse at all (a prefix of a record).
                    if index == last_index and exc.seq is None and next(lines, None) is None:
                        self.torn = TornTail(segment=seg.path, offset=pos, line=lineno, length=len(line) + complete)
                        return
                    raise ChainBroken(
                        BadRecord(segment=seg.name, line=lineno, seq=exc.seq, reason=exc.reason)
                    ) from None
                seq += 1
                prev = rec.hash
                self.count += 1
                self.last_seq = seq - 1
                self.head = prev
                self.end_offset = pos + len(line) + 1
                self.line = lineno
                yield rec


def find_record_line(path: Path, record_hash: str) -> tuple[bytes, int, int] | None:
    """Find the line of the record with ``record_hash`` in a segment.

    Every line starts with its record's hash, so one byte search over the
    (memory-mapped) segment finds it. Returns the line without its newline,
    the offset just after it and its 1-based line number.
    """
    needle = b'{"hash":"' + record_hash.encode() + b'"'
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            pos = data.find(needle)
            while pos > 0 and data[pos - 1] != 0x0A:
                pos = data.find(needle, pos + 1)
            end = data.find(b"\n", pos) if pos >= 0 else -1
            if end < 0:
                return None
            # Count lines in blocks: mmap has no count(), and a copy of 64 MiB is what this avoids.
            lineno = 1
            for block in range(0, pos, 1 << 20):
                lineno += data[block : min(block + (1 << 20), pos)].count(b"\n")
            return data[pos:end], end + 1, lineno
