"""Password checks off the event loop, in their own threads, with a bounded queue.

argon2 is slow on purpose. On the shared default thread pool a login flood
queued hundreds of checks in front of everything else that pool runs, the
audit journal's writes included (they now have their own thread too). Here
checks run in a dedicated pool of ``workers`` threads, and at most
``queue`` more may wait for one: past that an attempt is refused at once
(:class:`HasherBusy`) instead of waiting behind a flood. The threads run at
a lower CPU priority than the event loop's: on a small machine the hashing
of a flood must not starve the loop that serves everybody else.

Fairness. One client (an address, or an IPv6 /64: the caller passes the
throttle's address key) may hold at most ``per_address`` of the slots at
once, so rotating user names from one place cannot fill the queue. And
``reserved`` slots are kept for attempts that carry a valid device cookie
for their account: a flood from many addresses still cannot shut out a
browser that signed in before.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from aiohttp import web

T = TypeVar("T")
#: How much lower the checking threads' CPU priority is than the rest of the process.
_NICENESS = 10


class HasherBusy(Exception):
    """The check was not started: the slots it may use are full (``per_address``: its address's share is)."""

    def __init__(self, *, per_address: bool) -> None:
        super().__init__("per-address share full" if per_address else "password checks full")
        self.per_address = per_address


class PasswordChecks:
    """Runs blocking password checks in ``workers`` threads with at most ``queue`` waiting.

    At most ``per_address`` of them per client key, and ``reserved`` (below
    ``workers + queue``) only for attempts with a trusted device. Usable
    between :meth:`start` and :meth:`close` (the app's ``cleanup_ctx``).
    """

    def __init__(self, *, workers: int, queue: int, per_address: int | None = None, reserved: int = 0) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self.per_address = per_address if per_address is not None else self.capacity
        self.reserved = reserved
        self._pending = 0
        self._by_client: dict[str, int] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def pending(self) -> int:
        """Checks running or waiting now."""
        return self._pending

    def start(self) -> None:
        """Create the threads' pool (threads start with the first checks)."""
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="password-check", initializer=_lower_priority
        )

    async def close(self) -> None:
        """Drop the waiting checks, let the running ones finish, then stop the threads."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    async def run(self, check: Callable[..., T], *args: object, client: str = "", trusted: bool = False) -> T:
        """Return ``check(*args)`` run in a worker thread; raise :class:`HasherBusy` at once if no slot is free.

        ``client`` is the caller's address key (its share is ``per_address``
        slots); ``trusted`` says the attempt has a valid device cookie for its
        account (it may use the reserved slots).
        """
        if self._executor is None:
            raise RuntimeError("password checks are not started")
        if self._pending >= self.capacity - (0 if trusted else self.reserved):
            raise HasherBusy(per_address=False)
        if self._by_client.get(client, 0) >= self.per_address:
            raise HasherBusy(per_address=True)
        loop = asyncio.get_running_loop()
        future = self._executor.submit(check, *args)
        self._pending += 1
        self._by_client[client] = self._by_client.get(client, 0) + 1
        # Counted down when the thread is done, not when the caller stops waiting: a cancelled
        # request's check still occupies its thread.
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._done, client))
        return await asyncio.wrap_future(future)

    def _done(self, client: str) -> None:
        self._pending -= 1
        left = self._by_client.pop(client) - 1
        if left:
            self._by_client[client] = left


def _lower_priority() -> None:
    """Make the calling thread yield the CPU to the event loop's thread (Linux: threads have their own nice)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _NICENESS)


#: The app's password checks.
PASSWORD_CHECKS = web.AppKey("password_checks", PasswordChecks)


async def password_checks_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: start the app's :data:`PASSWORD_CHECKS` threads, stop them at the end."""
    checks = app[PASSWORD_CHECKS]
    checks.start()
    try:
        yield
    finally:
        await checks.close()
