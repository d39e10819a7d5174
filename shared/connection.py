"""Client connections with limits: the protocol that times out slow heads and bodies and tracks idle ones.

:func:`shared.server.serving` builds its runner from here. aiohttp by itself
has no timeout for a request head that trickles in or a body that never
finishes, and keeps every connection it accepts: :class:`Gate` holds the
caps and timeouts of one listening app, :class:`Connection` (aiohttp's
``web_protocol.RequestHandler`` with those checks) enforces them per
connection, and :class:`Runner` makes aiohttp's server use it. The hooks
into aiohttp internals are named in :data:`AIOHTTP_HOOKS`;
:func:`check_aiohttp_hooks` stops the process at start if an aiohttp upgrade
removed them. Repeated connection events are logged once per interval
(:class:`CoalescedLog`, :class:`AcceptErrorHandler`).
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from shared.connection_limits import ConnectionLimits
from shared.contract import ErrorCode, error_body
from shared.text import escape_unprintable
from shared.web import error_code_for, json_error

log = structlog.get_logger("server")

#: errno values of an ``accept()`` (or any socket call) that failed for want of resources.
RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Private attributes of aiohttp's ``RequestHandler`` that the timeouts and the idle tracking read.
AIOHTTP_HOOKS: Final = ("_request_count", "_waiter", "_messages", "_current_request")
#: Private methods of aiohttp's ``RequestHandler`` that :class:`_Connection` extends.
AIOHTTP_METHOD_HOOKS: Final = ("_handle_request",)


def check_aiohttp_hooks() -> None:
    """Raise ``RuntimeError`` if aiohttp's connection protocol lacks what the timeouts and idle tracking rely on."""
    slots = set(getattr(RequestHandler, "__slots__", ()))
    missing = [name for name in AIOHTTP_HOOKS if name not in slots]
    missing += [
        name for name in AIOHTTP_METHOD_HOOKS if not asyncio.iscoroutinefunction(getattr(RequestHandler, name, None))
    ]
    if missing:
        raise RuntimeError(
            f"this aiohttp no longer has RequestHandler.{', '.join(missing)}: "
            "shared/connection.py's connection handling needs to be adapted to it"
        )


class CoalescedLog:
    """One log event that may happen thousands of times a second, written at most once per interval.

    The first occurrence in a quiet period is logged at once with
    ``suppressed=0``; later ones within ``interval`` seconds are only
    counted, and when the interval ends one line with ``suppressed=N`` (and
    the context of the latest occurrence) stands for them and starts the
    next interval. :meth:`close` writes a pending count. Must be used on the
    event loop it was created on.
    """

    def __init__(self, event: str, *, level: str, interval: float) -> None:
        self._event = event
        self._emit: Callable[..., Any] = getattr(log, level)
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._suppressed = 0
        self._context: dict[str, Any] = {}

    def hit(self, **context: Any) -> None:
        """Record one occurrence with its key-value context."""
        if self._timer is None:
            self._emit(self._event, suppressed=0, **context)
            self._timer = self._loop.call_later(self._interval, self._interval_over)
        else:
            self._suppressed += 1
            self._context = context

    def _interval_over(self) -> None:
        self._timer = None
        if self._suppressed:
            self._flush()
            self._timer = self._loop.call_later(self._interval, self._interval_over)

    def _flush(self) -> None:
        count, self._suppressed = self._suppressed, 0
        self._emit(self._event, suppressed=count, **self._context)

    def close(self) -> None:
        """Stop the interval timer and log what was counted since the last line."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._suppressed:
            self._flush()


class AcceptErrorHandler:
    """An event loop exception handler that coalesces resource errors (EMFILE & co.) into one line per interval.

    asyncio reports each failed ``accept()`` to the loop's exception handler,
    whose default writes a traceback per call, and a listening socket that
    keeps failing is retried many times a second. A context whose exception
    is an ``OSError`` with an errno in :data:`RESOURCE_ERRNOS` is counted
    into the ``accept_failed`` event instead; every other context goes to
    the handler that was installed before, or to the loop's default one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._loop = loop
        self._previous = loop.get_exception_handler()
        self._log = CoalescedLog("accept_failed", level="error", interval=interval)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Handle one context reported to the loop."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            self._log.hit(
                error=exc.strerror,
                errno=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
                message=str(context.get("message", "")),
            )
        elif self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)

    def install(self) -> None:
        """Make this the loop's exception handler."""
        self._loop.set_exception_handler(self)

    def uninstall(self) -> None:
        """Put the previous handler back and log what is still counted."""
        self._loop.set_exception_handler(self._previous)
        self._log.close()


