"""Serving an app until SIGINT/SIGTERM, with limits on client connections: both processes' one way to listen.

aiohttp by itself accepts every connection, keeps a silent one for an hour
(its keep-alive timeout) and has no timeout for a request head that trickles
in, so a few thousand slow clients hold as many file descriptors until the
process cannot accept anything any more. :func:`serving` adds:

- a cap on open connections (:class:`~shared.connection_limits.ConnectionLimits`,
  kept below ``RLIMIT_NOFILE``): a new connection at the cap closes the
  connection that has idled longest in keep-alive (waiting for its next
  request, no byte of it received) and takes its place; only when there is
  none does it get a ``503`` and is closed at once, holding no descriptor
  and leaving no client hanging;
- a cap on the connections of one client address: past it that address's
  own longest-idle connection gives way in the same manner, or its new
  connection gets the ``503`` at once, whatever the other addresses do;
- a header-read timeout: a connection whose request head is not complete
  within ``header_timeout`` of its start (or of the first byte of a later
  request) gets a ``408`` if it sent anything and is closed;
- a body timeout: a request whose body has not arrived in full within
  ``body_timeout`` of its head gets a ``408`` (if no response was started)
  and its connection is closed (aiohttp has no timeout on body reads);
- aiohttp's own keep-alive timeout, set from the limits;
- one log line per interval, with the count of the ones left out, for
  repeated accept errors (asyncio logs each one, with a traceback) and for
  refused and timed-out connections;
- a JSON error (``{"error", "code"}``) for a request aiohttp's parser refuses
  (ambiguous framing, a bad request line, a header it cannot read), logged
  as ``bad_http_request`` once per interval instead of aiohttp's ERROR line
  with a traceback per request: such requests never reach the request
  wrapper, and a flood of them must not become a flood of log lines.

The timeouts and the idle tracking hook into aiohttp's connection protocol
(``web_protocol.RequestHandler``, in :mod:`shared.connection`): :func:`~shared.connection.check_aiohttp_hooks` names the
internals it relies on and stops the process at start if an aiohttp upgrade
removed them; ``tests/e2e/test_slow_connections.py`` proves the
behaviour against real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import structlog
from aiohttp import web

from shared.connection import AcceptErrorHandler, Gate, Runner, check_aiohttp_hooks
from shared.connection_limits import ConnectionLimits, FdPlan, apply_fd_limit

log = structlog.get_logger("server")


@attrs.frozen(kw_only=True)
class Serving:
    """What :func:`serving` yields: the listening URLs and the limits in force."""

    urls: tuple[str, ...]
    max_connections: int
    fd_limit: int

    async def until_stopped(self) -> None:
        """Return when the process receives SIGINT or SIGTERM."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)


def _url(address: Any) -> str:
    host, port = address[0], address[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _log_fd_plan(plan: FdPlan, limits: ConnectionLimits) -> None:
    if plan.short:
        log.warning(
            "max_connections_above_fd_limit",
            max_connections=plan.max_connections,
            fd_limit=plan.soft_limit,
            hint="raise LimitNOFILE (ulimit -n) or lower max_connections, or accept() may fail with EMFILE",
        )
    log.info(
        "connection_limits",
        max_connections=plan.max_connections,
        fd_limit=plan.soft_limit,
        max_connections_per_address=limits.per_address_cap(plan.max_connections),
        header_timeout=limits.header_timeout,
        body_timeout=limits.body_timeout,
        keepalive_timeout=limits.keepalive_timeout,
    )


@contextlib.asynccontextmanager
async def serving(
    app: web.Application,
    *,
    host: str,
    port: int,
    limits: ConnectionLimits,
    after_setup: Callable[[], None] | None = None,
) -> AsyncIterator[Serving]:
    """Start ``app`` (its startup hooks), listen on ``host:port`` under ``limits``; clean up on exit.

    Raises the app's startup errors and ``OSError`` when the address cannot
    be bound, after cleaning up. ``after_setup`` runs once the app has
    started, before the socket listens. While serving, the loop's exception
    handler is an :class:`AcceptErrorHandler`.
    """
    check_aiohttp_hooks()
    plan = apply_fd_limit(limits.max_connections)
    loop = asyncio.get_running_loop()
    accept_errors = AcceptErrorHandler(loop, limits.log_interval)
    accept_errors.install()
    gate = Gate(limits, plan.max_connections)
    runner = Runner(app, gate, access_log=None, handle_signals=False, keepalive_timeout=limits.keepalive_timeout)
    try:
        await runner.setup()
        if after_setup is not None:
            after_setup()
        await web.TCPSite(runner, host, port).start()
        _log_fd_plan(plan, limits)
        yield Serving(
            urls=tuple(_url(a) for a in runner.addresses),
            max_connections=plan.max_connections,
            fd_limit=plan.soft_limit,
        )
    finally:
        await runner.cleanup()
        gate.close()
        accept_errors.uninstall()
