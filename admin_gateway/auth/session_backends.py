"""Where the gateway's session records live: in its memory or in Redis; the policy is elsewhere.

A backend only stores :class:`SessionRecord` values under a key (the SHA-256
of the session id, so a dump of the store holds no usable cookie) and
forgets them on request. Ids, cookies, expiry and rotation are the session
store's (:mod:`admin_gateway.auth.sessions`), the same for both backends:

- :class:`MemorySessionBackend` (``session_backend="embedded"``): in the
  gateway's memory, bounded, least recently used evicted first (only
  sign-ins create records). Sessions do not survive a restart; everyone
  signs in again.
- :class:`RedisSessionBackend` (``session_backend="redis"``, extra
  ``engine-jobs[redis]``): shared by several gateways, each record with a
  Redis TTL so abandoned sessions vanish by themselves.

:func:`pruning` runs a store's periodic pruning and closes the backend at
the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any, Protocol

import attrs

from admin_gateway.settings import Settings, SettingsError

_REDIS_PREFIX = "admin_gateway:session:"
#: The one Redis key holding the form-token secret shared by every gateway on the server.
_REDIS_FORM_SECRET = "admin_gateway:form_secret"
#: Seconds between two prunings of expired records.
PRUNE_EVERY = 60.0


@attrs.frozen(kw_only=True)
class SessionRecord:
    """What the server keeps per session: creation and last-use times and the data."""

    created: float
    seen: float
    data: dict[str, Any]

    def to_json(self) -> str:
        """Return the serialised record (for stores that hold strings)."""
        return json.dumps({"created": self.created, "seen": self.seen, "data": self.data})

    @classmethod
    def from_json(cls, raw: str | bytes) -> SessionRecord | None:
        """Parse a serialised record; ``None`` if it is not one (treated as no session)."""
        try:
            obj = json.loads(raw)
            rec = cls(created=float(obj["created"]), seen=float(obj["seen"]), data=dict(obj["data"]))
        except (ValueError, TypeError, KeyError):
            return None
        return rec


class SessionBackend(Protocol):
    """Where session records live, keyed by the hash of the session id."""

    async def get(self, key: str) -> SessionRecord | None:
        """Return the record under ``key``, or ``None``."""

    async def put(self, key: str, record: SessionRecord, ttl: float) -> None:
        """Store ``record``; it may be forgotten after ``ttl`` seconds of real time."""

    async def refresh(self, key: str, record: SessionRecord, ttl: float) -> None:
        """Replace the record under ``key`` only if one is still there (as :meth:`put` otherwise).

        A request that read a session and writes it back (its last use, its
        changed data) must not bring it back when a logout, elsewhere and
        meanwhile, deleted it.
        """

    async def delete(self, key: str) -> None:
        """Forget ``key`` (no error if absent)."""

    async def prune(self, is_dead: Callable[[SessionRecord], bool]) -> int:
        """Drop records for which ``is_dead`` holds; return how many."""

    async def scan(self) -> list[tuple[str, SessionRecord]]:
        """Every stored record with its key (for the Users page and for ending one user's sessions)."""

    async def shared_secret(self, candidate: bytes) -> bytes:
        """Return the form-token secret every gateway on this backend uses (``candidate`` if none yet)."""

    async def close(self) -> None:
        """Release connections."""


class MemorySessionBackend:
    """Sessions in this process's memory, at most ``max_entries`` (least recently used go first)."""

    def __init__(self, max_entries: int) -> None:
        self._records: OrderedDict[str, SessionRecord] = OrderedDict()
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._records)

    async def get(self, key: str) -> SessionRecord | None:
        """Return the record under ``key``, or ``None``."""
        return self._records.get(key)

    async def put(self, key: str, record: SessionRecord, ttl: float) -> None:
        """Store ``record`` as the most recently used; evict the least recently used past the cap."""
        self._records[key] = record
        self._records.move_to_end(key)
        while len(self._records) > self._max:
            self._records.popitem(last=False)

    async def refresh(self, key: str, record: SessionRecord, ttl: float) -> None:
        """Replace the record under ``key`` if it is still there."""
        if key in self._records:
            await self.put(key, record, ttl)

    async def delete(self, key: str) -> None:
        """Forget ``key``."""
        self._records.pop(key, None)

    async def prune(self, is_dead: Callable[[SessionRecord], bool]) -> int:
        """Drop every dead record."""
        dead = [k for k, rec in self._records.items() if is_dead(rec)]
        for k in dead:
            del self._records[k]
        return len(dead)

    async def scan(self) -> list[tuple[str, SessionRecord]]:
        """Every record, least recently used first."""
        return list(self._records.items())

    async def shared_secret(self, candidate: bytes) -> bytes:
        """This process is the only gateway using these sessions: its own secret is the shared one."""
        return candidate

    async def close(self) -> None:
        """Nothing to release."""


