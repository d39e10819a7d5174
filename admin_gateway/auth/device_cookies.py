"""Device cookies: a browser that signed in to an account before is let through that account's limit.

After a successful sign-in the gateway sets ``gw_device`` (``__Host-gw_device``
over HTTPS, like the session cookie): ``HttpOnly``, ``SameSite=Strict``,
``Path=/``, with a ``Max-Age`` of :data:`LIFETIME`. Its value names the
account, a random device id and an expiry time, signed with HMAC-SHA256
under a key kept in ``<data-dir>/device_cookie.key`` (mode 0600, created at
the first start; deleting it voids every device cookie). The signature is
checked in constant time; a cookie for another account, an expired one, a
forged one or one that is not even shaped like ours (any byte outside
``[A-Za-z0-9_.-]``) is simply not a device cookie.

The key file is written whole or not at all (a temporary file renamed into
place). An *empty* key file, which only an older gateway killed between
creating and writing it can leave, is replaced by a new key: no cookie can
have been signed with a key that was never written, so nothing is lost. A
non-empty file that holds no usable key stops the start with a one-line
message naming it (it may be an operator's mistake worth looking at).

What a valid one buys is decided by :mod:`admin_gateway.auth.throttle`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

import structlog
from aiohttp import web

from admin_gateway.auth.signing import b64url, mac, mac_matches
from admin_gateway.peer import Network, is_https
from admin_gateway.settings import SettingsError
from shared.journal.snapshot import write_durably

COOKIE_NAME: Final = "gw_device"
#: Over HTTPS: the browser then only accepts it Secure, Path=/, host-only.
SECURE_COOKIE_NAME: Final = "__Host-gw_device"
KEY_FILE: Final = "device_cookie.key"
#: How long a device stays trusted after its last successful sign-in.
LIFETIME: Final = 30 * 24 * 3600
_VERSION: Final = "d1"
_KEY_BYTES: Final = 32
#: What one of our cookie values can look like (base64url parts, digits, dots); anything else is not ours.
_SHAPE: Final = re.compile(r"[A-Za-z0-9_.-]{1,512}")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_key(data_dir: Path) -> bytes:
    """Return the signing key from ``<data_dir>/device_cookie.key``, creating it (mode 0600) if missing.

    Blocking. A new key is written whole or not at all; an empty file is
    replaced by a new key (see the module doc). Raises ``OSError`` if it can
    neither be read nor created, and :class:`SettingsError` if a non-empty
    file holds no usable key.
    """
    path = data_dir / KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        text = b""
    else:
        if text.strip():
            return _parse_key(path, text)
        # Left by a start killed between creating and writing the file: that key signed nothing.
        structlog.get_logger("device_cookies").warning("device_key_empty_replaced", path=str(path))
    write_durably(path, [(secrets.token_hex(_KEY_BYTES) + "\n").encode()])
    return _parse_key(path, path.read_bytes())


def _parse_key(path: Path, text: bytes) -> bytes:
    """The key held in ``text`` (read from ``path``); :class:`SettingsError` if it is none."""
    try:
        key = bytes.fromhex(text.decode("ascii").strip())
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

    def _signing_key(self) -> bytes:
        if self._key is None:
            raise RuntimeError("device cookies have no key yet (the app has not started)")
        return self._key

    def cookie_name(self, request: web.Request) -> str:
        """The cookie's name for this request (the ``__Host-`` one over HTTPS)."""
        return SECURE_COOKIE_NAME if is_https(request, self._trusted) else COOKIE_NAME

    def issue(self, account: str) -> str:
        """Return a new cookie value for ``account`` (a fresh device id, valid for :data:`LIFETIME`)."""
        expires = int(self._clock()) + LIFETIME
        payload = f"{_VERSION}.{b64url(account.encode())}.{secrets.token_urlsafe(16)}.{expires}"
        return f"{payload}.{mac(self._signing_key(), payload)}"

    def device_id(self, value: str, account_key: Callable[[str], str], username: str) -> str | None:
        """The device id of cookie ``value`` if it is genuine, unexpired and for ``username``, else ``None``.

        Account names are compared through ``account_key`` (the throttle's
        case folding), so the cookie covers every spelling that shares the
        account's budget.
        """
        if self._key is None or not _SHAPE.fullmatch(value):
            return None
        parts = value.split(".")
        if len(parts) != 5 or parts[0] != _VERSION:
            return None
        payload, signature = ".".join(parts[:4]), parts[4]
        if not mac_matches(self._signing_key(), payload, signature):
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
        response.set_cookie(
            name,
            self.issue(account),
            max_age=LIFETIME,
            path="/",
            httponly=True,
            secure=True if name == SECURE_COOKIE_NAME else None,
            samesite="Strict",
        )


#: The app's device cookie signer.
DEVICE_COOKIES = web.AppKey("device_cookies", DeviceCookies)


def device_key_ctx(data_dir: Path) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx that loads (or creates) the signing key in ``data_dir`` before the first request."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[DEVICE_COOKIES].use_key(await asyncio.to_thread(load_or_create_key, data_dir))
        yield

    return ctx
