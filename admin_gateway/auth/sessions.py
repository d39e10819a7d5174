"""Server-side sessions for aiohttp-session: the cookie holds an opaque random id, nothing else.

Because the session lives on the server, ``POST /logout`` really ends it: a
copied cookie is dead afterwards. :class:`ServerSideStorage` owns the policy
(ids, cookie attributes, idle and absolute expiry measured with the injected
clock, rotation at login); a :class:`SessionBackend` only stores records:

- :class:`MemorySessionBackend` (``session_backend="embedded"``): in the
  gateway's memory, bounded, least recently used evicted first (only
  sign-ins create records, see below). Sessions do not survive a restart;
  everyone signs in again.
- :class:`RedisSessionBackend` (``session_backend="redis"``, extra
  ``engine-jobs[redis]``): shared by several gateways. It is not
  aiohttp-session's ``RedisStorage`` because that storage keys Redis by the
  raw cookie value, uses one fixed cookie name (no ``__Host-`` when, and only
  when, the request is HTTPS) and leaves the pre-login session alive at
  rotation; the policy here is the same for both backends.

Backends are keyed by the SHA-256 of the session id, so a dump of the store
holds no usable cookie.

Only a sign-in creates a record. An anonymous visitor (the login form, a
bad or stale cookie, a signed-out panel page, a logout without a session)
never writes to the backend, so anonymous traffic cannot fill the store
and evict a signed-in session: the login form's CSRF token is stateless
(:mod:`admin_gateway.auth.csrf`), bound to a random nonce in a separate
``gw_form`` cookie (:meth:`ServerSideStorage.ensure_form_nonce`) and signed with
:attr:`ServerSideStorage.form_secret`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import re
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import attrs
from aiohttp import web
from aiohttp_session import SESSION_KEY, STORAGE_KEY, AbstractStorage, Session

from admin_gateway.peer import Network, is_https
from admin_gateway.settings import Settings, SettingsError

COOKIE_NAME = "gw_session"
#: Over HTTPS: the browser then only accepts it Secure, Path=/, host-only.
SECURE_COOKIE_NAME = "__Host-gw_session"
#: The anonymous login form's nonce cookie (no server record behind it), and its HTTPS name.
FORM_COOKIE_NAME = "gw_form"
SECURE_FORM_COOKIE_NAME = "__Host-gw_form"
_MAX_ID_LENGTH = 128
_ID_RE = re.compile(r"[A-Za-z0-9_-]+")
_REDIS_PREFIX = "admin_gateway:session:"
#: The one Redis key holding the form-token secret shared by every gateway on the server.
_REDIS_FORM_SECRET = "admin_gateway:form_secret"

#: Set on the request when its session cookie named an expired session ("idle" or "absolute").
SESSION_EXPIRED_REASON = web.RequestKey("session_expired_reason", str)
#: The session id and live record a request's cookie names (``None``: none), once loaded.
_LOADED: web.RequestKey[tuple[str, SessionRecord] | None] = web.RequestKey("session_loaded")
#: A form nonce made for this request, to be set as a cookie on its response.
_NEW_FORM_NONCE = web.RequestKey("new_form_nonce", str)


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

    async def delete(self, key: str) -> None:
        """Forget ``key`` (no error if absent)."""

    async def prune(self, is_dead: Callable[[SessionRecord], bool]) -> int:
        """Drop records for which ``is_dead`` holds; return how many."""

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

    async def delete(self, key: str) -> None:
        """Forget ``key``."""
        self._records.pop(key, None)

    async def prune(self, is_dead: Callable[[SessionRecord], bool]) -> int:
        """Drop every dead record."""
        dead = [k for k, rec in self._records.items() if is_dead(rec)]
        for k in dead:
            del self._records[k]
        return len(dead)

    async def shared_secret(self, candidate: bytes) -> bytes:
        """This process is the only gateway using these sessions: its own secret is the shared one."""
        return candidate

    async def close(self) -> None:
        """Nothing to release."""


class RedisSessionBackend:
    """Sessions in Redis, shared by every gateway pointed at the same server."""

    def __init__(self, url: str) -> None:
        try:
            from redis import asyncio as aioredis
        except ImportError:
            raise SettingsError(
                "session_backend 'redis' needs the redis package: pip install 'engine-jobs[redis]'"
            ) from None
        self._redis = aioredis.Redis.from_url(url)

    async def get(self, key: str) -> SessionRecord | None:
        """Return the record under ``key``, or ``None``."""
        raw = await self._redis.get(_REDIS_PREFIX + key)
        return None if raw is None else SessionRecord.from_json(raw)

    async def put(self, key: str, record: SessionRecord, ttl: float) -> None:
        """Store ``record`` with a Redis TTL, so abandoned sessions vanish by themselves."""
        await self._redis.set(_REDIS_PREFIX + key, record.to_json(), ex=max(1, math.ceil(ttl)))

    async def delete(self, key: str) -> None:
        """Forget ``key``."""
        await self._redis.delete(_REDIS_PREFIX + key)

    async def prune(self, is_dead: Callable[[SessionRecord], bool]) -> int:
        """Nothing to do: Redis expires keys by their TTL."""
        return 0

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


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _read_cookie(request: web.Request, name: str) -> str | None:
    # Our values are URL-safe base64, so the Cookie header is scanned for the one name
    # directly: parsing every cookie on every request costs more than the rest of the
    # session handling.
    header = request.headers.get("Cookie")
    if not header:
        return None
    prefix = name + "="
    for part in header.split(";"):
        part = part.strip()
        if part.startswith(prefix):
            value = part[len(prefix) :]
            if 0 < len(value) <= _MAX_ID_LENGTH and _ID_RE.fullmatch(value):
                return value
            return None
    return None


class _LoadedSession(Session):
    """A :class:`Session` for a live stored record, built without ``Session.__init__``'s general work.

    Same state as ``Session(sid, data={"created": ..., "session": record.data},
    new=False)`` (aiohttp-session's constructor reads the clock and compares
    its arguments, a measurable share of the gateway's hottest read): not
    new, unchanged, no max age, and its own copy of the data, so the stored
    record is never mutated.
    """

    def __init__(self, sid: str, record: SessionRecord) -> None:
        # Session.__init__ is not called on purpose: every attribute it sets is set here.
        self._changed = False
        self._mapping = dict(record.data)
        self._identity = sid
        self._new = False
        self._max_age = None
        self._created = int(record.created)


OnExpired = Callable[[web.Request, dict[str, Any], str], Awaitable[None]]


class ServerSideStorage(AbstractStorage):
    """aiohttp-session storage keeping sessions on the server and only an id in the cookie.

    Idle and absolute lifetimes are checked on every load with ``clock``; an
    expired session is deleted and ``on_expired(request, data, reason)`` is
    awaited. A session saved without an identity (after ``new_session``)
    gets a fresh id and the id the request came with is deleted: that is
    the rotation at login. An emptied (invalidated) session is deleted and
    its cookie cleared.
    """

    def __init__(
        self,
        backend: SessionBackend,
        *,
        clock: Callable[[], float],
        idle_timeout: float,
        absolute_timeout: float,
        trusted_proxies: tuple[Network, ...] = (),
        on_expired: OnExpired | None = None,
    ) -> None:
        super().__init__(cookie_name=COOKIE_NAME, httponly=True, samesite="Strict", path="/")
        self.backend = backend
        self._clock = clock
        self._idle = idle_timeout
        self._absolute = absolute_timeout
        self._trusted = trusted_proxies
        self._on_expired = on_expired
        # Refresh "last seen" at most this often: a write per request buys nothing.
        self._touch_every = min(60.0, idle_timeout / 30)
        #: Key of the login form's CSRF tokens; replaced by the backend's shared one at start.
        self.form_secret = secrets.token_bytes(32)

    def cookie_name_for(self, request: web.Request) -> str:
        """Return the cookie name for this request: ``__Host-`` prefixed over HTTPS."""
        return SECURE_COOKIE_NAME if is_https(request, self._trusted) else COOKIE_NAME

    def load_cookie(self, request: web.Request) -> str | None:
        """Return the session id the request carries, if it looks like one of ours."""
        return _read_cookie(request, self.cookie_name_for(request))

    def form_nonce(self, request: web.Request) -> str | None:
        """Return the nonce of the request's login form cookie (or of the one made for it), if any."""
        if _NEW_FORM_NONCE in request:
            return request[_NEW_FORM_NONCE]
        return _read_cookie(request, self._form_cookie(request)[0])

    def ensure_form_nonce(self, request: web.Request) -> str:
        """Return :meth:`form_nonce`, making a fresh one if the request has none.

        A made nonce is set as a cookie (same flags as the session cookie)
        on the response by :meth:`finish`. Nothing is stored on the server.
        """
        nonce = self.form_nonce(request)
        if nonce is None:
            nonce = request[_NEW_FORM_NONCE] = secrets.token_urlsafe(32)
        return nonce

    def expiry_reason(self, record: SessionRecord, now: float) -> str | None:
        """Return ``"absolute"`` or ``"idle"`` if ``record`` has expired at ``now``, else ``None``."""
        if now - record.created >= self._absolute:
            return "absolute"
        if now - record.seen >= self._idle:
            return "idle"
        return None

    def _form_cookie(self, request: web.Request) -> tuple[str, bool | None]:
        """The form cookie's name for this request and its ``secure`` flag (``__Host-`` and Secure over HTTPS)."""
        https = is_https(request, self._trusted)
        return (SECURE_FORM_COOKIE_NAME, True) if https else (FORM_COOKIE_NAME, None)

    def _set_form_cookie(self, request: web.Request, response: web.StreamResponse, nonce: str) -> None:
        name, secure = self._form_cookie(request)
        response.set_cookie(name, nonce, path="/", secure=secure, httponly=True, samesite="Strict")

    def clear_form_cookie(self, request: web.Request, response: web.StreamResponse) -> None:
        """Delete the browser's login form cookie (same name, path and flags as it was set with).

        Called at a successful sign-in: the form tokens bound to its nonce die with it.
        """
        name, secure = self._form_cookie(request)
        response.del_cookie(name, path="/", secure=secure, httponly=True, samesite="Strict")

    def _ttl(self, record: SessionRecord, now: float) -> float:
        return min(self._idle, self._absolute - (now - record.created)) + 60

    async def peek(self, request: web.Request) -> SessionRecord | None:
        """Return the live record the request's session cookie names, or ``None``; read-only.

        The record is loaded once per request (expiry checked and handled,
        last use refreshed, as :meth:`load_session` does, which builds its
        ``Session`` from the same record). It lets a read of the signed-in
        user skip building aiohttp-session's ``Session``; its ``data`` must
        not be changed (change a session through ``get_session``).
        """
        loaded = await self._loaded(request)
        return None if loaded is None else loaded[1]

    async def end(self, request: web.Request) -> None:
        """Delete, now, the session the request's cookie names (its user was removed or changed).

        Unlike ``Session.invalidate()``, which is saved only if the request
        then succeeds, this holds even when the request ends in a 401.
        """
        loaded = request.get(_LOADED)
        if loaded is not None:
            await self.backend.delete(_key(loaded[0]))
        request[_LOADED] = None

    async def load_session(self, request: web.Request) -> Session:
        """Return the live session named by the cookie, or a new empty one."""
        loaded = await self._loaded(request)
        if loaded is None:
            return Session(None, data=None, new=True)
        return _LoadedSession(*loaded)

    async def _loaded(self, request: web.Request) -> tuple[str, SessionRecord] | None:
        # The one place a request's session is loaded: once, whoever asks first.
        if _LOADED not in request:
            request[_LOADED] = await self._load_record(request)
        return request[_LOADED]

    async def _load_record(self, request: web.Request) -> tuple[str, SessionRecord] | None:
        sid = self.load_cookie(request)
        if sid is None:
            return None
        key = _key(sid)
        record = await self.backend.get(key)
        if record is None:
            return None
        now = self._clock()
        reason = self.expiry_reason(record, now)
        if reason is not None:
            await self.backend.delete(key)
            request[SESSION_EXPIRED_REASON] = reason
            if self._on_expired is not None:
                await self._on_expired(request, record.data, reason)
            return None
        if now - record.seen >= self._touch_every:
            record = attrs.evolve(record, seen=now)
            await self.backend.put(key, record, self._ttl(record, now))
        return sid, record

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        """Persist a changed session (see the class docstring for rotation and invalidation)."""
        now = self._clock()
        name = self.cookie_name_for(request)
        secure = name == SECURE_COOKIE_NAME
        incoming = self.load_cookie(request)
        if session.empty:
            for sid in {session.identity, incoming} - {None}:
                await self.backend.delete(_key(str(sid)))
            if incoming is not None:
                response.del_cookie(name, path="/", secure=secure or None, httponly=True, samesite="Strict")
            return
        data = dict(session)
        if session.identity is None:
            sid = secrets.token_urlsafe(32)
            record = SessionRecord(created=now, seen=now, data=data)
            await self.backend.put(_key(sid), record, self._ttl(record, now))
            if incoming is not None:
                await self.backend.delete(_key(incoming))
            response.set_cookie(name, sid, path="/", secure=secure or None, httponly=True, samesite="Strict")
            return
        key = _key(str(session.identity))
        old = await self.backend.get(key)
        if old is None:  # deleted meanwhile (logout elsewhere, expiry): do not resurrect it
            return
        record = SessionRecord(created=old.created, seen=now, data=data)
        await self.backend.put(key, record, self._ttl(record, now))

    def attach(self, request: web.Request) -> None:
        """Make this storage the request's (``authenticate`` hook of ``request_wrapper``).

        Together with :meth:`finish` this replaces aiohttp-session's
        middleware (one layer less on every request): ``get_session`` and
        ``new_session`` find the storage where they look for it.
        """
        request[STORAGE_KEY] = self

    def finish(self, request: web.Request, response: web.StreamResponse) -> Awaitable[None] | None:
        """Save the request's session if it changed (``finish`` hook of ``request_wrapper``).

        As aiohttp-session's middleware: only a plain response (not a file
        or a stream) gets the session saved into it, and only after the
        handler answered or raised an HTTP exception, never after an error.
        """
        if not isinstance(response, web.Response):
            return None
        nonce = request.get(_NEW_FORM_NONCE)
        if nonce is not None and not response.prepared:
            self._set_form_cookie(request, response, nonce)
        session = request.get(SESSION_KEY)
        if session is None or not session._changed:
            return None
        if response.prepared:
            raise RuntimeError("Cannot save session data into prepared response")
        return self.save_session(request, response, session)

    async def prune(self) -> int:
        """Drop expired sessions (the memory backend; Redis expires keys itself)."""
        now = self._clock()
        return await self.backend.prune(lambda rec: self.expiry_reason(rec, now) is not None)


def make_backend(settings: Settings) -> SessionBackend:
    """Return the backend named by ``settings.session_backend``."""
    if settings.session_backend == "redis":
        assert settings.redis_url is not None  # enforced by Settings
        return RedisSessionBackend(settings.redis_url)
    return MemorySessionBackend(settings.max_sessions)


#: The app's session storage.
SESSION_STORAGE = web.AppKey("session_storage", ServerSideStorage)


async def session_pruner(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: agree on the form secret, prune expired sessions every minute; close the backend at shutdown."""
    storage = app[SESSION_STORAGE]
    storage.form_secret = await storage.backend.shared_secret(storage.form_secret)

    async def loop() -> None:
        while True:
            await asyncio.sleep(60)
            await storage.prune()

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await storage.backend.close()
