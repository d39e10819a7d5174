"""The account pages: Change password (``/admin/password``, every signed-in user) and Users (``/admin/users``).

The Change password page is a plain form (it works without JavaScript):
current password, new password twice. It is the only page open to a user
signed in with a generated password (:mod:`admin_gateway.http.access`).
Wrong current passwords are throttled like sign-ins (the same per-account
and per-address budgets, :mod:`admin_gateway.auth.throttle`), and checked in
the bounded password-check threads. A change ends every other session of
the user at once (a new generation, their records deleted from the backend)
and moves the session it was made from onto a fresh id, so the person stays
signed in where they changed it. Recorded as ``password_change``.

The Users page is rendered empty and filled by ``static/js/users.js`` from
``GET /api/admin/users`` (:mod:`admin_gateway.http.users_api`).
"""

from __future__ import annotations

from aiohttp import web

from admin_gateway.audit.trail import ACCEPTED, AUDIT, REFUSED
from admin_gateway.auth import accounts
from admin_gateway.auth.csrf import SESSION_CSRF, check_csrf, new_csrf_token
from admin_gateway.auth.guards import SESSION_GENERATION, USER_STORE, User
from admin_gateway.auth.password_checks import PASSWORD_CHECKS, HasherBusy
from admin_gateway.auth.sessions import SESSION_STORE, load_session
from admin_gateway.auth.throttle import LOGIN_THROTTLE, Refusal
from admin_gateway.auth.users import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    ROLES,
    UserError,
    UsersBusy,
    UsersUnavailable,
)
from admin_gateway.errors import CsrfRefused, GatewayError
from admin_gateway.http.access import request_user
from admin_gateway.http.login import AFTER_LOGIN, NEXT_FIELD, safe_next
from admin_gateway.http.templates import render_template
from admin_gateway.http.users_api import PASSWORD_CHANGE
from admin_gateway.peer import TRUSTED_PROXIES, client_address
from shared.web import read_form


async def _password_page(
    request: web.Request, user: User, *, error: str | None = None, status: int = 200, next_page: str | None = None
) -> web.Response:
    context = {
        "error": error,
        "forced": user.must_change_password,
        "next_page": next_page or "",
        "min_length": MIN_PASSWORD_LENGTH,
        "active_nav": "password",
    }
    return await render_template(request, "password.html", context, user=user, status=status)


async def password_page(request: web.Request) -> web.StreamResponse:
    """``GET /admin/password[?next=/path]``: the Change password form."""
    return await _password_page(request, request_user(request), next_page=safe_next(request.query.get(NEXT_FIELD)))


async def change_password(request: web.Request) -> web.StreamResponse:
    """``POST /admin/password`` (``current_password``, ``new_password``, ``new_password_again``, ``next``).

    303 to ``next`` (or the panel) once changed; else the form again with
    the error: 400 (rules, mismatch), 401 (wrong current password), 403
    (CSRF), 429 (throttled or every password-check thread busy).
    """
    user = request_user(request)
    try:
        await check_csrf(request)
    except CsrfRefused:
        return await _password_page(request, user, error="This form has expired. Please try again.", status=403)
    form = await read_form(request, error=GatewayError)
    next_page = safe_next(form.get(NEXT_FIELD))
    fields = [form.get(k) for k in ("current_password", "new_password", "new_password_again")]
    current, new, again = (v[: MAX_PASSWORD_LENGTH + 1] if isinstance(v, str) else "" for v in fields)
    audit = request.app[AUDIT]

    async def refuse(message: str, reason: str, status: int) -> web.Response:
        await audit.record(PASSWORD_CHANGE, request=request, actor=user.name, outcome=REFUSED, reason=reason)
        return await _password_page(request, user, error=message, status=status, next_page=next_page)

    if new != again:
        return await refuse("The two new passwords differ.", "mismatch", 400)
    address = client_address(request, request.app[TRUSTED_PROXIES])
    admitted = request.app[LOGIN_THROTTLE].reserve(user.name, address)
    if isinstance(admitted, Refusal):
        return await refuse(f"Too many wrong passwords. Try again in {admitted.retry_after} s.", "throttled", 429)
    store = request.app[USER_STORE]
    try:
        rec = await request.app[PASSWORD_CHECKS].run(
            accounts.change_own_password, store, user.name, current, new, client=admitted.address
        )
    except HasherBusy:
        admitted.unchecked()
        return await refuse("Too many password checks right now. Try again in a moment.", "busy", 429)
    except accounts.WrongPassword:
        return await refuse("The current password is wrong.", "wrong_password", 401)
    except (UsersUnavailable, UsersBusy) as exc:
        admitted.unchecked()
        return await refuse(f"Not changed: {exc}.", "unavailable", 503)
    except UserError as exc:
        admitted.signed_in()  # the current password was right: this is no guess
        return await refuse(f"Not changed: {exc}.", "invalid_password", 400)
    admitted.signed_in()
    ended = await request.app[SESSION_STORE].end_user_sessions(user.name)
    # This browser stays signed in, on a fresh id and the new generation; the others are gone.
    session = await load_session(request)
    session.rotate()
    session[SESSION_GENERATION] = rec.generation
    session[SESSION_CSRF] = new_csrf_token()
    await audit.record(
        PASSWORD_CHANGE,
        request=request,
        actor=user.name,
        outcome=ACCEPTED,
        forced=user.must_change_password or None,
        sessionsEnded=(ended - 1) or None,
    )
    raise web.HTTPSeeOther(next_page or AFTER_LOGIN)


async def users_page(request: web.Request) -> web.StreamResponse:
    """``GET /admin/users``: the Users page (its script lists the users and offers the changes)."""
    user = request_user(request)
    context = {"roles": ROLES, "active_nav": "users", "you": user.name}
    return await render_template(request, "users.html", context, user=user)
