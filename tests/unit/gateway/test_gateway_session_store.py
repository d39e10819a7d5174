"""The server-side session store: bounded memory, expiry by the injected clock."""

from __future__ import annotations

from admin_gateway.auth.session_backends import MemorySessionBackend, SessionRecord
from admin_gateway.auth.sessions import SessionStore


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestMemoryBackend:
    async def test_least_recently_used_are_evicted_past_the_cap(self) -> None:
        """Past ``max_entries`` the least recently stored session goes first."""
        backend = MemorySessionBackend(3)
        for key in "abcd":
            await backend.put(key, SessionRecord(created=0, seen=0, data={"k": key}), ttl=60)
        assert await backend.get("a") is None
        await backend.put("b", SessionRecord(created=0, seen=1, data={}), ttl=60)  # b is now the freshest
        await backend.put("e", SessionRecord(created=0, seen=2, data={}), ttl=60)
        assert await backend.get("c") is None
        assert await backend.get("b") is not None
        assert len(backend) == 3


class TestExpiry:
    async def test_prune_drops_idle_and_old_sessions(self) -> None:
        """``prune`` removes sessions past the idle or the absolute lifetime, and keeps live ones."""
        clock = Clock()
        backend = MemorySessionBackend(100)
        storage = SessionStore(backend, clock=clock, idle_timeout=100, absolute_timeout=1000)
        await backend.put("idle", SessionRecord(created=clock.now, seen=clock.now, data={"x": 1}), ttl=1)
        await backend.put("old", SessionRecord(created=clock.now - 990, seen=clock.now, data={"x": 1}), ttl=1)
        await backend.put("live", SessionRecord(created=clock.now, seen=clock.now + 50, data={"x": 1}), ttl=1)
        clock.now += 100
        assert await storage.prune() == 2
        assert await backend.get("live") is not None

    def test_expiry_reason(self) -> None:
        """The absolute lifetime wins over idleness when both have passed."""
        storage = SessionStore(MemorySessionBackend(1), clock=Clock(), idle_timeout=10, absolute_timeout=100)
        record = SessionRecord(created=0, seen=0, data={})
        assert storage.expiry_reason(record, 9.9) is None
        assert storage.expiry_reason(record, 10) == "idle"
        assert storage.expiry_reason(record, 100) == "absolute"

    async def test_writing_back_does_not_revive_a_deleted_session(self) -> None:
        """``refresh`` replaces a live record but leaves a deleted one deleted (a racing logout wins)."""
        backend = MemorySessionBackend(10)
        record = SessionRecord(created=0, seen=0, data={"user": "alice"})
        await backend.put("k", record, ttl=60)
        await backend.refresh("k", SessionRecord(created=0, seen=5, data={"user": "alice"}), ttl=60)
        assert (await backend.get("k")) == SessionRecord(created=0, seen=5, data={"user": "alice"})
        await backend.delete("k")
        await backend.refresh("k", record, ttl=60)
        assert await backend.get("k") is None
