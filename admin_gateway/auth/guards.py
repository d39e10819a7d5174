"""Who is asking: the signed-in user of a request, and the guards that demand one.

A session names its user and the user's credential generation; the user
store is consulted on every request, so removing a user, changing their
role or their password takes effect at once, not at the next login.
"""

from __future__ import annotations

import functools

import attrs
from aiohttp import web

from admin_gateway.audit.trail import ACCESS_DENIED, AUDIT, REFUSED
from admin_gateway.auth.sessions import SESSION_STORE, SESSION_USER_KEY, discard_session, load_session
from admin_gateway.auth.users import ROLE_ADMIN, ROLE_SUPER_ADMIN, UserStore
from admin_gateway.errors import GatewayError, Unauthorized
from shared.contract import ErrorCode

__all__ = [
    "ROLE_ADMIN",
    "ROLE_SUPER_ADMIN",
    "USER_STORE",
    "PasswordChangeRequired",
    "User",
    "current_user",
    "record_role_refusal",
    "require_password_changed",
    "require_super_admin",
    "require_user",
    "session_end",
]

#: Session keys.
SESSION_USER = SESSION_USER_KEY
SESSION_GENERATION = "gen"

#: The app's user store.
USER_STORE = web.AppKey("user_store", UserStore)


@attrs.frozen(kw_only=True)
class User:
    """The signed-in user of a request: name, role and whether they must change their password (as stored now)."""

    name: str
    role: str
    #: Signed in with a generated password: nothing but changing it is allowed yet.
    must_change_password: bool = False

    @property
    def is_super_admin(self) -> bool:
        """Whether this user may use the engine panel and API."""
        return self.role == ROLE_SUPER_ADMIN


async def current_user(request: web.Request) -> User | None:
    """Return the user of the request's valid, unexpired session, or ``None``.

    A session whose user no longer exists, was disabled, or whose password
    or role changed since the session was opened, is deleted here. Cheap enough to call more than
    once per request (the session is loaded once: :func:`load_session`).
    """
    session = await load_session(request)
    name = session.get(SESSION_USER)
    if not isinstance(name, str):
        return None
    stored = request.app[USER_STORE].get(name)
    if stored is not None and not stored.disabled and stored.generation == session.get(SESSION_GENERATION):
        return _user(stored.name, stored.role, stored.must_change_password)
    await discard_session(request)
    return None


async def session_end(request: web.Request, session_id: str) -> str | None:
    """Why session ``session_id`` no longer grants its user anything, or ``None`` while it does.

    ``"expired"``, or ``"signed_out"`` (ended, or its user removed or their
    password changed since). Reading does not keep the session alive: a
    page that only watches lets it expire (:meth:`SessionStore.peek`).
    """
    reason, data = await request.app[SESSION_STORE].peek(session_id)
    if reason is not None:
        return reason
    name = data.get(SESSION_USER)
    stored = request.app[USER_STORE].get(name) if isinstance(name, str) else None
    if stored is None or stored.disabled or stored.generation != data.get(SESSION_GENERATION):
        return "signed_out"
    return None


@functools.lru_cache(maxsize=1024)
def _user(name: str, role: str, must_change_password: bool) -> User:
    # Users are immutable values: one object per (name, role, flag) instead of one per request.
    return User(name=name, role=role, must_change_password=must_change_password)


class PasswordChangeRequired(GatewayError):
    """403 ``password_change_required``: signed in with a generated password, which must be changed first."""

    status = 403
    code = ErrorCode.PASSWORD_CHANGE_REQUIRED


async def require_user(request: web.Request) -> User:
    """Return the signed-in user or raise 401 ``unauthorized`` (and record the denial)."""
    user = await current_user(request)
    if user is None:
        await request.app[AUDIT].record(
            ACCESS_DENIED, request=request, outcome=REFUSED, code=Unauthorized.code, status=401, reason="no_session"
        )
        raise Unauthorized("sign in first")
    return user


async def require_super_admin(request: web.Request) -> User:
    """Return the signed-in super_admin or raise 401 (no session, or another role)."""
    user = await require_user(request)
    if not user.is_super_admin:
        await record_role_refusal(request, user, status=401)
        raise Unauthorized("this needs the super_admin role", code=ErrorCode.FORBIDDEN)
    return user


async def record_role_refusal(request: web.Request, user: User, *, status: int) -> None:
    """Write the ``access_denied`` record of ``user`` refused for their role; ``status`` is what they get."""
    await _record_denial(request, user, code=ErrorCode.FORBIDDEN, status=status, reason="role", role=user.role)


async def require_password_changed(request: web.Request, user: User) -> None:
    """Raise 403 ``password_change_required`` (recorded) while ``user`` must change a one-time password."""
    if user.must_change_password:
        refusal = PasswordChangeRequired("change your one-time password first: /admin/password")
        await _record_denial(request, user, code=refusal.code, status=refusal.status, reason="password_change_required")
        raise refusal


async def _record_denial(
    request: web.Request, user: User, *, code: ErrorCode, status: int, reason: str, role: str | None = None
) -> None:
    await request.app[AUDIT].record(
        ACCESS_DENIED,
        request=request,
        actor=user.name,
        outcome=REFUSED,
        code=code,
        status=status,
        reason=reason,
        role=role,
    )
