"""The gateway's signatures over its own tokens and cookies: the login form token and the device cookie.

One encoding for both: HMAC-SHA256 under the caller's key, as unpadded
URL-safe base64 (safe in a cookie, a form field and a header), checked in
constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def b64url(raw: bytes) -> str:
    """Return ``raw`` as unpadded URL-safe base64."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def mac(key: bytes, message: str) -> str:
    """Return the HMAC-SHA256 of ``message`` (UTF-8) under ``key``, as :func:`b64url`."""
    return b64url(hmac.new(key, message.encode(), hashlib.sha256).digest())


def mac_matches(key: bytes, message: str, supplied: str) -> bool:
    """Whether ``supplied`` is :func:`mac` of ``message`` under ``key`` (compared in constant time)."""
    return hmac.compare_digest(mac(key, message).encode(), supplied.encode())
