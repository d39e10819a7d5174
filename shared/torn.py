"""Torn last lines: what a process killed mid-write leaves at the end of a line-oriented file.

A SIGKILL can stop a write part-way through a line (the kernel checks for a
fatal signal between pages; a buffer is written out in blocks, not lines).
The next writer appending to the file would continue that line, gluing its
first line onto the fragment. The journal cuts such a tail off when it opens
(:mod:`shared.journal.file`); the job log files and the processes' own log
output use :func:`drop_torn_tail` the same way, at the next start.
"""

from __future__ import annotations

import os
import stat
from typing import IO, Final

#: Bytes read per step when looking back for a file's last line break.
TAIL_BLOCK: Final = 64 * 1024


def whole_lines_end(f: IO[bytes], size: int) -> int:
    """Return the offset just past the last line break among the first ``size`` bytes of ``f`` (0 if none).

    Reads backwards in :data:`TAIL_BLOCK` steps, so a long file costs one short read.
    """
    pos = size
    while pos > 0:
        start = max(0, pos - TAIL_BLOCK)
        f.seek(start)
        block = f.read(pos - start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        pos = start
    return 0


def drop_torn_tail(fd: int) -> int:
    """Cut a partial last line off the regular file open for writing as ``fd``; return the bytes cut.

    For a process's own log output (``fd`` 1 or 2) at start-up: anything
    but a regular file (a pipe, a terminal, the systemd journal) and a file
    that cannot be read back are left alone (0). The file is read through
    ``/proc/self/fd`` because ``fd`` itself is usually write-only; it is cut
    with ``ftruncate``, which an append-mode descriptor allows. Raises
    nothing: a log that cannot be repaired must not stop a process starting.
    """
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            return 0
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            size = info.st_size
            end = whole_lines_end(f, size)
        if end == size:
            return 0
        os.ftruncate(fd, end)
        # Without O_APPEND the next write would land at the old offset, leaving a hole of zeros.
        if os.lseek(fd, 0, os.SEEK_CUR) > end:
            os.lseek(fd, end, os.SEEK_SET)
    except OSError:
        return 0
    return size - end
