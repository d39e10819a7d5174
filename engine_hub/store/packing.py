"""How the store keeps cold jobs small: their wire JSON deflated against a preset dictionary.

A finished job's JSON (~640-690 bytes: three history entries, names,
times) is most of what the engine holds per job. Jobs outside the store's
hot window (see :mod:`engine_hub.store.embedded`) that are finished never change
again and are rarely read, so the store keeps their JSON deflated:
:func:`pack` deflates wire bytes, :func:`unpack` gives back the exact bytes
that were packed (deflate is lossless, so what a cold job serves is byte
for byte what it served while hot), and :func:`wire_bytes` is the one
reader that takes either form.

Which jobs are packed: the newest :data:`engine_hub.store.embedded.HOT_JOBS` jobs (the hot window)
keep plain wire bytes; every older job keeps its bytes deflated
(about a third of the size), which is what
holds a store of 100,000 jobs under 1 KiB a job. The rule is simple
(older than the window means packed, whatever the status) so that it
cannot drift: a job is packed when a newer creation pushes it out of the
window, and a cold job that changes (a late run, a finish) is packed again
as it is re-encoded. A page of the newest jobs thus takes its bytes as they
are; only older pages and single reads of cold jobs pay an unpack, and a
change of a cold job one unpack and one pack (figures: docs/performance.md,
"Figures behind design choices").

A bulk load (replay, snapshot) leaves cold finished jobs plain: packing
them all at once (250,000 jobs for a million-record journal) would blow the
start-up budget. :meth:`engine_hub.store.embedded.JobStore.pack_cold` packs them afterwards
in slices (the engine runs it in the background once it serves); until
then they are served plain, which is correct, only bigger. The one rule
that reads rely on, no packed job in the window, holds at all times.

Packed bytes start with a NUL, which wire JSON (an object: ``{``) never
does; that one byte is how an entry says which form it holds (a bytes
subclass would say it by type, but Python tracks such objects in the
cyclic GC: 16 bytes more a job).

Why these settings: a job is far too short for deflate to find repeats on
its own (~290 bytes); a preset dictionary of what every job JSON shares
(field names in contract order, statuses, ``null`` runs, time prefixes)
brings it to ~180. A 2 KiB window (``wbits=11``) and ``memLevel=4`` give
the same ratio as the defaults but allocate far less per compressor, which
is what a one-shot compression of a short text pays for: an order of
magnitude less time per job, which keeps a replay that packs 250,000 jobs
within its start-up budget (what remains is deflate's own per-stream cost:
level 1 would save little time for more bytes a job). The figures and how
to measure them: docs/performance.md, "Figures behind design choices". Raw deflate (no zlib header or checksum) saves
10 bytes a job; the dictionary's identity is checked where packed bytes
cross a process boundary (snapshots name :data:`PACKING`).
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Final

__all__ = ["PACKING", "is_packed", "pack", "unpack", "wire_bytes"]

#: Raw deflate with a 2 KiB window: the dictionary's tail and a whole job fit in it.
_WBITS: Final = -11
_MEM_LEVEL: Final = 4
_LEVEL: Final = 6
#: The first byte of packed bytes; wire JSON starts with ``{``.
_MARK: Final = b"\x00"

#: What job JSON has in common, most frequent last (deflate codes near matches more cheaply,
#: and the window only reaches the dictionary's last ~1.4 KiB by the end of a job). Never
#: change it without changing :data:`PACKING`: packed bytes are only readable with the
#: dictionary they were packed with.
_DICTIONARY: Final = b"".join(
    [
        b"interrupted: engine restarted",
        b"interrupted: the engine lost contact with the job",
        b"timed out after ",
        b"killed by signal ",
        b"failed to start: ",
        b"exited with code 1",
        b"cancelled by ",
        b'"params":{"note":"","date":"","target":"","dry_run":false,"force":true,"count":1,"path":"/var/',
        b'{"status":"FAILED","at":"20',
        b'","by":"system","reason":"exited with code 1"}]}',
        b',"status":"FAILED","createdAt":"20',
        b',"endedAt":"20","exitCode":null,"error":"cancelled by ',
        b'{"id":"","type":"demo.","engine":"demo.","name":"","params":{},"status":"READY","createdAt":"20',
        b'","createdBy":"admin","startedAt":null,"runBy":null,"runReason":null,"endedAt":null,"exitCode":null,'
        b'"error":null,"history":[{"status":"READY","at":"20',
        b'","by":"admin","reason":null},{"status":"RUNNING","at":"20',
        b'{"id":"","type":"","engine":"","name":"","params":{},"status":"DONE","createdAt":"20',
        b'","createdBy":"","startedAt":"20","runBy":"","runReason":null,"endedAt":"20","exitCode":0,"error":null,'
        b'"history":[{"status":"READY","at":"20',
        b'","by":"","reason":null},{"status":"RUNNING","at":"20',
        b'","by":"","reason":""},{"status":"DONE","at":"20',
        b'","by":"system","reason":null}]}',
    ]
)

#: Names the scheme and the dictionary; anything that stores packed bytes records it.
PACKING: Final = f"deflate{-_WBITS}-{hashlib.sha256(_DICTIONARY).hexdigest()[:16]}"

#: A compressor with the dictionary loaded, never used itself: copying it is cheaper than a new
#: one loading the dictionary (docs/performance.md), and a replay packs hundreds of thousands of jobs.
_PRIMED: Final = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS, _MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY, _DICTIONARY)


def pack(wire: bytes) -> bytes:
    """Deflate a job's wire JSON bytes against the shared dictionary (the result starts with NUL)."""
    deflater = _PRIMED.copy()
    return b"".join((_MARK, deflater.compress(wire), deflater.flush()))


def is_packed(data: bytes) -> bool:
    """Whether ``data`` came from :func:`pack` (rather than being wire JSON itself)."""
    return data[:1] == _MARK


def unpack(packed: bytes) -> bytes:
    """The exact wire JSON bytes that :func:`pack` was given.

    Raises ``zlib.error`` for bytes that are not a whole stream packed with
    this dictionary (the store never holds such; snapshot loading checks
    :data:`PACKING` before it trusts packed bytes).
    """
    inflater = zlib.decompressobj(_WBITS, _DICTIONARY)
    wire = inflater.decompress(memoryview(packed)[1:])
    if packed[:1] != _MARK or not inflater.eof or inflater.unused_data:
        raise zlib.error("not a whole packed job JSON")
    return wire


def wire_bytes(stored: bytes) -> bytes:
    """A job's wire JSON from what an entry stores: itself when plain, unpacked when packed."""
    return unpack(stored) if stored[:1] == _MARK else stored
