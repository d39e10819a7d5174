"""How many client connections a process keeps, and for how long: the values and the fd budget.

Kept apart from :mod:`shared.server` (which needs aiohttp) so that settings
modules can import the defaults without slowing down client commands.

A connection costs a file descriptor. When the process runs out of them,
``accept()`` fails with EMFILE and so does everything else that opens a
file (the journal, job logs, pipes to job processes). The connection cap is
therefore kept below the descriptor limit (``RLIMIT_NOFILE``) by
:data:`FD_RESERVE`: past the cap a new connection is closed at once, so
``accept()`` never meets the limit because of clients.
"""

from __future__ import annotations

import resource
from typing import Final, Protocol

import attrs

#: The cap on open client connections when none is configured (lowered to fit the fd limit).
DEFAULT_MAX_CONNECTIONS: Final = 1024
#: Seconds a client has to send a complete request head, counted from the connection's start or
#: from the first byte of a request on a kept-alive connection.
DEFAULT_HEADER_TIMEOUT: Final = 10.0
#: Seconds an idle kept-alive connection stays open. Above nginx's upstream ``keepalive_timeout``
#: (60 s), so that nginx, not this process, closes an idle upstream connection: otherwise nginx
#: may send a request on a connection this process is closing at that very moment.
DEFAULT_KEEPALIVE_TIMEOUT: Final = 75.0
#: Seconds a request's body has to arrive in full once its head is complete.
DEFAULT_BODY_TIMEOUT: Final = 30.0
#: The share of the connection cap one client address may hold when no per-address cap is configured.
DEFAULT_PER_ADDRESS_SHARE: Final = 4
#: Seconds between two log lines of one repeated connection event (accept errors, refusals).
DEFAULT_LOG_INTERVAL: Final = 10.0
#: File descriptors held back from clients for everything else: listening sockets, the accept
#: batch (asyncio accepts up to the listen backlog, 128, in one go before any is closed), the
#: engine's job log files and pipes, the journal, the gateway's connections to the engine and Redis.
FD_RESERVE: Final = 256


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _optional_not_negative(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _optional_positive(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


class HasConnectionSettings(Protocol):
    """What a process's settings carry for :meth:`ConnectionLimits.of` (both processes' ``Settings``)."""

    @property
    def max_connections(self) -> int | None: ...
    @property
    def header_timeout(self) -> float: ...
    @property
    def keepalive_timeout(self) -> float: ...
    @property
    def body_timeout(self) -> float: ...
    @property
    def max_connections_per_address(self) -> int | None: ...


@attrs.frozen(kw_only=True)
class ConnectionLimits:
    """The limits :func:`shared.server.serving` applies to client connections.

    ``max_connections`` caps open connections; ``None`` means
    :data:`DEFAULT_MAX_CONNECTIONS`, lowered to fit the fd limit (see
    :func:`plan_fd_limit`). ``header_timeout`` is the time a client has to
    send a whole request head; ``keepalive_timeout`` the time an idle
    kept-alive connection stays open; ``body_timeout`` the time a request's
    body has to arrive in full once its head is complete.
    ``max_connections_per_address`` caps the connections of one client
    address (``None``: a :data:`DEFAULT_PER_ADDRESS_SHARE`-th of the cap,
    ``0``: no per-address cap, for a process behind a proxy whose
    connections all come from one address). ``log_interval`` spaces the log
    lines of a repeated connection event.
    """

    max_connections: int | None = attrs.field(default=None, validator=_optional_positive)
    header_timeout: float = attrs.field(default=DEFAULT_HEADER_TIMEOUT, validator=_positive)
    keepalive_timeout: float = attrs.field(default=DEFAULT_KEEPALIVE_TIMEOUT, validator=_positive)
    body_timeout: float = attrs.field(default=DEFAULT_BODY_TIMEOUT, validator=_positive)
    max_connections_per_address: int | None = attrs.field(default=None, validator=_optional_not_negative)
    log_interval: float = attrs.field(default=DEFAULT_LOG_INTERVAL, validator=_positive)

    @classmethod
    def of(cls, settings: HasConnectionSettings) -> ConnectionLimits:
        """Return the limits named by a process's settings."""
        return cls(
            max_connections=settings.max_connections,
            header_timeout=settings.header_timeout,
            keepalive_timeout=settings.keepalive_timeout,
            body_timeout=settings.body_timeout,
            max_connections_per_address=settings.max_connections_per_address,
        )

    def per_address_cap(self, max_connections: int) -> int:
        """The per-address cap to apply under the connection cap ``max_connections``; 0 for none."""
        if self.max_connections_per_address is not None:
            return self.max_connections_per_address
        return max(1, max_connections // DEFAULT_PER_ADDRESS_SHARE)


@attrs.frozen(kw_only=True)
class FdPlan:
    """The outcome of :func:`plan_fd_limit`.

    ``soft_limit`` is the ``RLIMIT_NOFILE`` soft limit to run with
    (``resource.RLIM_INFINITY`` for none), ``max_connections`` the cap to
    apply, ``short`` whether a configured cap leaves less than
    :data:`FD_RESERVE` descriptors for the rest of the process.
    """

    soft_limit: int
    max_connections: int
    short: bool


def plan_fd_limit(requested: int | None, soft: int, hard: int) -> FdPlan:
    """Return the soft fd limit and the connection cap for a configured cap ``requested``.

    The soft limit is raised, up to the hard limit, to make room for the cap
    plus :data:`FD_RESERVE` (raising it needs no privilege). Without a
    configured cap the default one is lowered until that reserve fits (for a
    tiny limit, half of it is left to clients). A configured cap is kept as
    it is, but ``short`` says when it does not fit.
    """
    infinite = resource.RLIM_INFINITY
    wanted = (requested or DEFAULT_MAX_CONNECTIONS) + FD_RESERVE
    if soft != infinite and soft < wanted:
        soft = wanted if hard == infinite else max(soft, min(wanted, hard))
    if soft == infinite:
        return FdPlan(soft_limit=soft, max_connections=requested or DEFAULT_MAX_CONNECTIONS, short=False)
    if requested is not None:
        return FdPlan(soft_limit=soft, max_connections=requested, short=requested + FD_RESERVE > soft)
    room = soft - min(FD_RESERVE, soft // 2)
    return FdPlan(soft_limit=soft, max_connections=max(1, min(DEFAULT_MAX_CONNECTIONS, room)), short=False)


def apply_fd_limit(requested: int | None) -> FdPlan:
    """Plan the fd limit for the configured cap (:func:`plan_fd_limit`) and raise the soft limit to it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    plan = plan_fd_limit(requested, soft, hard)
    if plan.soft_limit != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (plan.soft_limit, hard))
    return plan
