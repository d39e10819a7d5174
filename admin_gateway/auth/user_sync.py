"""Several gateways, one set of users: the users document mirrored in the Redis the sessions live in.

Each gateway keeps its own ``users.json`` (the CLI and a lone gateway need
nothing else). With ``session_backend = "redis"`` the gateways also share
one copy of the users document in Redis (``admin_gateway:users``, with its
revision in ``admin_gateway:users:revision``), and:

- every change made through a gateway (Users page, Change password, a
  sign-in's "last sign-in") starts from the newest of its file and Redis,
  is published to Redis first, with a compare-and-set on the revision (one
  Lua script: a change another gateway published in between is never
  undone; this one fails with ``UsersBusy`` and is tried again by the
  person), then written to the file;
- every gateway syncs once a second (:func:`users_sync_ctx`): a newer
  document in Redis is written to its file (so a user disabled on gw-1 can
  no longer sign in on gw-2, whose every sign-in also syncs first), and a
  newer file (changed with the CLI on that host) is published;
- the sessions a change ends are deleted from Redis at once, so they are
  dead on every gateway before the second is over.

Two CLI changes on two hosts within the same second give two documents of
the same revision: Redis's wins and the other is logged at ERROR
(``users_sync_conflict``): make CLI changes on one gateway, or in the panel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

import structlog
from aiohttp import web

from admin_gateway.auth.guards import USER_STORE
from admin_gateway.auth.session_backends import every, redis_package
from admin_gateway.auth.users import UsersUnavailable
from admin_gateway.settings import SETTINGS

DOCUMENT_KEY: Final = "admin_gateway:users"
REVISION_KEY: Final = "admin_gateway:users:revision"
#: Seconds between two syncs of a gateway's users file with Redis.
SYNC_EVERY: Final = 1.0
_log = structlog.get_logger("gateway")

#: Store ARGV[3] as revision ARGV[2] only if the stored revision is still ARGV[1] ("" for none).
_PUBLISH = """
local current = redis.call('GET', KEYS[2])
if (current or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""


class RedisUserMirror:
    """The users document in Redis (synchronous client: the user store runs in threads)."""

    def __init__(self, url: str) -> None:
        redis = redis_package()
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._redis: Any = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._publish: Any = self._redis.register_script(_PUBLISH)

    def fetch(self) -> tuple[int, str] | None:
        """The stored document and its revision, or ``None``; raises :class:`UsersUnavailable`."""
        try:
            revision, text = self._redis.mget([REVISION_KEY, DOCUMENT_KEY])
        except self._errors as exc:
            raise UsersUnavailable(f"the users in Redis cannot be read: {exc}") from None
        if revision is None or text is None:
            return None
        return int(revision), text.decode() if isinstance(text, bytes) else str(text)

    def publish(self, expected: int | None, revision: int, text: str) -> bool:
        """Compare-and-set: store ``text`` as ``revision`` if Redis still holds ``expected``."""
        try:
            done = self._publish(
                keys=[DOCUMENT_KEY, REVISION_KEY], args=["" if expected is None else str(expected), str(revision), text]
            )
        except self._errors as exc:
            raise UsersUnavailable(f"the users in Redis cannot be written: {exc}") from None
        return bool(done)

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()


async def users_sync_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: with Redis sessions, mirror the users through Redis and sync once a second (in a thread)."""
    settings = app[SETTINGS]
    if settings.session_backend != "redis" or settings.redis_url is None:
        yield
        return
    store = app[USER_STORE]
    mirror = RedisUserMirror(settings.redis_url)
    store.mirror = mirror

    async def sync_once() -> None:
        try:
            done = await asyncio.to_thread(store.sync)
        except UsersUnavailable as exc:
            _log.warning("users_sync_failed", error=str(exc))
            return
        if done == "conflict":
            _log.error("users_sync_conflict", hint="the users file changed here and elsewhere at once; Redis's kept")
        elif done is not None:
            _log.info("users_synced", direction=done)

    await sync_once()
    try:
        async with every(SYNC_EVERY, sync_once):
            yield
    finally:
        store.mirror = None
        await asyncio.to_thread(mirror.close)
