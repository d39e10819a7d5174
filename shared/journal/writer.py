"""The blocking half of the file journal: writing batches of lines durably.

:class:`SegmentWriter` runs in a worker thread, one batch at a time. It
appends a batch with ``write`` then ``fdatasync`` and either the whole batch
is durable or, on any error, the segment is cut back to the last durable
offset so that a half-written batch can never sit in the middle of the chain.

:class:`OsFiles` is the seam at the operating-system boundary: every call the
writer makes goes through it, so tests can inject an ``EIO`` from ``fsync``
(a fault no unprivileged test can cause for real) without faking the journal.
"""

from __future__ import annotations

import os
from pathlib import Path

from shared.journal.format import segment_name
from shared.journal.snapshot import sync_dir


class OsFiles:
    """The file-system calls the journal writer makes (plain ``os`` calls)."""

    def open_append(self, path: Path) -> int:
        """Open (creating, mode 0600) ``path`` for appending; return the descriptor."""
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, fd: int, data: memoryview) -> int:
        """Write some of ``data``; return how many bytes were written."""
        return os.write(fd, data)

    def sync(self, fd: int) -> None:
        """Make written data durable (``fdatasync``: the size is flushed too)."""
        os.fdatasync(fd)

    def truncate(self, fd: int, size: int) -> None:
        """Cut the file back to ``size`` bytes."""
        os.ftruncate(fd, size)

    def sync_dir(self, path: Path) -> None:
        """Make a file creation in directory ``path`` durable."""
        sync_dir(path)

    def close(self, fd: int) -> None:
        """Close a descriptor."""
        os.close(fd)


class SegmentWriter:
    """Appends batches to the current segment, rotating by size. Not thread-safe: one caller.

    ``path``/``good_offset`` say where the intact chain ends; ``path`` is
    ``None`` until the first segment is created.
    """

    def __init__(
        self, directory: Path, *, files: OsFiles, segment_bytes: int, fsync: bool, path: Path | None, good_offset: int
    ) -> None:
        self.directory = directory
        self.files = files
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.path = path
        self.good_offset = good_offset
        self._fd: int | None = None

    def write_batch(self, first_seq: int, payload: bytes) -> None:
        """Append ``payload`` (whole lines, the first with seq ``first_seq``) durably.

        Raises ``OSError`` if any step fails; the segment is then cut back to
        the last durable offset (now, or before the next write if even the cut
        fails), so a retry starts from an intact tail.
        """
        if self.path is None or (self.good_offset > 0 and self.good_offset + len(payload) > self.segment_bytes):
            self._rotate(first_seq)
        fd = self._fd if self._fd is not None else self._reopen()
        try:
            view = memoryview(payload)
            while view:
                view = view[self.files.write(fd, view) :]
            if self.fsync:
                self.files.sync(fd)
        except BaseException:
            self._undo(fd)
            raise
        self.good_offset += len(payload)

    def close(self) -> None:
        """Close the segment (pending bytes were already synced by ``write_batch``)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                self.files.close(fd)
            except OSError:
                pass  # nothing left to lose: every acknowledged batch was synced

    def _reopen(self) -> int:
        assert self.path is not None
        fd = self.files.open_append(self.path)
        try:
            # Whatever lies past the durable offset is a batch that failed; drop it.
            self.files.truncate(fd, self.good_offset)
        except BaseException:
            self.files.close(fd)
            raise
        self._fd = fd
        return fd

    def _undo(self, fd: int) -> None:
        try:
            self.files.truncate(fd, self.good_offset)
        except OSError:
            # Cannot cut back now: forget the descriptor so the next write reopens
            # and cuts before appending anything.
            self._fd = None
            try:
                self.files.close(fd)
            except OSError:
                pass

    def _rotate(self, first_seq: int) -> None:
        path = self.directory / segment_name(first_seq)
        fd = self.files.open_append(path)
        try:
            # A file of that name can only be left by an earlier failed attempt at
            # this same seq: nothing in it was ever acknowledged.
            self.files.truncate(fd, 0)
            self.files.sync_dir(self.directory)
        except BaseException:
            self.files.close(fd)
            raise
        self.close()
        self.path, self.good_offset, self._fd = path, 0, fd
