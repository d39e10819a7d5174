"""The login throttle's client keys: IPv4 per address, IPv6 per /64."""

from __future__ import annotations

import pytest

from admin_gateway.auth.throttle import LoginThrottle, Refusal, Reservation


class TestAddressKey:
    @pytest.mark.parametrize(
        ("address", "key"),
        [
            ("192.0.2.1", "192.0.2.1"),
            ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
            ("2001:DB8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
            ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("unknown", "unknown"),
        ],
    )
    def test_address_key(self, address: str, key: str) -> None:
        """IPv4 is keyed per address, IPv6 by its /64, a mapped IPv4 as the IPv4, a non-address as itself."""
        assert LoginThrottle.address_key(address) == key

    def test_reserve_counts_a_64_as_one_address(self) -> None:
        """The per-address limit refuses a new address of a /64 whose other addresses used it up."""
        throttle = LoginThrottle(clock=lambda: 1000.0, per_account=100, per_address=2)
        assert isinstance(throttle.reserve("a", "2001:db8::1"), Reservation)
        assert isinstance(throttle.reserve("b", "2001:db8::2"), Reservation)
        refused = throttle.reserve("c", "2001:db8::ffff:1")
        assert isinstance(refused, Refusal) and refused.limit == "address"
        assert isinstance(throttle.reserve("c", "2001:db8:0:1::1"), Reservation)
