"""Who may call the engine: bearer tokens, scopes and the acting user.

Every route but the public ones (``/healthz``) needs ``Authorization:
Bearer <token>``; the rule of each route is in its row of
:data:`engine_hub.http.routes.ROUTES`, checked by :func:`authorize`. Two
kinds of token exist:

- the **admin** token (name ``admin``, scope ``admin``): everything. It may
  name the human it acts for in ``X-Engine-Actor`` (the gateway does), which
  is then recorded as ``createdBy`` / ``runBy``;
- **client** tokens from the catalog file (scope ``submit``, stored as
  SHA-256): create and read jobs only, on the routes whose rule is
  ``submit``. Everything else (run, cancel, metrics, audit, unknown paths)
  is 403 ``forbidden``.

The admin token comes from the settings, else ``--token-file`` (a file
provided to the engine, e.g. a systemd credential), else ``ENGINE_HUB_TOKEN``,
else the token file ``<data_dir>/token``, generated once (mode 0600) and reused.
Secrets are compared in constant time and never logged.
"""

from __future__ import annotations

import contextlib
import enum
import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs
import structlog
from aiohttp import web

from engine_hub.errors import ConfigError, Forbidden, InvalidField, Unauthorized
from engine_hub.jobs.catalog import ADMIN_NAME, Catalog
from engine_hub.settings import ACTOR_HEADER, TOKEN_ENV, TOKEN_FILE, Settings
from shared.routes import Access
from shared.tokens import HEADER_SAFE_RULE, TokenFileError, is_header_safe, read_token_file

log = structlog.get_logger("engine.auth")

MIN_TOKEN_CHARS: Final = 16
MAX_TOKEN_CHARS: Final = 512
MAX_ACTOR_CHARS: Final = 128


class Scope(enum.StrEnum):
    """What a token may do."""

    ADMIN = "admin"
    SUBMIT = "submit"


@attrs.frozen(kw_only=True)
class Principal:
    """The authenticated caller: the token's name and scope, and the actor recorded in the journal."""

    name: str
    scope: Scope
    actor: str


#: The caller of the current request, set by :func:`authorize`.
PRINCIPAL: Final = web.RequestKey("principal", Principal)


def _token_problem(token: str) -> str | None:
    """Return why ``token`` cannot be an admin token, or ``None`` when it can."""
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
        return f"must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters long"
    if not is_header_safe(token):
        return HEADER_SAFE_RULE
    return None


def _env_token(environ: Mapping[str, str]) -> str | None:
    value = environ.get(TOKEN_ENV, "")
    return value or None


def has_explicit_token(settings: Settings, environ: Mapping[str, str]) -> bool:
    """Whether an admin token was configured on purpose (settings or ``ENGINE_HUB_TOKEN``)."""
    return settings.token is not None or settings.token_file is not None or _env_token(environ) is not None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts local connections (``localhost`` or a loopback IP)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_allowed(settings: Settings, environ: Mapping[str, str]) -> None:
    """Refuse (``ConfigError``) to listen beyond loopback unless a token was configured on purpose.

    A token generated into a file nobody has read is no protection for a
    network-facing engine: the operator must choose one.
    """
    if not is_loopback(settings.host) and not has_explicit_token(settings, environ):
        raise ConfigError(
            f"refusing to listen on non-loopback address {settings.host!r} without an explicitly "
            f"configured admin token: set {TOKEN_ENV} (or listen on 127.0.0.1)"
        )


def resolve_admin_token(settings: Settings, environ: Mapping[str, str]) -> tuple[str, str]:
    """Return the admin token and where it came from (for logs; never the token itself).

    Raises :class:`ConfigError` for a token that is too short, contains
    spaces or control characters, or a token file that cannot be used.
    """
    if settings.token is not None:
        return _checked(settings.token, "settings"), "settings"
    if settings.token_file is not None:
        return read_given_token_file(settings.token_file), str(settings.token_file)
    env = _env_token(environ)
    if env is not None:
        return _checked(env, TOKEN_ENV), TOKEN_ENV
    path = settings.data_dir / TOKEN_FILE
    return load_or_create_token_file(path), str(path)


def _checked(token: str, origin: str) -> str:
    problem = _token_problem(token)
    if problem is not None:
        raise ConfigError(f"the admin token from {origin} {problem}")
    return token


def read_given_token_file(path: Path) -> str:
    """Return the admin token in ``path`` (``--token-file``: a file provided to us, never created).

    Surrounding whitespace (the trailing newline) is ignored. Raises
    :class:`ConfigError` when the file is missing, unreadable, empty or
    holds a token that is too short or malformed.
    """
    token = _read_token_file(path)
    if token is None:
        raise ConfigError(f"the token file {path} does not exist")
    return token


