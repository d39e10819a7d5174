"""Failed-login throttling: per account, per client address, per (account, address) and per device.

Every attempt is *reserved* before its password is checked: the reservation
counts as a failure at once, so a burst of parallel attempts cannot all
slip past a limit while their checks are still running. A successful
sign-in, or an attempt the gateway could not check at all, releases its
reservation; anything else stays counted (deny by default).

The limits, each in a sliding one-hour window:

- per client address, across all accounts (a password sprayer);
- per (account, address) with growing delays: the first few failures are
  free, then each further attempt must wait twice as long as the one before,
  up to a cap. A success from that address resets it;
- per account, but only for browsers without a *device cookie* for that
  account (OWASP "Slow Down Online Guessing Attacks with Device Cookies").
  A browser that signed in to the account before is not held back by
  guesses made elsewhere, so the account limit is no longer a lock anybody
  can put on anybody; the guessers stay limited by it;
- per device cookie: a trusted browser that keeps failing is locked in turn.

"Address" means an IPv4 address, or an IPv6 address's /64 network
(:meth:`LoginThrottle.address_key`): whoever has one IPv6 address usually
has the whole /64 (2^64 addresses) to rotate through.

Unknown account names count like known ones, so the throttle tells nothing
about which names exist. The counters live in this process (at most
``max_keys`` keys per kind, the least recently failed forgotten first);
gateways sharing sessions through Redis each throttle on their own.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Literal

import attrs
from aiohttp import web

WINDOW = 3600.0
#: IPv6 clients are throttled per network of this prefix length.
IPV6_PREFIX = 64
#: The first growing delay, in seconds; each further failure doubles it.
FIRST_DELAY = 1.0

#: Which limit refused an attempt (recorded in the audit trail).
Limit = Literal["account", "address", "account_address", "device"]


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

    def discard(self, key: str, stamp: float) -> None:
        stamps = self._stamps.get(key)
        if stamps is None:
            return
        # Equal stamps are interchangeable; a stamp that already slid out of the window is gone anyway.
        with contextlib.suppress(ValueError):
            stamps.remove(stamp)
        if not stamps:
            del self._stamps[key]


@attrs.define
class _Streak:
    failures: int
    last: float


class _Delays:
    """Growing delays per key: after ``free`` failures, wait ``FIRST_DELAY * 2**(n - free)`` (capped)."""

    def __init__(self, free: int, cap: float, max_keys: int) -> None:
        self._free = free
        self._cap = cap
        self._max_keys = max_keys
        self._streaks: OrderedDict[str, _Streak] = OrderedDict()

    def retry_after(self, key: str, now: float) -> float | None:
        streak = self._streaks.get(key)
        if streak is None:
            return None
        if now - streak.last >= WINDOW:  # an hour of quiet forgives the streak
            del self._streaks[key]
            return None
        if streak.failures < self._free:
            return None
        delay = min(self._cap, FIRST_DELAY * 2.0 ** (streak.failures - self._free))
        wait = streak.last + delay - now
        return wait if wait > 0 else None

    def add(self, key: str, now: float) -> float | None:
        """Count one failure; return the previous failure's time (``None`` if it is the first)."""
        streak = self._streaks.get(key)
        previous = None
        if streak is None:
            self._streaks[key] = _Streak(failures=1, last=now)
        else:
            previous, streak.last = streak.last, now
            streak.failures += 1
        self._streaks.move_to_end(key)
        while len(self._streaks) > self._max_keys:
            self._streaks.popitem(last=False)
        return previous

    def undo(self, key: str, previous: float | None) -> None:
        """Take back one failure counted by :meth:`add` (which returned ``previous``)."""
        streak = self._streaks.get(key)
        if streak is not None:
            streak.failures -= 1
            if streak.failures <= 0 or previous is None:
                del self._streaks[key]
            else:
                streak.last = previous

    def reset(self, key: str) -> None:
        self._streaks.pop(key, None)


