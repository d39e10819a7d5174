"""Signing in and out: ``GET/POST /login`` and ``POST /logout``.

A wrong user name and a wrong password get the same answer (same status,
same text, about the same time: see ``UserStore.verify``). Every attempt is
counted by the throttle *before* its password is checked (see
:mod:`admin_gateway.auth.throttle`; refused: 429 with ``Retry-After``), and the
check runs in the bounded :mod:`admin_gateway.auth.password_checks` pool (full:
429 at once). A successful login sets a device cookie
(:mod:`admin_gateway.auth.device_cookies`), rotates the session (``SessionState.rotate``:
a fresh id, the old one deleted on the server), issues a fresh CSRF token
and deletes the login form's ``gw_form`` cookie (its tokens die with it).

Auditing: a login that cannot be recorded does not happen (503
``journal_unavailable``, no session). A logout always ends the session on
the server, even when its record cannot be written (that is logged at ERROR
as ``audit_write_failed``): refusing to sign someone out would be worse.

Browsers get HTML (the login page re-rendered with the error); clients that
ask for JSON only (``Accept: application/json``) get the JSON API's errors.
The page is the panel's ``login.html``, in the layout every page shares
(:mod:`admin_gateway.http.templates`).
"""

from __future__ import annotations

import asyncio
import math
import re
from urllib.parse import quote

import structlog
from aiohttp import web

from admin_gateway.audit.trail import ACCEPTED, AUDIT, LOGIN_FAILED, LOGIN_SUCCEEDED, LOGOUT, REFUSED
from admin_gateway.auth.accounts import record_sign_in
from admin_gateway.auth.csrf import SESSION_CSRF, check_csrf, new_csrf_token
from admin_gateway.auth.device_cookies import DEVICE_COOKIES, DeviceCookies, device_key_ctx
from admin_gateway.auth.guards import SESSION_GENERATION, SESSION_USER, USER_STORE, current_user
from admin_gateway.auth.password_checks import PASSWORD_CHECKS, HasherBusy, PasswordChecks, password_checks_ctx
from admin_gateway.auth.sessions import SESSION_STORE, load_session
from admin_gateway.auth.throttle import LOGIN_THROTTLE, Refusal
from admin_gateway.auth.user_sync import users_sync_ctx
from admin_gateway.auth.users import MAX_PASSWORD_LENGTH, UserError, validate_name
from admin_gateway.errors import AuditUnavailable, CsrfRefused, GatewayError, Throttled, Unauthorized
from admin_gateway.http.access import PASSWORD_PATH
from admin_gateway.http.templates import render_template
from admin_gateway.peer import TRUSTED_PROXIES, client_address
from admin_gateway.settings import SETTINGS
from shared.web import read_form

#: Where a successful login lands (unless ``next=`` names a page).
AFTER_LOGIN = "/admin/engine/jobs"
#: The login form's field (and query parameter) naming the page to land on.
NEXT_FIELD = "next"
MAX_NEXT_CHARS = 2048
#: Control characters and whitespace (browsers drop tabs and newlines: ``/\t/evil`` becomes ``//evil``).
_UNSAFE_NEXT = re.compile(r"[\x00-\x20\x7f\\]")
_log = structlog.get_logger("gateway")


def safe_next(value: object) -> str | None:
    """``value`` if it is a path of this site to land on after signing in, else ``None``.

    Only a same-origin path is taken: it starts with one ``/`` (not ``//``,
    which a browser reads as another host), has no backslash (``/\\host``
    is read the same way), no whitespace or control character, and is at
    most :data:`MAX_NEXT_CHARS` long. Anything else (``https://evil``,
    ``javascript:``, a relative path) is dropped: the sign-in lands on
    :data:`AFTER_LOGIN` as usual.
    """
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return None
    if len(value) > MAX_NEXT_CHARS or _UNSAFE_NEXT.search(value):
        return None
    return value


def after_login(next_page: str | None, *, must_change: bool) -> str:
    """Where a successful sign-in goes: the password page first when it must change, then ``next_page``."""
    if must_change:
        return f"{PASSWORD_PATH}?{NEXT_FIELD}={_quote(next_page)}" if next_page else PASSWORD_PATH
    return next_page or AFTER_LOGIN


