"""The Users page's JSON API (super_admin): list users; add, change the role of, disable, enable, remove, reset.

Each change is audited in the gateway journal like a job change: an intent
record (``user_add_requested`` …, written fail-closed: when the journal
cannot record, nothing is changed and the answer is 503) before the users
file is touched, then the outcome (``user_add`` …, ``accepted`` or
``refused`` with its code). ``data.targetUser`` names the user changed; no
password is ever recorded.

A change that takes rights away (disable, remove, demote, reset) ends the
user's sessions at once: a new credential generation in the users file, and
their session records deleted from the session backend (with Redis: every
gateway's). The rules themselves (the last active super_admin stays) are
:mod:`admin_gateway.auth.accounts`'; here, in addition, nobody changes their
own account through this API (their own password has its own page), so a
super_admin cannot lock themselves out by a slip.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any, Final, TypeVar

from aiohttp import web

from admin_gateway.audit.trail import ACCEPTED, AUDIT, REQUESTED, outcome_of, requested
from admin_gateway.auth import accounts
from admin_gateway.auth.csrf import check_csrf
from admin_gateway.auth.guards import SESSION_GENERATION, SESSION_USER, USER_STORE, User
from admin_gateway.auth.sessions import SESSION_STORE
from admin_gateway.auth.users import NoSuchUser, UserError, UserExists, UserRecord, UsersBusy, UsersUnavailable
from admin_gateway.errors import GatewayError
from admin_gateway.http.access import request_user
from admin_gateway.http.admin_api import read_body
from shared.contract import ErrorCode

T = TypeVar("T")

#: Audit actions of the Users page (and of the Change password page: ``password_change``).
USER_ADD: Final = "user_add"
USER_ROLE: Final = "user_role_change"
USER_DISABLE: Final = "user_disable"
USER_ENABLE: Final = "user_enable"
USER_REMOVE: Final = "user_remove"
USER_RESET: Final = "user_password_reset"
PASSWORD_CHANGE: Final = "password_change"
USER_ACTIONS: Final = (USER_ADD, USER_ROLE, USER_DISABLE, USER_ENABLE, USER_REMOVE, USER_RESET, PASSWORD_CHANGE)


class UnknownUser(GatewayError):
    """404 ``not_found``: no user of that name."""

    status = 404
    code = ErrorCode.NOT_FOUND


class UserTaken(GatewayError):
    """409 ``user_exists``: the name, or one too like it, is taken."""

    status = 409
    code = ErrorCode.USER_EXISTS


class LastSuperAdminRefused(GatewayError):
    """409 ``last_super_admin``: the change would leave no active super_admin."""

    status = 409
    code = ErrorCode.LAST_SUPER_ADMIN


class UsersStoreDown(GatewayError):
    """503 ``store_unavailable``: the users shared through Redis cannot be changed now (nothing was changed)."""

    status = 503
    code = ErrorCode.STORE_UNAVAILABLE


def gateway_error(exc: UserError) -> GatewayError:
    """The API's answer to a refused user change."""
    if isinstance(exc, UsersUnavailable | UsersBusy):
        return UsersStoreDown(str(exc))
    if isinstance(exc, NoSuchUser):
        return UnknownUser(str(exc))
    if isinstance(exc, UserExists):
        return UserTaken(str(exc))
    if isinstance(exc, accounts.LastSuperAdmin):
        return LastSuperAdminRefused(str(exc))
    return GatewayError(str(exc), code=ErrorCode.INVALID_FIELD)


def user_json(rec: UserRecord, sessions: int) -> dict[str, Any]:
    """One user as the API shows it (never the hash)."""
    return {
        "name": rec.name,
        "role": rec.role,
        "disabled": rec.disabled,
        "mustChangePassword": rec.must_change_password,
        "createdAt": rec.created_at,
        "passwordChangedAt": rec.password_changed_at,
        "lastSignInAt": rec.last_sign_in_at,
        "sessions": sessions,
    }


async def session_counts(request: web.Request) -> Counter[str]:
    """Live sessions per user name, counting only those that still grant something (current generation)."""
    users = request.app[USER_STORE].load()
    counts: Counter[str] = Counter()
    for data in await request.app[SESSION_STORE].live_sessions():
        name = data.get(SESSION_USER)
        rec = users.get(name) if isinstance(name, str) else None
        if rec is not None and not rec.disabled and rec.generation == data.get(SESSION_GENERATION):
            counts[rec.name] += 1
    return counts


async def list_users(request: web.Request) -> web.Response:
    """``GET /api/admin/users``: every user with role, state, last sign-in and live sessions; ``you`` is the caller."""
    counts = await session_counts(request)
    users = await asyncio.to_thread(request.app[USER_STORE].list_users)
    body = {"users": [user_json(u, counts[u.name]) for u in users], "you": request_user(request).name}
    return web.json_response(body)


def _str_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise GatewayError(f"{name} is required and must be a string", code=ErrorCode.INVALID_FIELD)
    return value


