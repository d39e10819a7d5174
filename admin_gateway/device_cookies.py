"""Device cookies: a browser that signed in to an account before is let through that account's limit.

After a successful sign-in the gateway sets ``gw_device`` (``__Host-gw_device``
over HTTPS, like the session cookie): ``HttpOnly``, ``SameSite=Strict``,
``Path=/``, with a ``Max-Age`` of :data:`LIFETIME`. Its value names the
account, a random device id and an expiry time, signed with HMAC-SHA256
under a key kept in ``<data-dir>/device_cookie.key`` (mode 0600, created at
the first start; deleting it voids every device cookie). The signature is
checked in constant time; a cookie for another account, an expired one or
a forged one is simply not a device cookie.

What a valid one buys is decided by :mod:`admin_gateway.throttle`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from .peer import Network, is_https
from .settings import SettingsError

COOKIE_NAME: Final = "gw_device"
#: Over HTTPS: the browser then only accepts it Secure, Path=/, host-only.
SECURE_COOKIE_NAME: Final = "__Host-gw_device"
KEY_FILE: Final = "device_cookie.key"
#: How long a device stays trusted after its last successful sign-in.
LIFETIME: Final = 30 * 24 * 3600
_VERSION: Final = "d1"
_KEY_BYTES: Final = 32


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_key(data_dir: Path) -> bytes:
    """Return the signing key from ``<data_dir>/device_cookie.key``, creating it (mode 0600) if missing.

    Blocking. Raises ``OSError`` if it can neither be read nor created, and
    :class:`SettingsError` if the file holds no usable key.
    """
    path = data_dir / KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (secrets.token_hex(_KEY_BYTES) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise SettingsError(f"{path} does not hold a hex key; delete it to make a new one") from None
    if len(key) < 16:
        raise SettingsError(f"{path} holds a key shorter than 16 bytes; delete it to make a new one")
    return key


class DeviceCookies:
    """Issues and checks device cookies; unusable until :meth:`use_key` (the app's start) gave it a key."""

    def __init__(self, *, clock: Callable[[], float], trusted_proxies: tuple[Network, ...]) -> None:
        self._clock = clock
        self._trusted = trusted_proxies
        self._key: bytes | None = None

    def use_key(self, key: bytes) -> None:
        """Sign and check with ``key`` from now on."""
        self._key = key

    def _sign(self, payload: str) -> str:
        if self._key is None:
            raise RuntimeError("device cookies have no key yet (the app has not started)")
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def cookie_name(self, request: web.Request) -> str:
        """The cookie's name for this request (the ``__Host-`` one over HTTPS)."""
        return SECURE_COOKIE_NAME if is_https(request, self._trusted) else COOKIE_NAME

    def issue(self, account: str) -> str:
        """Return a new cookie value for ``account`` (a fresh device id, valid for :data:`LIFETIME`)."""
        expires = int(self._clock()) + LIFETIME
        payload = f"{_VERSION}.{_b64(account.encode())}.{secrets.token_urlsafe(16)}.{expires}"
        return f"{payload}.{self._sign(payload)}"

    def device_id(self, value: str, account_key: Callable[[str], str], username: str) -> str | None:
        """The device id of cookie ``value`` if it is genuine, unexpired and for ``username``, else ``None``.

        Account names are compared through ``account_key`` (the throttle's
        case folding), so the cookie covers every spelling that shares the
        account's budget.
        """
        if self._key is None:
            return None
        parts = value.split(".")
        if len(parts) != 5 or parts[0] != _VERSION:
            return None
        payload, signature = ".".join(parts[:4]), parts[4]
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode("ascii", "replace")):
            return None
        try:
            account = _unb64(parts[1]).decode()
            expires = int(parts[3])
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if expires <= self._clock() or account_key(account) != account_key(username):
            return None
        return parts[2]

    def from_request(self, request: web.Request, account_key: Callable[[str], str], username: str) -> str | None:
        """The device id of the request's device cookie for ``username``, or ``None``."""
        value = request.cookies.get(self.cookie_name(request))
        return None if value is None else self.device_id(value, account_key, username)

    def set_cookie(self, request: web.Request, response: web.StreamResponse, account: str) -> None:
        """Put a fresh device cookie for ``account`` on ``response``."""
        name = self.cookie_name(request)
        response.set_cookie(name, self.issue(account), max_age=LIFETIME, path="/", httponly=True,
                            secure=True if name == SECURE_COOKIE_NAME else None, samesite="Strict")


#: The app's device cookie signer.
DEVICE_COOKIES = web.AppKey("device_cookies", DeviceCookies)


def device_key_ctx(data_dir: Path) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx that loads (or creates) the signing key in ``data_dir`` before the first request."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[DEVICE_COOKIES].use_key(await asyncio.to_thread(load_or_create_key, data_dir))
        yield

    return ctx
