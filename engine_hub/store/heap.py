"""Keeping the engine's heap small and its garbage collector quiet once the store is built."""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Iterator


def settle_heap() -> None:
    """Move everything alive after start-up (the replayed store) out of the cyclic GC's reach.

    A full collection walks every tracked object; with 100,000 jobs in memory
    that is a pause of tens of milliseconds at random requests' expense.
    Frozen objects are never scanned; objects created later are collected as usual.
    """
    gc.collect()
    gc.freeze()
    malloc_trim()


def malloc_trim() -> None:
    """Give the C heap's free pages back to the system (glibc only; elsewhere a no-op)."""
    # Replay leaves freed memory (parsed records, wire dicts, the plain bytes of jobs packed
    # since) in the C heap: giving it back makes RSS reflect what the store holds.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Turn the cyclic garbage collector off for a bulk load (restores its previous state).

    A bulk load creates hundreds of thousands of long-lived objects; the
    collector would scan the growing heap again and again (it was most of
    the time of a snapshot load). Nothing a load makes is cyclic.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
