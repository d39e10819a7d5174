"""The gateway's access check: each route's rule from the route table, enforced before its handler runs.

:func:`authorize_hook` is the ``authorize`` hook of the gateway's
``request_wrapper``: it gets the :class:`~shared.routes.Access` rule of the
route that matched (:mod:`admin_gateway.http.routes`), so no handler checks
on its own and no route can forget to. The rules it knows:

- ``PUBLIC``: nothing is checked (and no session is looked up);
- ``SESSION``: a signed-in user, whatever the role;
- ``SUPER_ADMIN``: a signed-in user with role ``super_admin``.

How a refusal looks depends on what the path serves. The JSON API (every
path outside the panel) answers 401 ``unauthorized`` without a session and
401 ``forbidden`` for another role, each with its ``access_denied`` audit
record (:mod:`admin_gateway.auth.guards`). The panel's pages (``/admin``
and below) redirect a signed-out browser to ``/login?next=<the page>``
(a GET's path and query, so the sign-in lands there) and show another
role the "no access" page (403, recorded).

A user signed in with a generated password (``must_change_password``) gets
nothing but the Change password page (:data:`PASSWORD_PATH`) until they
change it: every other page redirects there, and the API answers 403
``password_change_required`` (recorded as ``access_denied``).

Unknown paths and methods reach the catch-all route, whose rule is
``None``: they get the rule of their prefix, so that an unknown path or a
malformed id tells a signed-out client nothing more than a known one does:
``/api/admin`` and below need a super_admin (the table's ``SESSION`` paths
there, any signed-in user), ``/admin`` and below a signed-in user.

Any other rule (the engine's ``ADMIN_TOKEN``, ``SUBMIT``) is not the
gateway's: an app whose table has one refuses to start (:class:`shared.web.ApiRoutes`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import Final

from aiohttp import web
from yarl import URL

from admin_gateway.auth.guards import (
    User,
    current_user,
    record_role_refusal,
    require_password_changed,
    require_super_admin,
    require_user,
)
from admin_gateway.http.templates import render_template
from shared.routes import Access, Route
from shared.web import Authorize

#: The JSON API that needs a session: ``/api/admin`` and everything under it.
API_ROOT: Final = "/api/admin"
API_PREFIX: Final = API_ROOT + "/"
#: The panel's pages: ``/admin`` and everything under it.
PANEL_ROOT: Final = "/admin"
PANEL_PREFIX: Final = PANEL_ROOT + "/"
LOGIN_PATH: Final = "/login"
#: The Change password page: the only page (and nothing of the API) open to a user who must change theirs.
PASSWORD_PATH: Final = "/admin/password"
#: The rules the gateway can check; a route with any other refuses to start the app.
GATEWAY_RULES: Final = frozenset({Access.PUBLIC, Access.SESSION, Access.SUPER_ADMIN})
#: The user the route's rule verified for this request (see :func:`request_user`).
REQUEST_USER: Final = web.RequestKey("request_user", User)


def authorize_hook(table: Iterable[Route]) -> Authorize:
    """Build the gateway's ``authorize`` hook for the routes of ``table``.

    The hook returns ``None`` (nothing to await) for a public route, so those
    pay for no session look-up; otherwise the check itself, which raises to
    refuse, or answers in the handler's place with the "no access" page.
    """
    # The catch-all's rule under /api/admin: SESSION for the paths the table opens to any user.
    any_user_paths = frozenset(
        route.path for route in table if route.access is Access.SESSION and route.path.startswith(API_PREFIX)
    )

    def authorize(request: web.Request, access: Access | None) -> Awaitable[web.StreamResponse | None] | None:
        # The decoded path: a prefix spelled with escapes (%2F) is still this prefix (deny by default).
        path = request.path
        page = path == PANEL_ROOT or path.startswith(PANEL_PREFIX)
        if access is None:
            if page:
                access = Access.SESSION
            elif path == API_ROOT or path.startswith(API_PREFIX):
                access = Access.SESSION if path in any_user_paths else Access.SUPER_ADMIN
            else:
                return None
        if access is Access.PUBLIC:
            return None
        if page:
            return _page_access(request, super_admin=access is Access.SUPER_ADMIN)
        return _api_access(request, super_admin=access is Access.SUPER_ADMIN)

    return authorize


async def _api_access(request: web.Request, *, super_admin: bool) -> None:
    # Each raises 401 and writes the access_denied record.
    user = await require_user(request)
    await require_password_changed(request, user)
    request[REQUEST_USER] = await require_super_admin(request) if super_admin else user


def login_redirect(request: web.Request) -> str:
    """Where a signed-out visitor of a page goes: ``/login``, with ``next=`` naming the page for a GET."""
    if request.method not in ("GET", "HEAD"):
        return LOGIN_PATH
    return str(URL(LOGIN_PATH).with_query(next=request.rel_url.path_qs))


async def _page_access(request: web.Request, *, super_admin: bool) -> web.StreamResponse | None:
    user = await current_user(request)
    if user is None:
        raise web.HTTPSeeOther(login_redirect(request))
    if user.must_change_password and request.path != PASSWORD_PATH:
        raise web.HTTPSeeOther(PASSWORD_PATH)
    if super_admin and not user.is_super_admin:
        await record_role_refusal(request, user, status=403)
        return await render_template(request, "no_access.html", {}, user=user, status=403)
    request[REQUEST_USER] = user
    return None


def request_user(request: web.Request) -> User:
    """The signed-in user that the route's ``SESSION`` or ``SUPER_ADMIN`` rule verified for this request.

    Handlers of such routes read their user here instead of checking again.
    Raises ``LookupError`` on a route whose rule verified nobody (a public
    one): that is a bug in the route table, answered as a 500.
    """
    if REQUEST_USER not in request:
        raise LookupError(f"{request.method} {request.path}: its access rule verified no user")
    return request[REQUEST_USER]
