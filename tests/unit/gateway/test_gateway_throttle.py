"""The login throttle: reservations, per account, per address, growing delays per (account, address), devices."""

from __future__ import annotations

from admin_gateway.auth.throttle import LoginThrottle, Refusal, Reservation


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _reserve(t: LoginThrottle, user: str, address: str, device: str | None = None) -> Reservation:
    got = t.reserve(user, address, device=device)
    assert isinstance(got, Reservation), got
    return got


def _refused(t: LoginThrottle, user: str, address: str, device: str | None = None) -> Refusal:
    got = t.reserve(user, address, device=device)
    assert isinstance(got, Refusal), got
    return got


class TestLoginThrottle:
    def test_account_limit_and_sliding_window(self) -> None:
        """The Nth failure within an hour blocks the account until the oldest failure is an hour old."""
        clock = Clock()
        t = LoginThrottle(clock=clock, per_account=3, per_address=100)
        for i in range(3):
            _reserve(t, "alice", f"10.0.0.{i}")
            clock.now += 100
        refusal = _refused(t, "Alice", "10.0.0.9")
        assert (refusal.retry_after, refusal.limit) == (3600 - 300, "account")
        clock.now += 3600 - 300
        _reserve(t, "alice", "10.0.0.9")

    def test_address_limit_across_accounts(self) -> None:
        """Failures against many accounts from one address block that address only."""
        t = LoginThrottle(clock=Clock(), per_account=100, per_address=2)
        _reserve(t, "a", "10.0.0.1")
        _reserve(t, "b", "10.0.0.1")
        assert _refused(t, "c", "10.0.0.1").limit == "address"
        _reserve(t, "c", "10.0.0.2")

    def test_unsettled_reservations_count_at_once(self) -> None:
        """Attempts still being checked already count: every one past the limit is refused."""
        t = LoginThrottle(clock=Clock(), per_account=5, per_address=1000)
        results = [t.reserve("alice", f"10.0.1.{i}") for i in range(12)]
        assert sum(isinstance(r, Reservation) for r in results) == 5
        assert all(isinstance(r, Refusal) for r in results[5:])

    def test_success_and_unchecked_attempts_release_their_reservation(self) -> None:
        """A correct password or an attempt never checked is not a failure; a wrong one stays counted."""
        t = LoginThrottle(clock=Clock(), per_account=2, per_address=1000)
        _reserve(t, "alice", "10.0.0.1").signed_in()
        _reserve(t, "alice", "10.0.0.2").unchecked()
        _reserve(t, "alice", "10.0.0.3")  # a wrong password: never settled
        last = _reserve(t, "alice", "10.0.0.4")
        last.signed_in()
        last.signed_in()  # settling twice changes nothing
        _reserve(t, "alice", "10.0.0.5")
        _refused(t, "alice", "10.0.0.6")

    def test_growing_delays_per_account_and_address(self) -> None:
        """After the free attempts each failure doubles the wait for that account from that address only."""
        clock = Clock()
        t = LoginThrottle(clock=clock, per_account=100, per_address=100, free_attempts=2, max_delay=5)
        _reserve(t, "alice", "10.0.0.1")
        _reserve(t, "alice", "10.0.0.1")
        waits = []
        for _ in range(4):
            refusal = _refused(t, "alice", "10.0.0.1")
            assert refusal.limit == "account_address"
            waits.append(refusal.retry_after)
            clock.now += refusal.retry_after
            _reserve(t, "alice", "10.0.0.1")
        assert waits == [1, 2, 4, 5]  # capped at max_delay
        _reserve(t, "alice", "10.0.0.2")  # another address is not delayed
        _reserve(t, "bob", "10.0.0.1")  # nor another account from this address
        clock.now += 5
        _reserve(t, "alice", "10.0.0.1").signed_in()  # a success ends the streak
        _reserve(t, "alice", "10.0.0.1")
        _reserve(t, "alice", "10.0.0.1")

    def test_a_device_passes_the_account_limit_until_it_fails_itself(self) -> None:
        """A known device is not held by the account limit, but its own failures lock it."""
        t = LoginThrottle(clock=Clock(), per_account=2, per_address=100, per_device=3)
        for i in range(2):
            _reserve(t, "alice", f"10.0.2.{i}")
        _refused(t, "alice", "10.0.3.1")
        for _ in range(3):
            _reserve(t, "alice", "10.0.3.1", device="dev1")
        assert _refused(t, "alice", "10.0.3.1", device="dev1").limit == "device"
        _reserve(t, "alice", "10.0.3.2", device="dev2")

    def test_an_unchecked_attempt_leaves_the_delay_as_it_was(self) -> None:
        """Taking back an unchecked attempt restores the streak: the wait still runs from the last real failure."""
        clock = Clock()
        t = LoginThrottle(clock=clock, per_account=100, per_address=100, free_attempts=1)
        _reserve(t, "alice", "10.0.0.1")
        clock.now += 1.5
        unchecked = _reserve(t, "alice", "10.0.0.1")
        clock.now += 0.7
        unchecked.unchecked()
        _reserve(t, "alice", "10.0.0.1")  # one failure, 2.2 s ago: its one-second wait is over

    def test_memory_is_bounded(self) -> None:
        """At most ``max_keys`` keys are remembered; the least recently failed are forgotten."""
        t = LoginThrottle(clock=Clock(), per_account=1, per_address=1000, max_keys=10)
        for i in range(50):
            _reserve(t, f"user{i}", "10.0.0.1")
        _reserve(t, "user0", "10.0.0.2")
        _refused(t, "user49", "10.0.0.2")
