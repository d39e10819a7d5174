"""The gateway's sessions: kept on the server, the cookie holds an opaque random id, nothing else.

One module, our own (not aiohttp-session; docs/gateway.md says why), does it all:

- :func:`load_session` loads the record a request's cookie names, once per
  request and only when asked (public routes pay nothing), and returns it
  as a :class:`SessionState`: a plain mapping of the session's data with a
  ``changed`` and a ``new`` flag, :meth:`~SessionState.rotate` (a fresh id,
  at login) and :meth:`~SessionState.end` (logout).
- :meth:`SessionStore.finish` (the ``finish`` hook of the gateway's
  ``request_wrapper``) saves it after the handler, only if it changed: an
  unchanged session writes nothing to the backend and sends no cookie.
- :func:`discard_session` deletes a session at once (its user was removed,
  or their password or role changed).

Because the session lives on the server, ``POST /logout`` really ends it: a
copied cookie is dead afterwards. :class:`SessionStore` owns the policy
(ids, cookie attributes, idle and absolute expiry measured with the injected
clock, rotation); a backend (:mod:`admin_gateway.auth.session_backends`,
memory or Redis) only stores records, keyed by the SHA-256 of the id.

Only a sign-in creates a record. An anonymous visitor (the login form, a
bad or stale cookie, a signed-out panel page, a logout without a session)
never writes to the backend, so anonymous traffic cannot fill the store
and evict a signed-in session: the login form's CSRF token is stateless
(:mod:`admin_gateway.auth.csrf`), bound to a random nonce in a separate
``gw_form`` cookie (:meth:`SessionStore.ensure_form_nonce`) and signed with
:attr:`SessionStore.form_secret`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import attrs
from aiohttp import web

from admin_gateway.auth.session_backends import SessionBackend, SessionRecord, pruning
from admin_gateway.peer import Network, is_https

COOKIE_NAME = "gw_session"
#: Over HTTPS: the browser then only accepts it Secure, Path=/, host-only.
SECURE_COOKIE_NAME = "__Host-gw_session"
#: The anonymous login form's nonce cookie (no server record behind it), and its HTTPS name.
FORM_COOKIE_NAME = "gw_form"
SECURE_FORM_COOKIE_NAME = "__Host-gw_form"
_MAX_ID_LENGTH = 128
_ID_RE = re.compile(r"[A-Za-z0-9_-]+")

#: The session key naming its user (the guards' ``SESSION_USER``; here so the store can find a user's sessions).
SESSION_USER_KEY = "user"

#: A form nonce made for this request, to be set as a cookie on its response.
_NEW_FORM_NONCE = web.RequestKey("new_form_nonce", str)


class SessionState(MutableMapping[str, Any]):
    """One request's session: its data as a plain mapping, and what saving it must do.

    ``changed`` turns true with any write (``[]=``, ``del``, :meth:`clear`,
    :meth:`rotate`, :meth:`end`); only then is the session saved after the
    request. ``new`` is true while no stored record stands behind the state:
    the request had none, or :meth:`rotate` asked for a fresh id. Saved
    empty, a session is ended: its record is deleted and its cookie cleared.
    Values must be JSON values (the record is stored as JSON in Redis).

    Reading costs no copy: the state reads the loaded record's data until
    its first write, which copies it, so the stored record is never mutated.
    """

    __slots__ = ("_changed", "_data", "_id")

    def __init__(self, session_id: str | None = None, data: dict[str, Any] | None = None) -> None:
        self._id = session_id
        self._data: dict[str, Any] = {} if data is None else data
        self._changed = False

    @property
    def id(self) -> str | None:
        """The stored session's id (the cookie's value), or ``None`` while :attr:`new`."""
        return self._id

    @property
    def new(self) -> bool:
        """Whether no stored record stands behind this state (none loaded, or rotated)."""
        return self._id is None

    @property
    def changed(self) -> bool:
        """Whether this request changed the session (then it is saved after the response)."""
        return self._changed

    def _writable(self) -> dict[str, Any]:
        if not self._changed:
            self._data = dict(self._data)  # the first write copies: the loaded record stays as stored
            self._changed = True
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setitem__(self, key: str, value: Any) -> None:
        self._writable()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._writable()[key]

    def clear(self) -> None:
        """Remove all data (saved so, the session is ended: see :meth:`end`)."""
        self._writable().clear()

    def rotate(self) -> None:
        """Give the session a fresh id when it is saved; the old id's record is deleted then.

        For a change of privilege (a sign-in): an id seen before it is worth nothing after.
        The data is kept.
        """
        self._writable()
        self._id = None

    def end(self) -> None:
        """End the session (logout): once saved, its record is deleted and its cookie cleared."""
        self.clear()

    def _forget(self) -> None:
        """Lose the stored record (deleted by :func:`discard_session`): the state is new and empty."""
        self._id = None
        self._data = {}

    def __repr__(self) -> str:
        return f"SessionState(new={self.new}, changed={self._changed}, keys={sorted(self._data)})"


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


OnExpired = Callable[[web.Request, dict[str, Any], str], Awaitable[None]]


class SessionStore:
    """The session policy over a backend: ids, cookies, expiry, rotation, the changed-only save.

    Idle and absolute lifetimes are checked on every load with ``clock``; an
    expired session is deleted and ``on_expired(request, data, reason)`` is
    awaited. A state saved without an id (new, or rotated) gets a fresh id
    and the id the request came with is deleted: that is the rotation at
    login. A state saved empty (ended) is deleted and its cookie cleared.
    Cookies are ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, without
    ``Max-Age`` (they end with the browser; the server ends them sooner),
    and over HTTPS ``Secure`` with the ``__Host-`` name.
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

    async def peek(self, session_id: str) -> tuple[str | None, dict[str, Any]]:
        """Whether session ``session_id`` still lives, without counting this as a use (its idle time runs on).

        Returns ``(None, data)`` for a live session, ``("expired", data)`` for
        an expired one, ``("signed_out", {})`` when its record is gone (logout,
        a removed user, an expiry seen by another request).
        """
        record = await self.backend.get(_key(session_id))
        if record is None:
            return "signed_out", {}
        return ("expired" if self.expiry_reason(record, self._clock()) else None), record.data

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

    async def load(self, request: web.Request) -> SessionState:
        """Return the live session the request's cookie names, or a new empty one (use :func:`load_session`).

        An expired record is deleted here (and reported through
        ``on_expired``); a live one has its last use refreshed now and then.
        """
        sid = self.load_cookie(request)
        if sid is None:
            return SessionState()
        key = _key(sid)
        record = await self.backend.get(key)
        if record is None:
            return SessionState()
        now = self._clock()
        reason = self.expiry_reason(record, now)
        if reason is not None:
            await self.backend.delete(key)
            if self._on_expired is not None:
                await self._on_expired(request, record.data, reason)
            return SessionState()
        if now - record.seen >= self._touch_every:
            record = attrs.evolve(record, seen=now)
            await self.backend.refresh(key, record, self._ttl(record, now))
        return SessionState(sid, record.data)

    async def save(self, request: web.Request, response: web.StreamResponse, state: SessionState) -> None:
        """Persist a changed session into the backend and ``response`` (see the class docstring)."""
        now = self._clock()
        name = self.cookie_name_for(request)
        secure = True if name == SECURE_COOKIE_NAME else None
        incoming = self.load_cookie(request)
        if not state:
            for sid in {state.id, incoming} - {None}:
                await self.backend.delete(_key(str(sid)))
            if incoming is not None:
                response.del_cookie(name, path="/", secure=secure, httponly=True, samesite="Strict")
            return
        data = dict(state)
        if state.id is None:
            sid = secrets.token_urlsafe(32)
            record = SessionRecord(created=now, seen=now, data=data)
            await self.backend.put(_key(sid), record, self._ttl(record, now))
            if incoming is not None:
                await self.backend.delete(_key(incoming))
            response.set_cookie(name, sid, path="/", secure=secure, httponly=True, samesite="Strict")
            return
        key = _key(state.id)
        old = await self.backend.get(key)
        if old is None:  # deleted meanwhile (logout elsewhere, expiry): do not resurrect it
            return
        record = SessionRecord(created=old.created, seen=now, data=data)
        await self.backend.refresh(key, record, self._ttl(record, now))

    def finish(self, request: web.Request, response: web.StreamResponse) -> Awaitable[None] | None:
        """Save the request's session if it changed (``finish`` hook of ``request_wrapper``).

        Only a plain response (not a file or a stream) gets the session saved
        into it, and only after the handler answered or raised an HTTP
        exception, never after an error. The login form's nonce cookie, if
        one was made, is set here too.
        """
        if not isinstance(response, web.Response):
            return None
        nonce = request.get(_NEW_FORM_NONCE)
        if nonce is not None and not response.prepared:
            self._set_form_cookie(request, response, nonce)
        state = request.get(_STATE)
        if state is None or not state.changed:
            return None
        if response.prepared:
            raise RuntimeError("Cannot save session data into prepared response")
        return self.save(request, response, state)

    async def live_sessions(self) -> list[dict[str, Any]]:
        """The data of every unexpired session in the backend (all gateways' with Redis)."""
        now = self._clock()
        return [rec.data for _, rec in await self.backend.scan() if self.expiry_reason(rec, now) is None]

    async def end_user_sessions(self, user: str) -> int:
        """Delete, now, every session of ``user`` in the backend; return how many there were.

        With Redis that is every gateway's session of theirs: their next
        request anywhere finds none. Used when a user is disabled, removed,
        demoted or has their password reset or changed (the generation check
        of :func:`admin_gateway.auth.guards.current_user` would refuse those
        sessions anyway; this also frees them and makes the counts true).
        """
        keys = [key for key, rec in await self.backend.scan() if rec.data.get(SESSION_USER_KEY) == user]
        for key in keys:
            await self.backend.delete(key)
        return len(keys)

    async def prune(self) -> int:
        """Drop expired sessions (the memory backend; Redis expires keys itself)."""
        now = self._clock()
        return await self.backend.prune(lambda rec: self.expiry_reason(rec, now) is not None)