def _raw_response(status: int, reason: str, message: str, code: ErrorCode, *headers: str) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection, for a connection without a request."""
    body = json.dumps(error_body(message, code), separators=(",", ":")).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Gate:
    """The state a process's connections share: how many are open (in all, per address, idle), caps, timeouts, logs.

    ``idle`` holds the connections idle in keep-alive, the longest idle
    first, and ``idle_by_address`` the same per client address; a
    connection enters and leaves both in O(1).
    """

    def __init__(self, limits: ConnectionLimits, max_connections: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.cap = max_connections
        self.per_address_cap = limits.per_address_cap(max_connections)
        self.open = 0
        self.per_address: dict[str, int] = {}
        self.idle: OrderedDict[_Connection, None] = OrderedDict()
        self.idle_by_address: dict[str, OrderedDict[_Connection, None]] = {}
        self.header_timeout = limits.header_timeout
        self.body_timeout = limits.body_timeout
        self.busy = _raw_response(
            503, "Service Unavailable", "too many connections; try again shortly", ErrorCode.THROTTLED, "Retry-After: 1"
        )
        self.too_slow = _raw_response(
            408, "Request Timeout", "request head not complete in time", ErrorCode.BAD_REQUEST
        )
        self.body_too_slow = _raw_response(
            408, "Request Timeout", "request body not complete in time", ErrorCode.BAD_REQUEST
        )
        self.refused = CoalescedLog("connection_refused", level="warning", interval=limits.log_interval)
        self.evicted = CoalescedLog("idle_connection_evicted", level="info", interval=limits.log_interval)
        self.timed_out = CoalescedLog("request_head_timeout", level="info", interval=limits.log_interval)
        self.body_timed_out = CoalescedLog("request_body_timeout", level="info", interval=limits.log_interval)
        self.malformed = CoalescedLog("bad_http_request", level="warning", interval=limits.log_interval)

    def close(self) -> None:
        """Log what the coalesced logs still count."""
        for coalesced in (self.refused, self.evicted, self.timed_out, self.body_timed_out, self.malformed):
            coalesced.close()

    def enter_idle(self, connection: _Connection, address: str) -> None:
        """Record ``connection`` (of client ``address``) as idle in keep-alive from now."""
        self.idle[connection] = None
        self.idle_by_address.setdefault(address, OrderedDict())[connection] = None

    def leave_idle(self, connection: _Connection, address: str) -> None:
        """Record that ``connection`` (of client ``address``) is no longer idle, if it was."""
        if connection in self.idle:
            del self.idle[connection]
            same = self.idle_by_address[address]
            del same[connection]
            if not same:
                del self.idle_by_address[address]

    def evict_idle(self, address: str | None = None) -> bool:
        """Close the connection idle in keep-alive the longest (of ``address`` only, if given); False if none is.

        The evicted connection's slots are released at once.
        """
        candidates: Iterable[_Connection] = self.idle if address is None else self.idle_by_address.get(address, ())
        for connection in candidates:
            if connection.evict():
                self.evicted.hit(
                    max_connections=self.cap,
                    max_connections_per_address=self.per_address_cap,
                    per_address=address is not None,
                )
                return True
        return False


#: How much of the parser's reason a malformed request's answer and log line carry.
_MAX_REASON = 120


def _parser_reason(exc: BaseException | None) -> str:
    """The first line of the parser's complaint, escaped and capped (it may quote the client's bytes)."""
    text = exc.message if isinstance(exc, HttpProcessingError) else ""
    first = str(text).split("\n", 1)[0].rstrip(": ") or "unreadable request"
    return escape_unprintable(first[:_MAX_REASON])


def _peer_address(transport: asyncio.BaseTransport) -> str:
    """The client's address (without the port) that the per-address cap counts."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


