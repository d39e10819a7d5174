"""Snapshots of a journal owner's state, so that a start replays only the tail.

A snapshot file ``snapshots/snapshot-<seq, 12 digits>.json`` holds two lines:
a canonical JSON header ``{format, seq, head, at, stateBytes, checksum}`` and
the canonical JSON of the owner's state. ``seq``/``head`` name the last record
whose effect the state includes; ``checksum`` is the sha256 of the header
(without ``checksum``), a newline and the state bytes, so a torn or altered
snapshot is detected and skipped in favour of an older one.

Files are written to a temporary name, fsynced, renamed into place and the
directory fsynced: a snapshot is either wholly there or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import structlog

from shared.journal.chain import Snapshot, canonical_json
from shared.journal.format import SNAPSHOT_DIR

SNAPSHOT_RE = re.compile(r"^snapshot-(\d{12})\.json$")
FORMAT = 1
#: How many snapshots are kept. More than one, so that a damaged newest
#: snapshot still leaves one to start from (and prune keeps what it covers).
KEEP_SNAPSHOTS = 2

log = structlog.get_logger("journal")


class SnapshotInvalid(Exception):
    """A snapshot file is unreadable, torn or altered."""


@attrs.frozen(kw_only=True)
class SnapshotHeader:
    """What a snapshot covers, read without loading its state."""

    path: Path
    seq: int
    head: str
    at: str


def sync_dir(path: Path) -> None:
    """fsync a directory so that a create, rename or unlink in it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def snapshot_files(directory: Path) -> list[tuple[int, Path]]:
    """Return ``(seq, path)`` of every snapshot file in ``directory``, newest first."""
    try:
        names = os.listdir(directory / SNAPSHOT_DIR)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        m = SNAPSHOT_RE.match(name)
        if m:
            found.append((int(m.group(1)), directory / SNAPSHOT_DIR / name))
    found.sort(reverse=True)
    return found


def write_durably(final: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``final`` so that it is either wholly there, durably, or not at all.

    The bytes go to a temporary file (mode 0600) in the same directory, which
    is fsynced, renamed to ``final`` and the directory fsynced. Raises
    ``OSError``; nothing partial is then left under either name.
    """
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False, buffering=1024 * 1024) as f:
                for chunk in chunks:
                    f.write(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    sync_dir(final.parent)


def write_snapshot_file(directory: Path, *, seq: int, head: str, at: str, state_bytes: bytes) -> Path:
    """Durably write a snapshot of ``state_bytes`` (canonical JSON) as of ``seq``/``head``.

    Keeps the newest :data:`KEEP_SNAPSHOTS` snapshots and removes older ones.
    Raises ``OSError`` when the snapshot cannot be written (nothing partial
    is left under a snapshot name).
    """
    snapdir = directory / SNAPSHOT_DIR
    if not snapdir.exists():
        snapdir.mkdir(mode=0o700, exist_ok=True)
        sync_dir(directory)
    header: dict[str, Any] = {"format": FORMAT, "seq": seq, "head": head, "at": at, "stateBytes": len(state_bytes)}
    header["checksum"] = _checksum(header, state_bytes)
    final = snapdir / f"snapshot-{seq:012d}.json"
    write_durably(final, (canonical_json(header) + b"\n", state_bytes, b"\n"))
    for _, old in snapshot_files(directory)[KEEP_SNAPSHOTS:]:
        old.unlink(missing_ok=True)
    return final


def _checksum(header: dict[str, Any], state_bytes: bytes) -> str:
    body = {k: v for k, v in header.items() if k != "checksum"}
    return hashlib.sha256(canonical_json(body) + b"\n" + state_bytes).hexdigest()


def _split(raw: bytes, path: Path) -> tuple[dict[str, Any], bytes]:
    newline = raw.find(b"\n")
    header = _header_only(raw[: max(newline, 0)], path)
    size = header.get("stateBytes")
    if header.get("format") != FORMAT or type(size) is not int:
        raise SnapshotInvalid(f"{path.name}: unknown format")
    state_bytes = raw[newline + 1 : newline + 1 + size]
    if len(state_bytes) != size:
        raise SnapshotInvalid(f"{path.name}: truncated")
    return header, state_bytes


def read_snapshot(path: Path) -> Snapshot:
    """Load and check one snapshot file. Raises :class:`SnapshotInvalid`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SnapshotInvalid(f"{path.name}: {exc.strerror}") from None
    header, state_bytes = _split(raw, path)
    if header.get("checksum") != _checksum(header, state_bytes):
        raise SnapshotInvalid(f"{path.name}: checksum mismatch")
    try:
        state = json.loads(state_bytes)
    except ValueError:
        raise SnapshotInvalid(f"{path.name}: unreadable state") from None
    if not isinstance(state, dict):
        raise SnapshotInvalid(f"{path.name}: state is not an object")
    return Snapshot(seq=header["seq"], head=header["head"], at=str(header.get("at")), state=state)


def read_snapshot_header(path: Path) -> SnapshotHeader:
    """Read what a snapshot covers without checking or loading its state."""
    with open(path, "rb") as f:
        line = f.readline(64 * 1024)
    header = _header_only(line, path)
    return SnapshotHeader(path=path, seq=header["seq"], head=header["head"], at=str(header.get("at")))


def _header_only(line: bytes, path: Path) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except ValueError:
        raise SnapshotInvalid(f"{path.name}: unreadable header") from None
    if not isinstance(header, dict) or type(header.get("seq")) is not int or not isinstance(header.get("head"), str):
        raise SnapshotInvalid(f"{path.name}: malformed header")
    return header


def valid_snapshots(directory: Path) -> Iterator[Snapshot]:
    """Yield the valid snapshots of ``directory``, newest first, warning about invalid ones."""
    for _, path in snapshot_files(directory):
        try:
            yield read_snapshot(path)
        except SnapshotInvalid as exc:
            log.warning("journal_snapshot_invalid", path=str(path), reason=str(exc))