def redis_package() -> ModuleType:
    """The ``redis`` package, or :class:`SettingsError` saying how to install it (an optional extra)."""
    try:
        import redis
        import redis.asyncio  # the session backend's client; importing it also checks the package is whole
    except ImportError:
        raise SettingsError(
            "session_backend 'redis' needs the redis package: pip install 'engine-jobs[redis]'"
        ) from None
    return redis


class RedisSessionBackend:
    """Sessions in Redis, shared by every gateway pointed at the same server."""

    def __init__(self, url: str) -> None:
        self._redis = redis_package().asyncio.Redis.from_url(url)

    async def get(self, key: str) -> SessionRecord | None:
        """Return the record under ``key``, or ``None``."""
        raw = await self._redis.get(_REDIS_PREFIX + key)
        return None if raw is None else SessionRecord.from_json(raw)

    async def put(self, key: str, record: SessionRecord, ttl: float) -> None:
        """Store ``record`` with a Redis TTL, so abandoned sessions vanish by themselves."""
        await self._redis.set(_REDIS_PREFIX + key, record.to_json(), ex=max(1, math.ceil(ttl)))

    async def refresh(self, key: str, record: SessionRecord, ttl: float) -> None:
        """Replace the record under ``key`` if it is still there: one ``SET … XX``, so no logout slips between."""
        await self._redis.set(_REDIS_PREFIX + key, record.to_json(), ex=max(1, math.ceil(ttl)), xx=True)

    async def delete(self, key: str) -> None:
        """Forget ``key``."""
        await self._redis.delete(_REDIS_PREFIX + key)

    async def prune(self, is_dead: Callable[[SessionRecord], bool]) -> int:
        """Nothing to do: Redis expires keys by their TTL."""
        return 0

    async def scan(self) -> list[tuple[str, SessionRecord]]:
        """Every session record in Redis, whichever gateway wrote it (``SCAN`` in batches, then ``MGET``).

        Costs one pass over the session keys: fine for an administrator's
        page and action, not for every request.
        """
        found: list[tuple[str, SessionRecord]] = []
        batch: list[bytes] = []

        async def fetch() -> None:
            values = await self._redis.mget(batch)
            for raw_key, raw in zip(batch, values, strict=True):
                record = None if raw is None else SessionRecord.from_json(raw)
                if record is not None:
                    found.append((raw_key.decode().removeprefix(_REDIS_PREFIX), record))
            batch.clear()

        async for key in self._redis.scan_iter(match=_REDIS_PREFIX + "*", count=500):
            batch.append(key if isinstance(key, bytes) else str(key).encode())
            if len(batch) >= 500:
                await fetch()
        if batch:
            await fetch()
        return found

    async def shared_secret(self, candidate: bytes) -> bytes:
        """Store ``candidate`` unless a gateway did first, and return the stored secret.

        Written once per gateway start, never per request, so a login form
        served by one gateway can be posted to another.
        """
        await self._redis.set(_REDIS_FORM_SECRET, candidate.hex(), nx=True)
        stored = await self._redis.get(_REDIS_FORM_SECRET)
        try:
            return bytes.fromhex(stored.decode() if isinstance(stored, bytes) else str(stored))
        except ValueError:  # not ours (or gone): keep the process's own secret rather than trust it
            return candidate

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def make_backend(settings: Settings) -> SessionBackend:
    """Return the backend named by ``settings.session_backend``."""
    if settings.session_backend == "redis":
        assert settings.redis_url is not None  # enforced by Settings
        return RedisSessionBackend(settings.redis_url)
    return MemorySessionBackend(settings.max_sessions)


@contextlib.asynccontextmanager
async def every(seconds: float, job: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    """While inside: await ``job()`` every ``seconds`` (first after one interval); stop it on leaving."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(seconds)
            await job()

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def pruning(backend: SessionBackend, prune: Callable[[], Awaitable[int]]) -> AsyncIterator[None]:
    """While inside: await ``prune()`` every :data:`PRUNE_EVERY` seconds; on leaving, close ``backend``."""
    try:
        async with every(PRUNE_EVERY, prune):
            yield
    finally:
        await backend.close()
