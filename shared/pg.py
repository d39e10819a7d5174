"""Connecting to PostgreSQL (the engine's store, the gateway's audit store).

The URL's checks, its password-free form, and one-line errors.

A store URL is a libpq URI (``postgresql://user:password@host:port/dbname?…``).
Nothing here ever prints or logs a password: :func:`redact` is the form of
the URL to show, and :func:`describe_error` turns a driver error into one
line with any password scrubbed.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict

#: URL schemes libpq accepts as a URI.
SCHEMES: Final = ("postgresql", "postgres")
#: Seconds a connection attempt may take unless the URL sets ``connect_timeout``: a command must
#: not hang on an address that drops packets.
CONNECT_TIMEOUT: Final = 10


class StoreUrlError(ValueError):
    """A store URL that is not a PostgreSQL URI; the message is one line without the password."""


def redact(url: str) -> str:
    """The URL without its password (in the user part or as a ``password=`` query parameter)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return f"{url.split(':', 1)[0]}://…"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}@{host}"
    query = "&".join(
        f"{name}=***" if urllib.parse.unquote(name) == "password" else part
        for part in parts.query.split("&")
        if part
        for name in [part.split("=", 1)[0]]
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def check_url(url: str) -> dict[str, Any]:
    """Parse a store URL into libpq parameters; raise :class:`StoreUrlError` unless it is a PostgreSQL URI."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in SCHEMES:
        raise StoreUrlError(f"store URL {redact(url)!r} is not a postgresql:// URL")
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise StoreUrlError(f"invalid store URL {redact(url)!r}: {describe_error(exc, url)}") from None
    port = params.get("port")
    if port is not None and not all(p.isdigit() for p in str(port).split(",")):
        raise StoreUrlError(f"invalid store URL {redact(url)!r}: port {port!r} is not a number")
    return params


def describe_error(exc: BaseException, url: str) -> str:
    """``exc``'s message as one line (libpq's are several), with the URL's password scrubbed."""
    text = "; ".join(line.strip(" \t-") for line in str(exc).splitlines() if line.strip(" \t-"))
    for secret in _passwords(url):
        text = text.replace(secret, "***")
    return text or type(exc).__name__


#: The password of a URI's user part, read without a full parse (which a malformed URL fails).
_USER_PASSWORD: Final = re.compile(r"^[^:/]*://[^:/@]*:([^@/]*)@")


def _passwords(url: str) -> list[str]:
    """Every form of the URL's password that a message may quote: as written and percent-decoded."""
    found = set(_USER_PASSWORD.findall(url))
    found.update(re.findall(r"[?&]password=([^&]*)", url))
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.Error:
        password = None
    if password:
        found.add(str(password))
    found.update({urllib.parse.unquote(secret) for secret in found})
    # Longest first: a password that contains another is replaced whole.
    return sorted((secret for secret in found if secret), key=len, reverse=True)


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    """Open one autocommit connection to the store at ``url`` (a command's or a migration's).

    Raises :class:`StoreUrlError` for a malformed URL and ``psycopg.OperationalError`` when the
    server cannot be reached or refuses the login (show it with :func:`describe_error`).
    """
    params = check_url(url)
    extra: dict[str, Any] = {} if "connect_timeout" in params else {"connect_timeout": CONNECT_TIMEOUT}
    return await psycopg.AsyncConnection.connect(url, autocommit=True, **extra)
