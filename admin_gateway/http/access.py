"""The gateway's access rule: who may ask for a path at all, decided before any route runs.

It is the ``authenticate`` hook of the gateway's ``request_wrapper``, so it
runs for every request before its handler, the catch-all ``unmatched``
route and path-parameter checks included. An unknown path or a malformed
id under an authenticated prefix therefore tells a signed-out client
nothing more than a known one does:

- ``/api/admin`` and ``/api/admin/…``: a super_admin session, except
  :data:`ANY_USER_PATHS` (any signed-in user); otherwise 401
  (``unauthorized``, or ``forbidden`` for another role) with its
  ``access_denied`` audit record;
- ``/admin`` and ``/admin/…`` (the panel pages): a signed-in user, else the
  redirect to ``/login`` that every panel page answers. A signed-in user of
  another role reaches the page's own check (the "no access" page).

Handlers keep their own checks (``require_super_admin``, ``panel_page``):
this rule is the default that no route can forget, not a replacement.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from admin_gateway.auth.guards import User, current_user, require_super_admin, require_user

#: The JSON API that needs a session: ``/api/admin`` and everything under it.
API_ROOT: Final = "/api/admin"
API_PREFIX: Final = API_ROOT + "/"
#: Paths under :data:`API_PREFIX` open to any signed-in user (the rest needs super_admin).
ANY_USER_PATHS: Final = frozenset({"/api/admin/config"})
#: The panel's pages: ``/admin`` and everything under it.
PANEL_ROOT: Final = "/admin"
LOGIN_PATH: Final = "/login"
#: The super_admin the rule verified for this request (see :func:`verified_super_admin`).
VERIFIED_SUPER_ADMIN: Final = web.RequestKey("verified_super_admin", User)


def access_hook() -> Callable[[web.Request], Awaitable[object] | None]:
    """Build the gateway's ``authenticate`` hook: apply the access rule (the session loads when asked).

    Returns ``None`` (nothing to await) for paths outside the authenticated
    prefixes, so public routes pay for no session look-up; otherwise the
    check itself, which raises to refuse the request.
    """

    def authenticate(request: web.Request) -> Awaitable[object] | None:
        # The decoded path: a prefix spelled with escapes (%2F) is still this prefix (deny by default).
        path = request.path
        if path.startswith(API_PREFIX) or path == API_ROOT:
            # Each raises 401 and writes the access_denied record.
            return require_user(request) if path in ANY_USER_PATHS else _super_admin(request)
        if path == PANEL_ROOT or path.startswith(PANEL_ROOT + "/"):
            return _signed_in_page(request)
        return None

    return authenticate


async def _super_admin(request: web.Request) -> None:
    request[VERIFIED_SUPER_ADMIN] = await require_super_admin(request)


def verified_super_admin(request: web.Request) -> User | None:
    """The super_admin this request's access rule verified, or ``None`` (then check, never assume).

    Lets a handler under ``/api/admin/`` skip repeating the session and role
    look-up the rule just made (the job list is the gateway's hottest path):
    ``verified_super_admin(request) or await require_super_admin(request)``.
    """
    return request.get(VERIFIED_SUPER_ADMIN)


async def _signed_in_page(request: web.Request) -> None:
    if await current_user(request) is None:
        raise web.HTTPSeeOther(LOGIN_PATH)
