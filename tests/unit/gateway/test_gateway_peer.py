"""What the gateway believes about a peer: address and HTTPS, with forwarded headers from trusted proxies only."""

from __future__ import annotations

import ssl

from aiohttp.test_utils import make_mocked_request

from admin_gateway.peer import client_address, is_https, parse_networks

PROXY = parse_networks(["127.0.0.1", "10.0.0.0/8"])


def _request(remote: str, **headers: str) -> object:
    req = make_mocked_request("GET", "/", headers=headers)
    return req.clone(remote=remote)


class TestPeer:
    def test_untrusted_peer_cannot_forward(self) -> None:
        """From an untrusted peer, X-Forwarded-For and -Proto are ignored."""
        req = _request("203.0.113.5", **{"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https"})
        assert client_address(req, PROXY) == "203.0.113.5"  # type: ignore[arg-type]
        assert is_https(req, PROXY) is False  # type: ignore[arg-type]

    def test_trusted_proxy_forwards(self) -> None:
        """From a trusted proxy, the right-most untrusted X-Forwarded-For hop is the client."""
        req = _request(
            "127.0.0.1", **{"X-Forwarded-For": "6.6.6.6, 198.51.100.7, 10.1.2.3", "X-Forwarded-Proto": "https"}
        )
        assert client_address(req, PROXY) == "198.51.100.7"  # type: ignore[arg-type]
        assert is_https(req, PROXY) is True  # type: ignore[arg-type]

    def test_garbage_forwarded_for_falls_back_to_the_peer(self) -> None:
        """A malformed hop is not believed."""
        req = _request("127.0.0.1", **{"X-Forwarded-For": "not-an-ip"})
        assert client_address(req, PROXY) == "127.0.0.1"  # type: ignore[arg-type]

    def test_tls_connection_is_https(self) -> None:
        """A request on a TLS connection is HTTPS whatever the headers say."""
        req = make_mocked_request("GET", "/", sslcontext=ssl.create_default_context())
        assert is_https(req, ()) is True