#: The app's session store.
SESSION_STORE = web.AppKey("session_store", SessionStore)
#: The request's session, once loaded.
_STATE = web.RequestKey("session_state", SessionState)


async def load_session(request: web.Request) -> SessionState:
    """Return the request's session (loaded on first use, the same object afterwards; never ``None``).

    Without a live session it is a new, empty state: writing to it and
    answering creates one (a sign-in). Reading it writes nothing.
    """
    state = request.get(_STATE)
    if state is None:
        state = request[_STATE] = await request.app[SESSION_STORE].load(request)
    return state


async def discard_session(request: web.Request) -> None:
    """Delete, now, the session the request's cookie names (its user was removed or changed).

    Unlike :meth:`SessionState.end`, saved only if the request then
    succeeds, this holds even when the request ends in a 401. The cookie is
    left alone, unless this request had changed the session: then it is
    saved as ended (its cookie cleared).
    """
    state = await load_session(request)
    if state.id is not None:
        await request.app[SESSION_STORE].backend.delete(_key(state.id))
    state._forget()


async def session_store_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: agree on the form secret, prune expired sessions every minute; close the backend at shutdown."""
    store = app[SESSION_STORE]
    store.form_secret = await store.backend.shared_secret(store.form_secret)
    async with pruning(store.backend, store.prune):
        yield