class _Connection(RequestHandler):
    """aiohttp's connection protocol plus the connection caps, the header and body timeouts, and idle tracking.

    The head timer runs from the connection's start, and from the first byte
    received while aiohttp waits for the next request on a kept-alive
    connection; it stops when aiohttp has parsed a whole head (its count of
    parsed messages moves). When it fires while aiohttp is still waiting for
    a request (its ``_waiter`` is pending: never while a request, its body
    included, is being handled), the connection is closed, with a 408 if the
    client had sent part of a head.

    The body timer runs from a complete head whose body has not fully
    arrived, and stops when the body's stream reaches its end. When it
    fires, the connection is closed, with a 408 if the handler of that
    request has not started a response.

    A connection is idle (in the gate's ``idle`` order) from the end of a
    request handled with keep-alive, its body read in full, until the next
    byte arrives; only then may a new connection at the cap evict it.
    """

    __slots__ = (
        "_address",
        "_body",
        "_body_timer",
        "_counted",
        "_gate",
        "_head_started",
        "_head_timer",
        "_next_bytes",
        "_started",
    )

    def __init__(self, manager: web.Server, gate: Gate, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._started = False
        self._counted = False
        self._address = ""
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False
        # Bytes of a next request arrived since the last complete head (the connection is not idle).
        self._next_bytes = False
        self._body: StreamReader | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        gate = self._gate
        assert isinstance(transport, asyncio.Transport)
        address = _peer_address(transport)
        if (
            gate.per_address_cap
            and gate.per_address.get(address, 0) >= gate.per_address_cap
            and not gate.evict_idle(address)
        ):
            self._refuse(transport, limit="max_connections_per_address", peer=address)
            return
        if gate.open >= gate.cap and not gate.evict_idle():
            self._refuse(transport, limit="max_connections", peer=address)
            return
        gate.open += 1
        gate.per_address[address] = gate.per_address.get(address, 0) + 1
        self._address = address
        self._counted = self._started = True
        super().connection_made(transport)
        self._arm_head_timer()

    def _refuse(self, transport: asyncio.Transport, **context: Any) -> None:
        # Accepted only to be closed: the descriptor is released in this loop iteration.
        transport.write(self._gate.busy)
        transport.close()
        self._gate.refused.hit(
            max_connections=self._gate.cap, max_connections_per_address=self._gate.per_address_cap, **context
        )

    def _release(self) -> None:
        """Give back this connection's slots (at most once)."""
        if not self._counted:
            return
        self._counted = False
        gate = self._gate
        gate.open -= 1
        gate.leave_idle(self, self._address)
        left = gate.per_address[self._address] - 1
        if left:
            gate.per_address[self._address] = left
        else:
            del gate.per_address[self._address]

    def evict(self) -> bool:
        """Close this connection if it is idle in keep-alive, releasing its slots at once; whether it was."""
        if not self._awaiting_request() or self._next_bytes or self._messages:
            # Inside a request, or not yet back to waiting for the next one after a response.
            return False
        self._release()
        self.force_close()
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._started:
            return
        self._started = False
        self._release()
        self._stop_head_timer()
        self._stop_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        # Bytes that end a body are not a next request's, even though the body is complete after them.
        body_pending = self._body is not None
        super().data_received(data)
        if data:
            self._gate.leave_idle(self, self._address)
        if self._request_count != heads:
            self._stop_head_timer()
            self._next_bytes = False
            self._watch_body(self._messages[-1][1])
            return
        if not data:
            return
        if not body_pending:
            self._next_bytes = True
        if self._head_timer is None and self._awaiting_request():
            self._arm_head_timer()
        if self._head_timer is not None:
            self._head_started = True

    async def _handle_request(
        self,
        request: BaseRequest,
        start_time: float | None,
        request_handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        response, reset = await super()._handle_request(request, start_time, request_handler)
        if (
            self._counted
            and not reset
            and response.keep_alive
            and not self._next_bytes
            and not self._messages
            and self._body is None
        ):
            self._gate.enter_idle(self, self._address)
        return response, reset

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """Answer a request aiohttp could not parse (a 4xx) as a JSON error, logged once per interval.

        A 5xx (aiohttp's own failure, not the client's) keeps aiohttp's
        answer and its logged traceback, except for a handler that failed
        reading a body because the connection is gone (the client left, or
        the body timeout cut it off): there is no one to answer and nothing
        wrong with the process. Like aiohttp, this closes the connection and
        raises ``ConnectionError`` if part of a response was already sent.
        """
        if isinstance(exc, ConnectionResetError) and self.transport is None:
            raise ConnectionError("the connection is gone; there is no one to answer")
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        reason = _parser_reason(exc)
        self._gate.malformed.hit(status=status, reason=reason, peer=request.remote)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent; cannot send the error")
        response = json_error(
            status,
            f"malformed HTTP request: {reason}",
            error_code_for(status),
            {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )
        response.force_close()
        return response

    def _awaiting_request(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm_head_timer(self) -> None:
        self._head_timer = self._gate.loop.call_later(self._gate.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_started = False

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._awaiting_request():
            return
        transport = self.transport
        if self._head_started and isinstance(transport, asyncio.Transport):
            transport.write(self._gate.too_slow)
        self._head_started = False
        self._gate.timed_out.hit(header_timeout=self._gate.header_timeout)
        self.force_close()

    def _watch_body(self, body: StreamReader) -> None:
        """Start the body timer for the latest request's body unless it is already complete."""
        if body.is_eof():
            return
        self._stop_body_timer()
        self._body = body
        self._body_timer = self._gate.loop.call_later(self._gate.body_timeout, self._body_timed_out)
        body.on_eof(self._stop_body_timer)

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._body = None

    def _body_timed_out(self) -> None:
        body, self._body_timer, self._body = self._body, None, None
        if body is None or body.is_eof():
            return
        request = self._current_request
        transport = self.transport
        if (
            request is not None
            and request.content is body
            and request.writer.output_size == 0
            and isinstance(transport, asyncio.Transport)
        ):
            transport.write(self._gate.body_too_slow)
        self._gate.body_timed_out.hit(body_timeout=self._gate.body_timeout)
        self.force_close()


class _Server(web.Server):
    """aiohttp's low-level server making :class:`_Connection` protocols, built from the one aiohttp made."""

    def __init__(self, base: web.Server, gate: Gate) -> None:
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=gate.loop,
            **base._kwargs,
        )
        self._gate = gate

    def __call__(self) -> RequestHandler:
        return _Connection(self, self._gate, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """aiohttp's application runner whose server is a :class:`_Server`."""

    __slots__ = ("_gate",)

    def __init__(self, app: web.Application, gate: Gate, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._gate = gate

    async def _make_server(self) -> web.Server:
        return _Server(await super()._make_server(), self._gate)
