"""Cross-site request forgery defence for every POST.

Two independent checks, both required:

1. Where the request says it comes from. ``Sec-Fetch-Site`` must be
   ``same-origin`` (or ``none``: typed by the user) when a browser sends it.
   ``Origin``, when present, must be the gateway's own origin (or a
   configured one), except ``Origin: null``, which Chromium sends for a
   same-origin form post under ``Referrer-Policy: no-referrer``: that is
   accepted only together with ``Sec-Fetch-Site: same-origin``.
2. The token, sent back as the ``X-CSRF-Token`` header (fetch) or the
   ``csrf_token`` form field, compared in constant time:

   - signed in: the synchronizer token, a random value kept in the
     server-side session;
   - signed out (the login form): a stateless token, ``<issued>.<mac>``
     where ``mac`` is an HMAC-SHA256, keyed with the gateway's form secret,
     over the issue time and the random nonce of the browser's ``gw_form``
     cookie (HttpOnly, SameSite=Strict, ``__Host-``/Secure over HTTPS). It
     is valid for ``login_form_timeout`` seconds and only with that cookie,
     so a token lifted from another browser is useless. Serving the form
     stores nothing on the server: anonymous visitors cannot fill the
     session store (:mod:`admin_gateway.auth.sessions`). A successful sign-in
     deletes the ``gw_form`` cookie (``SessionStore.clear_form_cookie``), so a form
     token taken from a page before is dead afterwards.

Non-browser clients send neither header of check 1 and pass it; they still
need the token, which only a holder of the session can read.
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web

from admin_gateway.audit.trail import AUDIT, CSRF_REFUSED, REFUSED
from admin_gateway.auth.guards import current_user
from admin_gateway.auth.sessions import SESSION_STORE, load_session
from admin_gateway.auth.signing import mac, mac_matches
from admin_gateway.errors import CsrfRefused, GatewayError
from admin_gateway.peer import TRUSTED_PROXIES, own_origin
from admin_gateway.settings import SETTINGS
from shared.web import read_form

#: Session key of the synchronizer token.
SESSION_CSRF = "csrf"
HEADER = "X-CSRF-Token"
FORM_FIELD = "csrf_token"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
#: How far in the future a form token's issue time may lie (clocks of several gateways differ a little).
_FORM_CLOCK_SKEW = 60
_MAX_ISSUED_DIGITS = 12


def new_csrf_token() -> str:
    """Return a fresh random token (to store in a session)."""
    return secrets.token_urlsafe(32)


async def csrf_token(request: web.Request) -> str:
    """Return the token a form or fetch of this request's page must send back.

    For templates and ``/api/admin/config``: the signed-in session's
    synchronizer token, else a fresh stateless form token (which may set the
    ``gw_form`` nonce cookie on the response; nothing is stored on the server).
    """
    token = (await load_session(request)).get(SESSION_CSRF)
    if isinstance(token, str):
        return token
    storage = request.app[SESSION_STORE]
    nonce = storage.ensure_form_nonce(request)
    issued = str(int(request.app[SETTINGS].clock()))
    return f"{issued}.{mac(storage.form_secret, _form_message(nonce, issued))}"


def _form_message(nonce: str, issued: str) -> str:
    """What a form token's MAC covers: its purpose, the browser's nonce and the issue time."""
    return f"login-form\0{nonce}\0{issued}"


def _form_token_problem(request: web.Request, supplied: str) -> str | None:
    """Why ``supplied`` is not a valid form token for this browser now, or ``None`` if it is."""
    storage = request.app[SESSION_STORE]
    nonce = storage.form_nonce(request)
    if nonce is None:
        return "no_form_cookie"
    issued, _, supplied_mac = supplied.partition(".")
    if not (0 < len(issued) <= _MAX_ISSUED_DIGITS and issued.isascii() and issued.isdigit()):
        return "wrong_token"
    if not mac_matches(storage.form_secret, _form_message(nonce, issued), supplied_mac):
        return "wrong_token"
    settings = request.app[SETTINGS]
    age = settings.clock() - int(issued)
    if age < -_FORM_CLOCK_SKEW or age >= settings.login_form_timeout:
        return "expired_token"
    return None


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
        expected = (await load_session(request)).get(SESSION_CSRF)
        if not supplied:
            reason = "missing_token"
        elif not isinstance(expected, str):
            reason = _form_token_problem(request, supplied)
        elif not hmac.compare_digest(supplied.encode(), expected.encode()):
            reason = "wrong_token"
    if reason is not None:
        user = await current_user(request)
        await request.app[AUDIT].record(
            CSRF_REFUSED,
            request=request,
            actor=user.name if user else None,
            outcome=REFUSED,
            code=CsrfRefused.code,
            status=403,
            reason=reason,
        )
        raise CsrfRefused(
            "request refused: missing or invalid CSRF token, or a foreign origin; reload the page and try again"
        )
