"""What the gateway may believe about the peer: its address and whether it came over HTTPS.

``X-Forwarded-*`` headers are believed only when the TCP peer is one of the
configured trusted proxies; from anyone else they are attacker-controlled
text and ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """Parse addresses or CIDR ranges (``10.0.0.5``, ``10.0.0.0/8``); raises ``ValueError``."""
    return tuple(ipaddress.ip_network(spec.strip(), strict=False) for spec in specs)


def _in(address: str | None, networks: tuple[Network, ...]) -> bool:
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(request: web.Request, trusted: tuple[Network, ...]) -> str:
    """Return the client's address.

    The TCP peer, unless that peer is a trusted proxy: then the right-most
    ``X-Forwarded-For`` hop that is not itself a trusted proxy (earlier hops
    are whatever the client chose to write).
    """
    peer = request.remote or "unknown"
    if not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return peer


def is_https(request: web.Request, trusted: tuple[Network, ...]) -> bool:
    """Return whether the browser reached us over HTTPS.

    True when the connection itself is TLS, or when a trusted proxy says so
    in ``X-Forwarded-Proto``.
    """
    if request.secure:  # the connection itself is TLS
        return True
    if trusted and _in(request.remote, trusted):
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
        return proto == "https"
    return False


def own_origin(request: web.Request, trusted: tuple[Network, ...]) -> str:
    """Return the origin (``scheme://host[:port]``) the client used to reach us."""
    scheme = "https" if is_https(request, trusted) else "http"
    return f"{scheme}://{request.host}".lower()


#: The app's trusted proxy networks (parsed from ``Settings.trusted_proxies``).
TRUSTED_PROXIES: web.AppKey[tuple[Network, ...]] = web.AppKey("trusted_proxies")