def load_or_create_token_file(path: Path) -> str:
    """Return the token stored at ``path``, generating it first (mode 0600) if there is none.

    Creation is atomic: the token is written to a private temporary file and
    hard-linked into place, so a concurrent reader never sees a partial token
    and two engines starting at once agree on one token.
    """
    token = _read_token_file(path)
    if token is not None:
        return token
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process won the race: use its token
                os.link(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(f"cannot create the token file {path}: {exc.strerror or exc}") from None
    token = _read_token_file(path)
    if token is None:
        raise ConfigError(f"the token file {path} vanished while it was being created")
    log.info("admin_token_generated", path=str(path))
    return token


def _read_token_file(path: Path) -> str | None:
    """Return the admin token in ``path`` (``None`` when there is none), by the shared reader's rules."""
    try:
        token = read_token_file(path, too_open=lambda mode: _warn_too_open(path, mode))
    except TokenFileError as exc:
        raise ConfigError(str(exc)) from None
    if token is None:
        return None
    problem = _token_problem(token)
    if problem is not None:
        raise ConfigError(f"the token in {path} {problem}")
    return token


def _warn_too_open(path: Path, mode: int) -> None:
    log.warning("token_file_too_open", path=str(path), mode=oct(mode), hint="chmod 600 the file")


class Authenticator:
    """Turns request headers into a :class:`Principal`; configured once the engine starts."""

    def __init__(self) -> None:
        self._admin: bytes | None = None
        self._catalog: Catalog | None = None
        self._admin_principal = Principal(name=ADMIN_NAME, scope=Scope.ADMIN, actor=ADMIN_NAME)

    def configure(self, *, admin_token: str, catalog: Catalog) -> None:
        """Set the admin token and the catalog holding the client tokens."""
        self._admin = admin_token.encode("ascii")
        self._catalog = catalog

    def authenticate(self, authorization: str | None, actor: str | None) -> Principal:
        """Return the caller, or raise 401 (no/bad token), 403 (actor header on a client token), 400 (bad actor)."""
        if self._admin is None or self._catalog is None:
            raise Unauthorized("the engine is not ready to authenticate requests")
        if not authorization:
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        if not (token.isascii() and token.isprintable()) or len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("invalid token")
        # Constant-time comparisons: timing reveals nothing about a token's content. (Whether a
        # presented token was the admin's is no secret to whoever presents it.)
        if hmac.compare_digest(token.encode("ascii"), self._admin):
            if actor is None:
                return self._admin_principal
            return Principal(name=ADMIN_NAME, scope=Scope.ADMIN, actor=_check_actor(actor))
        client = self._catalog.find_client(token)
        if client is not None:
            if actor is not None:
                raise Forbidden(f"{ACTOR_HEADER} is only accepted with the admin token")
            return Principal(name=client.name, scope=Scope.SUBMIT, actor=client.name)
        raise Unauthorized("invalid token")


def _check_actor(value: str) -> str:
    actor = value.strip()
    if not actor or len(actor) > MAX_ACTOR_CHARS or not actor.isprintable():
        raise InvalidField(f"{ACTOR_HEADER} must be 1 to {MAX_ACTOR_CHARS} printable characters")
    return actor


#: The app's authenticator (set by ``create_app``, configured when the engine starts).
AUTHENTICATOR: Final = web.AppKey("authenticator", Authenticator)


#: The access rules the engine can check; a route with any other rule refuses to start the app.
ENGINE_RULES: Final = frozenset({Access.PUBLIC, Access.ADMIN_TOKEN, Access.SUBMIT})


def authorize(request: web.Request, access: Access | None) -> None:
    """The engine's ``authorize`` hook (``request_wrapper``): check ``access``, the rule of the matched route.

    :attr:`Access.PUBLIC` needs nothing. :attr:`Access.SUBMIT` takes the
    admin token or a catalog client token of scope ``submit``. Everything
    else needs the admin token: :attr:`Access.ADMIN_TOKEN`, and ``None``,
    the catch-all route of unknown paths and methods, so that only an admin
    learns whether a path exists (deny by default). Raises 401, 403 or 400
    (see :meth:`Authenticator.authenticate`) and stores the caller under
    :data:`PRINCIPAL`.
    """
    if access is Access.PUBLIC:
        return
    headers = request.headers
    try:
        caller = request.app[AUTHENTICATOR].authenticate(headers.get("Authorization"), headers.get(ACTOR_HEADER))
    except Unauthorized as exc:
        log.warning("auth_failed", method=request.method, path=request.path, source=request.remote, reason=exc.message)
        raise
    if caller.scope is not Scope.ADMIN and access is not Access.SUBMIT:
        raise Forbidden(f"token {caller.name!r} has scope {caller.scope!s}, which may only create and read jobs")
    request[PRINCIPAL] = caller


def principal(request: web.Request) -> Principal:
    """Return the authenticated caller of ``request``."""
    return request[PRINCIPAL]


def source(request: web.Request) -> str:
    """Return the client address recorded in journal records (the TCP peer; headers are not trusted)."""
    return request.remote or "unknown"
