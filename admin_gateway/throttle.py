"""Failed-login throttling per account and per client address (sliding one-hour window).

Only failures count, and an unknown account name counts like a known one so
the throttle itself tells nothing about which names exist. Once a key has
hit its limit every attempt is refused with 429 *before* the password is
checked, so a guesser learns nothing more until the window slides.

The counters live in this process (bounded: at most ``max_keys`` keys, the
least recently failed forgotten first); gateways sharing sessions through
Redis each throttle on their own.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable

from aiohttp import web

WINDOW = 3600.0


class _Counter:
    """Failure timestamps per key, at most ``limit`` kept per key."""

    def __init__(self, limit: int, max_keys: int) -> None:
        self.limit = limit
        self._max_keys = max_keys
        self._stamps: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str, now: float) -> float | None:
        stamps = self._stamps.get(key)
        if stamps is None:
            return None
        while stamps and now - stamps[0] >= WINDOW:
            stamps.popleft()
        if not stamps:
            del self._stamps[key]
            return None
        if len(stamps) >= self.limit:
            return WINDOW - (now - stamps[0])
        return None

    def add(self, key: str, now: float) -> None:
        stamps = self._stamps.get(key)
        if stamps is None:
            stamps = self._stamps[key] = deque(maxlen=self.limit)
        stamps.append(now)
        self._stamps.move_to_end(key)
        while len(self._stamps) > self._max_keys:
            self._stamps.popitem(last=False)


class LoginThrottle:
    """Counts failed logins and says when the next attempt must be refused."""

    def __init__(self, *, clock: Callable[[], float], per_account: int, per_address: int,
                 max_keys: int = 100_000) -> None:
        self._clock = clock
        self._accounts = _Counter(per_account, max_keys)
        self._addresses = _Counter(per_address, max_keys)

    @staticmethod
    def account_key(username: str) -> str:
        """Return the key of an account name (case-folded: ``Admin`` and ``admin`` share a budget)."""
        return username.casefold()[:128]

    def retry_after(self, username: str, address: str) -> int | None:
        """Return whole seconds to wait if this account or address is throttled, else ``None``."""
        now = self._clock()
        waits = [w for w in (self._accounts.retry_after(self.account_key(username), now),
                             self._addresses.retry_after(address, now)) if w is not None]
        if not waits:
            return None
        return max(1, math.ceil(max(waits)))

    def record_failure(self, username: str, address: str) -> None:
        """Count one failed attempt against the account and the address."""
        now = self._clock()
        self._accounts.add(self.account_key(username), now)
        self._addresses.add(address, now)


#: The app's login throttle.
LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)
