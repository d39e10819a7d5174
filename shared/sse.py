"""Server-Sent Events: a ring of recent change frames, bounded per-client buffers, and the stream's plumbing.

:class:`EventHub` is fed one :meth:`~EventHub.publish` per committed change,
in seq order, and hands each frame to every open :class:`Stream`. The
engine's ``GET /api/events`` (fed by its store) and the gateway's
``GET /api/admin/engine/events`` (fed by its one upstream stream of the
engine's) both serve streams of a hub.

Publishing never waits: a frame is appended to each stream's buffer. A
stream whose buffer passes ``client_buffer`` bytes (a client that does not
read) is dropped at once, with its reason, and its connection closed; memory
therefore stays within ``ring`` frames plus ``client_buffer`` bytes per
stream. :class:`FrameParser` reads such a stream back (the gateway's side of
the engine's stream).
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Awaitable, Callable
from typing import Final

import attrs
from aiohttp import web

from shared.contract import ErrorCode
from shared.web import REQUEST_ID, ApiError, parse_decimal, reject_unknown_query

#: Defaults: frames kept for resuming, bytes a stream may have waiting, open streams.
DEFAULT_RING: Final = 10_000
DEFAULT_CLIENT_BUFFER: Final = 1024 * 1024
DEFAULT_MAX_STREAMS: Final = 1000
DEFAULT_HEARTBEAT: Final = 15.0


#: The largest event id (a seq) a cursor may name.
MAX_EVENT_ID: Final = 2**63 - 1

#: OpenAPI: one message of a ``text/event-stream`` answer, ``data`` holding JSON text.
MESSAGE_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer"},
    },
    "required": ["data"],
}

#: How long a browser's EventSource waits before reconnecting (milliseconds).
RETRY_MS: Final = 2000
#: The comment that keeps an idle stream's connection (and every proxy on its way) open.
HEARTBEAT: Final = b": keep-alive\n\n"


def frame(*, seq: int, event: str, data: bytes) -> bytes:
    """One Server-Sent Events message: ``id``, ``event`` and one line of JSON ``data``."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, event.encode(), data)


def event_cursor(request: web.Request, *, error: type[ApiError]) -> int | None:
    """``Last-Event-ID`` (a reconnecting EventSource sends it), else ``?after=``; ``None`` for neither.

    Raises ``error`` (400) for another query parameter or a value that is not an event id.
    """
    reject_unknown_query(request, ("after",), error=error)
    raw = request.headers.get("Last-Event-ID")
    name = "Last-Event-ID"
    if raw is None:
        raw, name = request.query.get("after"), "after"
    if raw is None:
        return None
    value = parse_decimal(raw)
    if value is None or not 0 <= value <= MAX_EVENT_ID:
        raise error(
            f"{name} must be an event id: an integer between 0 and {MAX_EVENT_ID} (ASCII digits)",
            code=ErrorCode.INVALID_FIELD,
        )
    return value


def notice(event: str, data: object) -> bytes:
    """A message without ``id`` (a state, not a change: a client's resume point stays where it was)."""
    return b"event: %s\ndata: %s\n\n" % (event.encode(), json.dumps(data, separators=(",", ":")).encode())


@attrs.frozen(kw_only=True)
class Resume:
    """Where a new stream starts: the frames it missed, or ``reset`` when they are no longer kept."""

    frames: list[bytes]
    reset: bool
    seq: int  #: the seq of the newest change published so far


class Stream:
    """One open stream's pending frames: bounded, never waited on by the publisher."""

    def __init__(self, *, limit: int, on_drop: Callable[[], None], after: int = 0) -> None:
        #: Frames up to this seq are not sent (the client has them).
        self.after = after
        self._frames: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self._limit = limit
        self._on_drop = on_drop
        self._waiter: asyncio.Future[None] | None = None
        #: Why the stream was ended by the engine (``None`` while it is open).
        self.ended: str | None = None
        #: Frames handed to the client so far, and the most bytes ever waiting.
        self.sent = 0
        self.peak_bytes = 0

    def offer(self, data: bytes) -> None:
        """Queue a frame; past the limit, end the stream (its frames are freed) and close its connection."""
        if self.ended is not None:
            return
        self._frames.append(data)
        self._bytes += len(data)
        self.peak_bytes = max(self.peak_bytes, self._bytes)
        if self._bytes > self._limit:
            self.end(f"slow consumer: more than {self._limit} bytes of events waiting")
            self._on_drop()
            return
        self._wake()

    def end(self, reason: str) -> None:
        """End the stream for ``reason``; the reader's next :meth:`take` returns nothing."""
        if self.ended is None:
            self.ended = reason
            self._frames.clear()
            self._bytes = 0
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def take(self, timeout: float) -> bytes | None:
        """The frames waiting, joined (waiting up to ``timeout`` for one); ``b""`` on timeout, ``None`` once ended."""
        if not self._frames and self.ended is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                return b""
            finally:
                self._waiter = None
        if self.ended is not None:
            return None
        data = b"".join(self._frames)
        self.sent += len(self._frames)
        self._frames.clear()
        self._bytes = 0
        return data


