"""A file system that fills up for real, for the disk-full tests of the journal, the engine and the gateway.

The fixture that mounts it, ``tiny_fs``, is in ``tests/conftest.py`` (its users are in three folders).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

#: The size of the tmpfs ``tiny_fs`` mounts.
TINY_FS_SIZE = "256k"


def mount_tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """Mount a real tmpfs of :data:`TINY_FS_SIZE` under ``tmp_path``, yield it, unmount it (skips without root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TINY_FS_SIZE},mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system holding ``directory`` to the last byte; return the filler file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        try:
            while True:
                f.write(b"\0")
        except OSError:
            pass
    return filler
