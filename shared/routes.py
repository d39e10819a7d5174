"""Route tables: each process declares every route once, with who may call it and its OpenAPI operation.

A :class:`Route` is one row: the OpenAPI :class:`~shared.openapi.Operation`
(which carries the method, the path template and the operation id), the
handler, and the :class:`Access` rule. From a process's one table derive:

- registration and its order (:meth:`shared.web.ApiRoutes.add_table`);
- the access check, made centrally by the process's request wrapper from the
  rule of the route that matched (no handler checks on its own);
- the process's OpenAPI document (:func:`shared.openapi.build_document`);
- the route list the access-matrix tests walk.

A route without a rule cannot be declared (the field is required and
validated), and :class:`~shared.web.ApiRoutes` refuses to start an app with a
route that did not come from a table.
"""

from __future__ import annotations

import enum

import attrs

from shared.openapi import Operation
from shared.web import Handler


class Access(enum.StrEnum):
    """Who may call a route. Each process accepts only the rules it knows how to check."""

    #: Anyone, with no credentials (health, the login form, static assets).
    PUBLIC = "public"
    #: Gateway: any signed-in user, whatever the role.
    SESSION = "session"
    #: Gateway: a signed-in user with role ``super_admin``.
    SUPER_ADMIN = "super_admin"
    #: Engine: the admin token only.
    ADMIN_TOKEN = "admin_token"
    #: Engine: the admin token, or a catalog client token with scope ``submit``.
    SUBMIT = "submit"


@attrs.frozen(kw_only=True)
class Route:
    """One route of a process: its OpenAPI operation (method, path, id, docs), handler and access rule.

    ``name`` is the aiohttp resource name (for ``url_for``); routes sharing a
    path may share it. ``pattern`` is the aiohttp path template when it must
    differ from the documented one (a regex such as ``/static/{path:.+}``).
    The operation's ``security`` must agree with the rule: ``()`` (no
    credentials) exactly when ``access`` is :attr:`Access.PUBLIC`.
    """

    operation: Operation
    handler: Handler
    access: Access = attrs.field(validator=attrs.validators.instance_of(Access))
    name: str | None = None
    pattern: str | None = None

    def __attrs_post_init__(self) -> None:
        public = self.access is Access.PUBLIC
        if public != (self.operation.security == ()):
            raise ValueError(
                f"{self.method} {self.path}: access {self.access} disagrees with its OpenAPI security "
                f"{self.operation.security!r} (public routes declare security=(), others must not)"
            )

    @property
    def method(self) -> str:
        """The HTTP method (``GET`` routes answer ``HEAD`` too)."""
        return self.operation.method.upper()

    @property
    def path(self) -> str:
        """The path template, as the OpenAPI document spells it."""
        return self.operation.path

    @property
    def router_path(self) -> str:
        """The path template the router matches (``pattern`` if set, else :attr:`path`)."""
        return self.pattern or self.operation.path


RouteTable = tuple[Route, ...]


__all__ = ["Access", "Handler", "Route", "RouteTable"]