class EventHub:
    """The newest ``ring`` change frames and the open streams (at most ``max_streams``, kept alive every
    ``heartbeat`` seconds).

    :meth:`start` sets the seq before the first change it will be given;
    a stream resuming from before what the ring holds gets ``reset``.
    """

    def __init__(
        self,
        *,
        ring: int = DEFAULT_RING,
        client_buffer: int = DEFAULT_CLIENT_BUFFER,
        max_streams: int = DEFAULT_MAX_STREAMS,
        heartbeat: float = DEFAULT_HEARTBEAT,
    ) -> None:
        self._ring: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=ring)
        self._base = 0  # every change up to this seq is older than the ring
        self._last = 0
        self._streams: set[Stream] = set()
        self.client_buffer = client_buffer
        self.max_streams = max_streams
        #: Seconds between two keep-alive comments on an idle stream.
        self.heartbeat = heartbeat
        # None: every change reaches this hub before anyone can know its seq (the embedded store), so
        # a cursor ahead of it comes from another store. Else (a PostgreSQL node, whose listener may
        # lag behind a cursor another node handed out) the store's head says: a cursor up to it is
        # waited for, one beyond it is foreign. Set by use_store_head.
        self._store_head: Callable[[], Awaitable[int]] | None = None

    def use_store_head(self, store_head: Callable[[], Awaitable[int]]) -> None:
        """Judge cursors ahead of this hub by the store's head (a PostgreSQL node; see :meth:`foreign`)."""
        self._store_head = store_head

    @property
    def last_seq(self) -> int:
        """The seq of the newest change published (or the start seq)."""
        return self._last

    @property
    def streams(self) -> int:
        """How many streams are open."""
        return len(self._streams)

    def start(self, seq: int) -> None:
        """Begin at ``seq``: changes up to it happened before this hub (a resume from before it is reset)."""
        self._ring.clear()
        self._base = self._last = seq

    def publish(self, *, seq: int, action: str, job: bytes) -> None:
        """Hand one committed change (``job``: the job's JSON after it) to the ring and every stream."""
        if seq <= self._last:
            return  # already published (a feed read twice)
        data = frame(seq=seq, event=action, data=job)
        if len(self._ring) == self._ring.maxlen:
            self._base = self._ring[0][0]
        self._ring.append((seq, data))
        self._last = seq
        for stream in list(self._streams):
            if seq <= stream.after:
                continue
            stream.offer(data)
            if stream.ended is not None:
                self._streams.discard(stream)

    def broadcast(self, data: bytes) -> None:
        """Hand a message that is not a change (:func:`notice`) to every open stream, not to the ring."""
        for stream in list(self._streams):
            stream.offer(data)
            if stream.ended is not None:
                self._streams.discard(stream)

    def restart(self, seq: int, reason: str) -> None:
        """Begin again at ``seq`` with open streams: each is sent ``reset`` (list again) and follows from ``seq``.

        For a hub fed by another stream that could not be resumed (the
        gateway's, when the engine answered ``reset`` or was first reached).
        """
        self.start(seq)
        data = reset_frame(seq, reason)
        for stream in list(self._streams):
            stream.after = seq
            stream.offer(data)
            if stream.ended is not None:
                self._streams.discard(stream)

    def full(self) -> bool:
        """Whether ``max_streams`` streams are open."""
        return len(self._streams) >= self.max_streams

    async def foreign(self, after: int | None) -> bool:
        """Whether ``after`` is ahead of every change the store has made (a cursor from another store)."""
        if after is None or after <= self._last:
            return False
        return self._store_head is None or after > await self._store_head()

    def open(self, after: int | None, *, on_drop: Callable[[], None], foreign: bool = False) -> tuple[Stream, Resume]:
        """Open a stream of the changes after ``after`` (``None``: from now on) and say where it starts.

        The missed frames come from the ring; ``reset`` when some are no
        longer there, or when ``after`` is ``foreign`` (:meth:`foreign`). A
        cursor ahead of this hub but not of the store (a lagging listener)
        waits for the changes up to it and gets only those after it.
        No await happens between backlog and subscription, so no change falls
        between the two.
        """
        if after is None:
            resume = Resume(frames=[], reset=False, seq=self._last)
        elif after < self._base or foreign:
            resume = Resume(frames=[], reset=True, seq=self._last)
        else:
            resume = Resume(frames=[data for seq, data in self._ring if seq > after], reset=False, seq=self._last)
        # After a reset the client starts over from the newest change: only later ones are sent.
        floor = self._last if after is None or resume.reset else after
        stream = Stream(limit=self.client_buffer, on_drop=on_drop, after=floor)
        self._streams.add(stream)
        return stream, resume

    def close(self, stream: Stream) -> None:
        """Forget a stream (its reader ended)."""
        self._streams.discard(stream)

    def end_all(self, reason: str) -> None:
        """End every stream (the engine is stopping)."""
        for stream in self._streams:
            stream.end(reason)
        self._streams.clear()