async def _change(
    request: web.Request,
    user: User,
    action: str,
    target: str,
    work: Callable[[], T],
    *,
    ends_sessions: bool = False,
    **fields: Any,
) -> tuple[T, int]:
    """Run ``work`` in a thread between its intent and outcome records; then end ``target``'s sessions if asked.

    Returns ``work``'s result and how many sessions were ended.
    """
    audit = request.app[AUDIT]
    intent = await audit.record(
        requested(action), request=request, actor=user.name, outcome=REQUESTED, targetUser=target, fail_closed=True
    )
    seq = intent.seq if intent is not None else None
    try:
        result = await asyncio.to_thread(work)
    except UserError as exc:
        error = gateway_error(exc)
        await audit.record(
            action, request=request, actor=user.name, targetUser=target, intentSeq=seq, **outcome_of(error)
        )
        raise error from None
    ended = await request.app[SESSION_STORE].end_user_sessions(target) if ends_sessions else 0
    await audit.record(
        action,
        request=request,
        actor=user.name,
        outcome=ACCEPTED,
        targetUser=target,
        intentSeq=seq,
        sessionsEnded=ended or None,
        **fields,
    )
    return result, ended


async def _refused_early(request: web.Request, user: User, action: str, target: str | None, exc: GatewayError) -> None:
    await request.app[AUDIT].record(action, request=request, actor=user.name, targetUser=target, **outcome_of(exc))


def _not_yourself(user: User, target: str) -> None:
    if target == user.name:
        raise GatewayError(
            "you cannot change your own account here (use Change password for your password; "
            "another super_admin can change your role)",
            code=ErrorCode.INVALID_FIELD,
        )


async def add_user(request: web.Request) -> web.Response:
    """``POST /api/admin/users`` ``{name, role}``: 201 ``{user, password}``, the one-time password shown once."""
    user = request_user(request)
    await check_csrf(request)
    try:
        body = await read_body(request, ("name", "role"), required=True)
        name, role = _str_field(body, "name"), _str_field(body, "role")
    except GatewayError as exc:
        await _refused_early(request, user, USER_ADD, None, exc)
        raise
    store = request.app[USER_STORE]
    (rec, password), _ = await _change(request, user, USER_ADD, name, lambda: accounts.add_user(store, name, role))
    return web.json_response({"user": user_json(rec, 0), "password": password}, status=201)


async def _target(request: web.Request, user: User, action: str, *, takes_body: bool = False) -> str:
    """The user a change names, after the CSRF check and the self check; a change without a body refuses one."""
    name = request.match_info["name"]
    try:
        await check_csrf(request)
        _not_yourself(user, name)
        if not takes_body:
            await read_body(request, ())
    except GatewayError as exc:
        await _refused_early(request, user, action, name, exc)
        raise
    return name


async def change_role(request: web.Request) -> web.Response:
    """``POST /api/admin/users/{name}/role`` ``{role}``: 200 ``{user}``; a real change ends their sessions."""
    user = request_user(request)
    name = await _target(request, user, USER_ROLE, takes_body=True)
    try:
        role = _str_field(await read_body(request, ("role",), required=True), "role")
    except GatewayError as exc:
        await _refused_early(request, user, USER_ROLE, name, exc)
        raise
    store = request.app[USER_STORE]
    before = store.get(name)
    # Only a real change of role ends the sessions (set_role gives a new generation only then).
    changes = before is not None and before.role != role
    rec, _ = await _change(
        request, user, USER_ROLE, name, lambda: accounts.set_role(store, name, role), ends_sessions=changes, role=role
    )
    return web.json_response({"user": user_json(rec, 0)})


async def disable_user(request: web.Request) -> web.Response:
    """``POST /api/admin/users/{name}/disable``: 200 ``{user, sessionsEnded}``; they cannot sign in any more."""
    return await _set_disabled(request, USER_DISABLE, disabled=True)


async def enable_user(request: web.Request) -> web.Response:
    """``POST /api/admin/users/{name}/enable``: 200 ``{user, sessionsEnded: 0}``; they may sign in again."""
    return await _set_disabled(request, USER_ENABLE, disabled=False)


async def _set_disabled(request: web.Request, action: str, *, disabled: bool) -> web.Response:
    user = request_user(request)
    name = await _target(request, user, action)
    store = request.app[USER_STORE]
    rec, ended = await _change(
        request, user, action, name, lambda: accounts.set_disabled(store, name, disabled), ends_sessions=disabled
    )
    return web.json_response({"user": user_json(rec, 0), "sessionsEnded": ended})


async def remove_user(request: web.Request) -> web.Response:
    """``POST /api/admin/users/{name}/remove``: 200 ``{name, sessionsEnded}``."""
    user = request_user(request)
    name = await _target(request, user, USER_REMOVE)
    store = request.app[USER_STORE]
    _, ended = await _change(
        request, user, USER_REMOVE, name, lambda: accounts.remove_user(store, name), ends_sessions=True
    )
    return web.json_response({"name": name, "sessionsEnded": ended})


async def reset_password(request: web.Request) -> web.Response:
    """``POST /api/admin/users/{name}/reset-password``: 200 ``{user, password, sessionsEnded}`` (shown once)."""
    user = request_user(request)
    name = await _target(request, user, USER_RESET)
    store = request.app[USER_STORE]
    password, ended = await _change(
        request, user, USER_RESET, name, lambda: accounts.reset_password(store, name), ends_sessions=True
    )
    rec = store.get(name)
    if rec is None:  # removed in the instant since: the password opens nothing
        raise UnknownUser(f"no user {name!r}")
    return web.json_response({"user": user_json(rec, 0), "password": password, "sessionsEnded": ended})
