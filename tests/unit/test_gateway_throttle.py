"""The failed-login throttle: sliding hour, per account and per address."""

from __future__ import annotations

from admin_gateway.throttle import LoginThrottle


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestLoginThrottle:
    def test_account_limit_and_sliding_window(self) -> None:
        """The Nth failure within an hour blocks the account until the oldest failure is an hour old."""
        clock = Clock()
        t = LoginThrottle(clock=clock, per_account=3, per_address=100)
        for i in range(3):
            assert t.retry_after("alice", f"10.0.0.{i}") is None
            t.record_failure("alice", f"10.0.0.{i}")
            clock.now += 100
        assert t.retry_after("Alice", "10.0.0.9") == 3600 - 300
        clock.now += 3600 - 300
        assert t.retry_after("alice", "10.0.0.9") is None

    def test_address_limit_across_accounts(self) -> None:
        """Failures against many accounts from one address block that address only."""
        t = LoginThrottle(clock=Clock(), per_account=100, per_address=2)
        t.record_failure("a", "10.0.0.1")
        t.record_failure("b", "10.0.0.1")
        assert t.retry_after("c", "10.0.0.1") is not None
        assert t.retry_after("c", "10.0.0.2") is None

    def test_memory_is_bounded(self) -> None:
        """At most ``max_keys`` keys are remembered; the least recently failed are forgotten."""
        t = LoginThrottle(clock=Clock(), per_account=1, per_address=1000, max_keys=10)
        for i in range(50):
            t.record_failure(f"user{i}", "10.0.0.1")
        assert t.retry_after("user0", "10.0.0.2") is None
        assert t.retry_after("user49", "10.0.0.2") is not None