@attrs.frozen(kw_only=True)
class Refusal:
    """An attempt refused before its password is checked: wait ``retry_after`` whole seconds."""

    retry_after: int
    limit: Limit


class Reservation:
    """One admitted attempt, already counted as a failure.

    Call :meth:`signed_in` after a correct password, or :meth:`unchecked`
    when the password was never checked; otherwise it stays a failure.
    Only the first of those calls has an effect.
    """

    def __init__(
        self,
        throttle: LoginThrottle,
        *,
        account: str | None,
        address: str,
        pair: str,
        pair_previous: float | None,
        device: str | None,
        stamp: float,
    ) -> None:
        self._throttle = throttle
        self._account = account
        self._address = address
        self._pair = pair
        self._pair_previous = pair_previous
        self._device = device
        self._stamp = stamp
        self._settled = False

    @property
    def address(self) -> str:
        """The client's throttling key (:meth:`LoginThrottle.address_key`), as this attempt was counted under."""
        return self._address

    def _discard(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        t = self._throttle
        if self._account is not None:
            t._accounts.discard(self._account, self._stamp)
        if self._device is not None:
            t._devices.discard(self._device, self._stamp)
        t._addresses.discard(self._address, self._stamp)
        return True

    def signed_in(self) -> None:
        """The password was right: this attempt is no failure, and this address's delays for the account end."""
        if self._discard():
            self._throttle._pairs.reset(self._pair)

    def unchecked(self) -> None:
        """The password was never checked (the gateway was too busy): forget this attempt."""
        if self._discard():
            self._throttle._pairs.undo(self._pair, self._pair_previous)


class LoginThrottle:
    """Admits or refuses login attempts (see the module doc); every method is synchronous and cheap."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        per_account: int,
        per_address: int,
        free_attempts: int = 5,
        max_delay: float = 900.0,
        per_device: int = 10,
        max_keys: int = 100_000,
    ) -> None:
        self._clock = clock
        self._accounts = _Counter(per_account, max_keys)
        self._addresses = _Counter(per_address, max_keys)
        self._devices = _Counter(per_device, max_keys)
        self._pairs = _Delays(free_attempts, max_delay, max_keys)

    @staticmethod
    def account_key(username: str) -> str:
        """Return the key of an account name (case-folded: ``Admin`` and ``admin`` share a budget)."""
        return username.casefold()[:128]

    @staticmethod
    def address_key(address: str) -> str:
        """Return the throttling key of a client address: IPv4 as it is, IPv6 as its /64 network.

        An IPv4 address written as IPv6 (``::ffff:192.0.2.1``) counts as that
        IPv4 address. Anything that is not an IP address is its own key.
        """
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
        return str(ip)

    def reserve(self, username: str, address: str, *, device: str | None = None) -> Reservation | Refusal:
        """Admit one attempt (counted as a failure until settled) or refuse it.

        ``device`` is the id of a valid device cookie *for this account* (see
        :mod:`admin_gateway.auth.device_cookies`), or ``None``: with one, the
        device's own limit applies instead of the account's.
        """
        now = self._clock()
        account = self.account_key(username)
        address = self.address_key(address)
        pair = f"{account}\x00{address}"
        checks: list[tuple[Limit, float | None]] = [
            ("address", self._addresses.retry_after(address, now)),
            ("account_address", self._pairs.retry_after(pair, now)),
            ("device", self._devices.retry_after(device, now))
            if device is not None
            else ("account", self._accounts.retry_after(account, now)),
        ]
        waits = [(wait, limit) for limit, wait in checks if wait is not None]
        if waits:
            wait, limit = max(waits)
            return Refusal(retry_after=max(1, math.ceil(wait)), limit=limit)
        self._addresses.add(address, now)
        pair_previous = self._pairs.add(pair, now)
        if device is not None:
            self._devices.add(device, now)
        else:
            self._accounts.add(account, now)
        return Reservation(
            self,
            account=None if device is not None else account,
            address=address,
            pair=pair,
            pair_previous=pair_previous,
            device=device,
            stamp=now,
        )


#: The app's login throttle.
LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)