def reset_frame(seq: int, reason: str) -> bytes:
    """The ``reset`` message: the client must list again; its id is the newest seq, to resume from."""
    return frame(seq=seq, event="reset", data=json.dumps({"seq": seq, "reason": reason}).encode())


def ready_frame(seq: int) -> bytes:
    """The first message of a stream opened without a cursor: the newest seq, to resume from."""
    return frame(seq=seq, event="ready", data=json.dumps({"seq": seq}).encode())


def first_frames(resume: Resume, after: int | None) -> bytes:
    """What a stream opened at ``after`` starts with: ``retry``, then ``reset`` or ``ready``, then what it missed."""
    first = b"retry: %d\n\n" % RETRY_MS
    if resume.reset:
        first += reset_frame(resume.seq, "the changes after that id are no longer kept: list the jobs again")
    elif after is None:
        first += ready_frame(resume.seq)
    return first + b"".join(resume.frames)


def abort_connection(request: web.Request) -> Callable[[], None]:
    """The ``on_drop`` of a stream serving ``request``: it aborts the request's connection.

    A client that does not read is cut off at once, so that its pending write
    fails and ends the handler instead of holding the connection open.
    """

    def drop() -> None:
        if request.transport is not None:
            request.transport.abort()

    return drop


def sse_response(request: web.Request) -> web.StreamResponse:
    """A ``text/event-stream`` answer (to prepare): never cached, never held back by a buffering proxy."""
    return web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass each message on at once
            "X-Request-Id": request[REQUEST_ID],
        }
    )


@attrs.frozen(kw_only=True)
class Message:
    """One parsed message: its ``id`` (``None`` without one), ``event`` (``message`` by default) and ``data``."""

    id: str | None
    event: str
    data: bytes


class FrameParser:
    """Reads messages back from a stream's bytes, fed in chunks of any size (comments and ``retry`` skipped).

    Only what :func:`frame` and :func:`notice` write is expected: ``\n``
    line ends, one ``data`` line. A message longer than ``limit`` bytes
    raises :class:`ValueError` (the peer is not what it claims to be).
    """

    def __init__(self, limit: int = 4 * 1024 * 1024) -> None:
        self._buffer = b""
        self._limit = limit

    def feed(self, chunk: bytes) -> list[Message]:
        """The messages completed by ``chunk``."""
        self._buffer += chunk
        *blocks, self._buffer = self._buffer.split(b"\n\n")
        if len(self._buffer) > self._limit:
            raise ValueError("event stream message too long")
        messages = []
        for block in blocks:
            fields: dict[bytes, bytes] = {}
            for line in block.split(b"\n"):
                name, _, value = line.partition(b":")
                if name:
                    fields[name] = value[1:] if value.startswith(b" ") else value
            if b"data" in fields:
                raw_id = fields.get(b"id")
                messages.append(
                    Message(
                        id=None if raw_id is None else raw_id.decode("ascii", "replace"),
                        event=fields.get(b"event", b"message").decode("ascii", "replace"),
                        data=fields[b"data"],
                    )
                )
        return messages