def _quote(path: str) -> str:
    return quote(path, safe="/")


_MAX_USERNAME_FIELD = 256
#: Seconds a client is asked to wait when every password-check thread is busy.
_BUSY_RETRY_AFTER = 1


def wants_json(request: web.Request) -> bool:
    """Whether the client asked for JSON rather than a page."""
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


async def render_login(
    request: web.Request,
    error: str | None = None,
    *,
    username: str = "",
    next_page: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Return the login page (with ``error`` shown, if any) with ``status``; ``next_page`` rides in a hidden field."""
    # render_template adds the form's CSRF token, as it does for every page.
    context = {"error": error, "username": username, "next_page": next_page or ""}
    response = await render_template(request, "login.html", context, status=status)
    if headers:
        response.headers.update(headers)
    return response


def _loggable_name(username: str) -> str | None:
    """The attempted name for the audit trail, only if it is a possible user name.

    Anything else is more likely a password typed into the wrong field.
    """
    try:
        return validate_name(username)
    except UserError:
        return None


async def login_page(request: web.Request) -> web.StreamResponse:
    """``GET /login[?next=/path]``: the form, or straight on (to ``next``) when already signed in."""
    next_page = safe_next(request.query.get(NEXT_FIELD))
    user = await current_user(request)
    if user is not None:
        raise web.HTTPSeeOther(after_login(next_page, must_change=user.must_change_password))
    return await render_login(request, next_page=next_page)


async def login(request: web.Request) -> web.StreamResponse:
    """``POST /login`` (``username``, ``password``, ``csrf_token``): 303 to the panel, or the form again."""
    json_mode = wants_json(request)
    try:
        await check_csrf(request)
    except CsrfRefused:
        if json_mode:
            raise
        next_page = safe_next(request.query.get(NEXT_FIELD))
        return await render_login(
            request, "This sign-in form has expired. Please sign in again.", next_page=next_page, status=403
        )
    form = await read_form(request, error=GatewayError)
    next_page = safe_next(form.get(NEXT_FIELD))
    raw_name, raw_password = form.get("username"), form.get("password")
    username = raw_name[:_MAX_USERNAME_FIELD] if isinstance(raw_name, str) else ""
    password = raw_password if isinstance(raw_password, str) else ""
    audit = request.app[AUDIT]
    throttle = request.app[LOGIN_THROTTLE]
    address = client_address(request, request.app[TRUSTED_PROXIES])
    attempted = _loggable_name(username)
    # A name that cannot be a user name is not recorded: it is more likely a password.
    invalid_name = True if attempted is None and username else None

    devices = request.app[DEVICE_COOKIES]
    device = devices.from_request(request, throttle.account_key, username)
    admitted = throttle.reserve(username, address, device=device)
    if isinstance(admitted, Refusal):
        return await _refuse_attempt(
            request,
            json_mode,
            username,
            attempted,
            invalid_name,
            wait=admitted.retry_after,
            reason="throttled",
            limit=admitted.limit,
        )

    store = request.app[USER_STORE]
    try:
        record = await request.app[PASSWORD_CHECKS].run(
            store.verify,
            username,
            password[: MAX_PASSWORD_LENGTH + 1],
            client=admitted.address,
            trusted=device is not None,
        )
    except HasherBusy as busy:
        admitted.unchecked()  # no password was checked: nothing was guessed
        return await _refuse_attempt(
            request,
            json_mode,
            username,
            attempted,
            invalid_name,
            wait=_BUSY_RETRY_AFTER,
            reason="busy",
            limit="address" if busy.per_address else None,
        )
    if record is None or record.disabled:
        # The reservation stays: this attempt is a counted failure. A disabled account's right
        # password is told so (a guesser without it learns nothing).
        disabled = record is not None
        await audit.record(
            LOGIN_FAILED,
            request=request,
            actor=record.name if record is not None else attempted,
            outcome=REFUSED,
            code=Unauthorized.code,
            status=401,
            reason="disabled" if disabled else "bad_credentials",
            usernameInvalid=invalid_name,
            trustedDevice=True if device is not None else None,
        )
        if disabled:
            message = "This account is disabled. Ask a super_admin to enable it."
        else:
            message = "Invalid username or password."
        if json_mode:
            raise Unauthorized(message)
        return await render_login(request, message, username=username, next_page=next_page, status=401)
    admitted.signed_in()

    try:
        # Recorded before the session exists: a sign-in that leaves no record does not happen.
        await audit.record(
            LOGIN_SUCCEEDED,
            request=request,
            actor=record.name,
            outcome=ACCEPTED,
            role=record.role,
            trustedDevice=True if device is not None else None,
            fail_closed=True,
        )
    except AuditUnavailable:
        if json_mode:
            raise
        return await render_login(
            request,
            "Sign-in is unavailable: the audit trail cannot be written. Try again later or tell the operators.",
            username=username,
            next_page=next_page,
            status=503,
        )
    # A sign-in starts a fresh session under a fresh id: nothing of an earlier one carries over.
    session = await load_session(request)
    session.clear()
    session.rotate()
    session[SESSION_USER] = record.name
    session[SESSION_GENERATION] = record.generation
    session[SESSION_CSRF] = new_csrf_token()
    try:
        await asyncio.to_thread(record_sign_in, store, record.name)
    except (OSError, UserError) as exc:  # only the "last sign-in" column misses it: not worth refusing the sign-in
        _log.warning("last_sign_in_not_saved", user=record.name, error=str(exc))
    done: web.StreamResponse
    if json_mode:
        done = web.json_response(
            {
                "user": record.name,
                "role": record.role,
                "csrfToken": session[SESSION_CSRF],
                "mustChangePassword": record.must_change_password,
            }
        )
    else:
        done = web.HTTPSeeOther(after_login(next_page, must_change=record.must_change_password))
    devices.set_cookie(request, done, record.name)
    request.app[SESSION_STORE].clear_form_cookie(request, done)
    if isinstance(done, web.HTTPException):
        raise done
    return done


async def _refuse_attempt(
    request: web.Request,
    json_mode: bool,
    username: str,
    attempted: str | None,
    invalid_name: bool | None,
    *,
    wait: int,
    reason: str,
    limit: str | None,
) -> web.Response:
    """Record and answer a login attempt refused before its password was checked: 429 with ``Retry-After``."""
    await request.app[AUDIT].record(
        LOGIN_FAILED,
        request=request,
        actor=attempted,
        outcome=REFUSED,
        code=Throttled.code,
        status=429,
        reason=reason,
        limit=limit,
        retryAfter=wait,
        usernameInvalid=invalid_name,
    )
    if reason == "busy":
        message = "Too many sign-in attempts are being checked right now. Try again in a moment."
    else:
        message = f"Too many failed sign-in attempts. Try again in {_wait_text(wait)}."
    headers = {"Retry-After": str(wait)}
    if json_mode:
        raise Throttled(message, headers=headers)
    return await render_login(request, message, username=username, status=429, headers=headers)


def _wait_text(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} second(s)"
    return f"{math.ceil(seconds / 60)} minute(s)"


async def logout(request: web.Request) -> web.StreamResponse:
    """``POST /logout``: end the session on the server, then 303 to ``/login``.

    With a signed-in session the CSRF check applies (a forged logout is
    refused); without one there is nothing to end. The session ends even if
    the record cannot be written (best effort, logged at ERROR).
    """
    user = await current_user(request)
    if user is not None:
        await check_csrf(request)
        await request.app[AUDIT].record(LOGOUT, request=request, actor=user.name, outcome=ACCEPTED)
    (await load_session(request)).end()
    if wants_json(request):
        return web.Response(status=204)
    raise web.HTTPSeeOther("/login")


def setup_auth(app: web.Application) -> None:
    """Give ``app`` the device cookies and password-check threads that ``/login`` uses, and the users' sync."""
    settings = app[SETTINGS]
    app[DEVICE_COOKIES] = DeviceCookies(clock=settings.clock, trusted_proxies=app[TRUSTED_PROXIES])
    app[PASSWORD_CHECKS] = PasswordChecks(
        workers=settings.login_hash_workers,
        queue=settings.login_hash_queue,
        per_address=settings.login_hash_per_address,
        reserved=settings.login_hash_reserved,
    )
    app.cleanup_ctx.extend([device_key_ctx(settings.data_dir), password_checks_ctx, users_sync_ctx])


__all__ = ["render_login", "setup_auth", "wants_json"]
