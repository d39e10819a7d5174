"""Cross-site request forgery defence for every POST.

Two independent checks, both required:

1. Where the request says it comes from. ``Sec-Fetch-Site`` must be
   ``same-origin`` (or ``none``: typed by the user) when a browser sends it.
   ``Origin``, when present, must be the gateway's own origin (or a
   configured one), except ``Origin: null``, which Chromium sends for a
   same-origin form post under ``Referrer-Policy: no-referrer``: that is
   accepted only together with ``Sec-Fetch-Site: same-origin``.
2. The synchronizer token: a random value kept in the server-side session,
   sent back as the ``X-CSRF-Token`` header (fetch) or the ``csrf_token`` form
   field, compared in constant time.

Non-browser clients send neither header of check 1 and pass it; they still
need the token, which only a holder of the session can read.
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web
from aiohttp_session import get_session

from shared.web import read_form

from .audit import AUDIT, CSRF_REFUSED, REFUSED
from .auth import current_user
from .errors import CsrfRefused, GatewayError
from .peer import TRUSTED_PROXIES, own_origin
from .settings import SETTINGS

#: Session key of the synchronizer token.
SESSION_CSRF = "csrf"
HEADER = "X-CSRF-Token"
FORM_FIELD = "csrf_token"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def new_csrf_token() -> str:
    """Return a fresh random token (to store in a session)."""
    return secrets.token_urlsafe(32)


async def csrf_token(request: web.Request) -> str:
    """Return the synchronizer token of the request's session, creating one if needed.

    For templates and ``/api/admin/config``. Creating one stores it in the
    session (and so starts an anonymous session for the login form).
    """
    session = await get_session(request)
    token = session.get(SESSION_CSRF)
    if not isinstance(token, str):
        token = new_csrf_token()
        session[SESSION_CSRF] = token
    return token


def origin_problem(request: web.Request) -> str | None:
    """Return why the request's origin headers are unacceptable, or ``None`` if they are fine."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return "cross_site"
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    origin = origin.strip().lower().rstrip("/")
    if origin == "null":
        return None if site is not None and site.strip().lower() == "same-origin" else "null_origin"
    allowed = {own_origin(request, request.app[TRUSTED_PROXIES])}
    allowed.update(o.strip().lower().rstrip("/") for o in request.app[SETTINGS].allowed_origins)
    return None if origin in allowed else "foreign_origin"


async def _supplied_token(request: web.Request) -> str | None:
    token = request.headers.get(HEADER)
    if token is None and request.content_type in _FORM_TYPES:
        value = (await read_form(request, error=GatewayError)).get(FORM_FIELD)
        token = value if isinstance(value, str) else None
    return token


async def check_csrf(request: web.Request) -> None:
    """Raise 403 ``csrf`` (and record the refusal) unless the request passes both checks."""
    reason = origin_problem(request)
    if reason is None:
        supplied = await _supplied_token(request)
        expected = (await get_session(request)).get(SESSION_CSRF)
        if not supplied:
            reason = "missing_token"
        elif not isinstance(expected, str):
            reason = "no_session_token"
        elif not hmac.compare_digest(supplied.encode(), expected.encode()):
            reason = "wrong_token"
    if reason is not None:
        user = await current_user(request)
        await request.app[AUDIT].record(CSRF_REFUSED, request=request, actor=user.name if user else None,
                                        outcome=REFUSED, code=CsrfRefused.code, status=403, reason=reason)
        raise CsrfRefused("request refused: missing or invalid CSRF token, or a foreign origin; "
                          "reload the page and try again")
