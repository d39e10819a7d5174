"""HTTP plumbing shared by both processes: errors, the request wrapper and routes, JSON bodies.

Each process derives its own exception base class from :class:`ApiError`,
and :func:`request_wrapper` (installed by :func:`setup_api_routes` around
every handler) is the one place that turns exceptions into responses and
writes the per-request summary line.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

from shared.contract import MAX_BODY, MAX_JSON_DEPTH, ErrorCode, error_body
from shared.log import FLUSH_INTERVAL, flush_logs, log_request

if TYPE_CHECKING:  # shared.routes imports shared.openapi, which imports this module
    from shared.routes import Access, Route

log = structlog.get_logger("http")

#: Per-request id, set by :func:`request_wrapper`.
REQUEST_ID = web.RequestKey("request_id", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: A process's access check (:func:`request_wrapper`'s ``authorize``): the request and its route's rule
#: in; ``None``, or an awaitable of ``None`` or of the response that answers in the handler's place.
Authorize = Callable[[web.Request, "Access | None"], Awaitable[web.StreamResponse | None] | None]


class Wrap(Protocol):
    """A process's request wrapper (:func:`request_wrapper`): a handler in, the guarded handler out."""

    def __call__(self, handler: Handler, access: Access | None = None, /) -> Handler: ...


class ApiError(Exception):
    """An error with an HTTP status and an error code, rendered as ``{"error", "code"}``."""

    status: int = 400
    code: ErrorCode = ErrorCode.BAD_REQUEST

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: ErrorCode | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = headers or {}


def json_error(status: int, message: str, code: ErrorCode | str, headers: dict[str, str] | None = None) -> web.Response:
    """Return a JSON error response in the shared shape."""
    return web.json_response(error_body(message, code), status=status, headers=headers)


_HTTP_CODES: Final[dict[int, ErrorCode]] = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}


def error_code_for(status: int) -> ErrorCode:
    """The error code of a 4xx answer that only has an HTTP status (``bad_request`` for one without its own)."""
    return _HTTP_CODES.get(status, ErrorCode.BAD_REQUEST)


def _http_exception_response(exc: web.HTTPException) -> web.Response:
    """Answer an aiohttp HTTP exception: a redirect as it is, an error as a JSON error."""
    if 300 <= exc.status < 400:
        # A redirect: answer it as a plain response (aiohttp deprecates returning the
        # exception object), keeping its Location and any cookie set on it (sessions).
        response = web.Response(status=exc.status, headers=exc.headers)
        for morsel in exc.cookies.values():
            response.cookies[morsel.key] = morsel
        return response
    code = error_code_for(exc.status)
    message = exc.reason if exc.status != 404 else "route not found"
    headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return json_error(exc.status, message, code, headers)


def request_wrapper(
    base_error: type[ApiError],
    *,
    authorize: Authorize | None = None,
    on_done: Callable[[web.Request, int, float], None] | None = None,
    decorate: Callable[[web.Request, web.StreamResponse], None] | None = None,
    finish: Callable[[web.Request, web.StreamResponse], Awaitable[None] | None] | None = None,
) -> Wrap:
    """Build what every request of a process goes through, as a decorator of handlers.

    The wrapped handler assigns a request id, calls ``authorize(request,
    access)`` before the handler, with the :class:`~shared.routes.Access` rule
    of the route the handler serves (``None`` for the catch-all route that
    answers unknown paths): the process checks that rule centrally there. The
    hook may store the caller on the request; it refuses by raising
    ``base_error`` or an aiohttp HTTP exception, or answers in the handler's
    place by returning (through an awaitable) a response, such as the
    gateway's sign-in page for a signed-out browser; returning ``None`` or an
    awaitable of ``None`` lets the handler run. The wrapper turns
    ``base_error`` and aiohttp's HTTP exceptions into JSON errors, turns
    anything else into a logged 500 without leaking details, writes one
    ``request`` summary line, and calls ``on_done(request, status, seconds)``
    (metrics) and ``decorate(request, response)`` (headers) for every
    response, errors included.
    ``finish(request, response)`` runs after the handler answered, normally or
    with an aiohttp HTTP exception (a redirect, a 404), but not after
    ``base_error`` or a crash; it may return an awaitable, which is awaited
    (the gateway saves a changed session there).

    It is the process's one error middleware, applied to each handler when
    the route is added (:class:`ApiRoutes`) instead of through aiohttp's
    middleware chain: that chain costs two extra coroutine layers per request
    (the middleware's and aiohttp's ``_fix_request_current_app``), a
    measurable share of a cheap read (``docs/performance.md``).
    """

    # Request ids only correlate log lines (they are no secret): a random prefix per app instance
    # keeps them distinct across processes and restarts, a counter within it (os.urandom per
    # request was a system call).
    rid_prefix = os.urandom(5).hex()
    rid_counter = itertools.count()

    def wrap(handler: Handler, access: Access | None = None) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            start = time.perf_counter()
            rid = request.headers.get("X-Request-Id")
            if rid is None or not (len(rid) <= 64 and rid.isascii() and rid.replace("-", "").isalnum()):
                rid = f"{rid_prefix}{next(rid_counter):06x}"
            request[REQUEST_ID] = rid
            response: web.StreamResponse
            try:
                answer: web.StreamResponse | None = None
                if authorize is not None:
                    deciding = authorize(request, access)
                    if deciding is not None:
                        answer = await deciding
                try:
                    response = answer if answer is not None else await handler(request)
                except web.HTTPException as exc:
                    response = _http_exception_response(exc)
                if finish is not None:
                    pending = finish(request, response)
                    if pending is not None:
                        await pending
            except base_error as exc:
                response = json_error(exc.status, exc.message, exc.code, exc.headers)
            except web.HTTPException as exc:  # raised by authorize or finish
                response = _http_exception_response(exc)
            except (asyncio.CancelledError, ConnectionResetError):
                raise
            except Exception:
                log.exception("unhandled_error", request_id=rid, method=request.method, path=request.path)
                response = json_error(500, "internal error", ErrorCode.INTERNAL)
            # A streamed answer (already sent) set its own headers before it began.
            if not response.prepared:
                if decorate is not None:
                    decorate(request, response)
                response.headers["X-Request-Id"] = rid
            elapsed = time.perf_counter() - start
            if on_done is not None:
                on_done(request, response.status, elapsed)
            log_request(
                request_id=rid, method=request.method, path=request.path, status=response.status, ms=elapsed * 1000
            )
            return response

        return guarded

    return wrap


#: Name of the catch-all route :class:`ApiRoutes` adds last: it answers every request no other
#: route matches with the JSON 404 (or 405 with ``Allow``), through the same wrapper.
UNMATCHED_ROUTE: Final = "unmatched"


class ApiRoutes:
    """Adds a process's route table to its app, each handler behind the process's :func:`request_wrapper`.

    Every route of a process must come from its table (:meth:`add_table`),
    so that no request escapes the wrapper and each is checked by its
    route's access rule. The app refuses to start (``RuntimeError``, before
    any other start-up step opens a resource) if a route was added to the
    router some other way, or if a row's rule is not one of ``rules``, the
    rules the process's ``authorize`` hook checks (deny by default). Unknown
    paths and methods are answered by a catch-all route
    (:data:`UNMATCHED_ROUTE`) added when the app starts, after every other
    route, which raises aiohttp's 404 or 405 for the wrapper to render.
    """

    def __init__(self, app: web.Application, wrap: Wrap, rules: frozenset[Access]) -> None:
        self._app = app
        self._wrap = wrap
        self._rules = rules
        self._wrapped: set[Handler] = set()
        self._table: list[Route] = []
        # First of all start-up steps: cleanup_ctx (journals, sessions, clients) runs at start-up
        # too, and an app that must not serve should hold no resource when it says so.
        app.on_startup.insert(0, self._refuse_unguarded)
        app.on_startup.append(self._finish)

    def _guard(self, handler: Handler, access: Access | None) -> Handler:
        guarded = self._wrap(handler, access)
        self._wrapped.add(guarded)
        return guarded

    @property
    def table(self) -> tuple[Route, ...]:
        """Every route added with :meth:`add_table`, in registration order."""
        return tuple(self._table)

    def add_table(self, table: Iterable[Route]) -> None:
        """Register ``table``'s routes in order, each behind the wrapper with its access rule."""
        for route in table:
            if route.method == "GET":
                self._app.router.add_get(route.router_path, self._guard(route.handler, route.access), name=route.name)
            else:
                self._app.router.add_route(
                    route.method, route.router_path, self._guard(route.handler, route.access), name=route.name
                )
            self._table.append(route)

    def _refuse_bare_routes(self, app: web.Application) -> None:
        bare = sorted(
            f"{route.method} {route.resource.canonical if route.resource else '?'}"
            for route in app.router.routes()
            if route.handler not in self._wrapped
        )
        if bare:
            raise RuntimeError(f"routes added outside the route table (no access rule): {', '.join(bare)}")

    async def _refuse_unguarded(self, app: web.Application) -> None:
        # Start-up runs after create_app added everything and before the router freezes. A route
        # added straight to app.router would skip the access check, error mapping and the request
        # log, and a rule nobody checks would let everyone in: refuse to start rather than serve.
        self._refuse_bare_routes(app)
        unchecked = [
            f"{route.method} {route.path} ({route.access})" for route in self._table if route.access not in self._rules
        ]
        if unchecked:
            raise RuntimeError(f"routes with an access rule this process does not check: {', '.join(unchecked)}")

    async def _finish(self, app: web.Application) -> None:
        # Again, after the cleanup contexts ran: one of them may have added a route after the
        # first check.
        self._refuse_bare_routes(app)
        resource = _AnyTarget()
        app.router.register_resource(resource)
        resource.add_route("*", self._guard(_unmatched, None))
        _offer_pathless_targets(app.router, resource)


def _offer_pathless_targets(router: web.UrlDispatcher, catch_all: web.AbstractResource) -> None:
    """Make ``router`` resolve a request target without a path (``CONNECT host:port``) to ``catch_all``.

    aiohttp's router walks a target's path segments and offers an empty path
    to no resource at all: such a request would get aiohttp's plain-text 404,
    past the request wrapper (no JSON, no request id, no authentication). The
    router's ``resolve`` is replaced on this one instance, by a plain function
    that hands every other target to the original unchanged (no extra
    coroutine layer on the hot path). ``Application(router=...)`` is
    deprecated and subclassing ``Application`` is discouraged, which leaves
    this as the narrowest hook; ``tests/integration/engine/test_api_routes.py`` fails
    if aiohttp changes underneath it.
    """
    resolve = router.resolve

    async def resolve_pathless(request: web.Request) -> web.UrlMappingMatchInfo:
        match, _ = await catch_all.resolve(request)
        if match is None:  # the catch-all takes every method: cannot happen, but never serve nothing
            return await resolve(request)
        return match

    def resolve_any(request: web.Request) -> Coroutine[Any, Any, web.UrlMappingMatchInfo]:
        return resolve(request) if request.rel_url.path_safe else resolve_pathless(request)

    router.resolve = resolve_any  # type: ignore[method-assign]  # the per-instance hook described above


class _AnyTarget(web.DynamicResource):
    """The catch-all resource: it matches every request target, also the ones without a leading
    slash (``OPTIONS *``) that a ``/{path:.*}`` route would leave to aiohttp's plain-text 404. It
    relies on aiohttp's ``Resource._match`` hook (``tests/integration/engine/test_api_routes.py`` fails
    if that changes). A target with no path at all (``CONNECT host:port``) is never offered to
    any resource by aiohttp's router: :func:`_offer_pathless_targets` hands it to this one.
    """

    def __init__(self) -> None:
        super().__init__("/{path:.*}", name=UNMATCHED_ROUTE)

    def _match(self, path: str) -> dict[str, str] | None:
        return {"path": path}


async def _unmatched(request: web.Request) -> web.StreamResponse:
    """Raise 405 (with the methods the path does take) or 404: no route matched the request."""
    own = request.match_info.route.resource
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not own:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


#: The app's :class:`ApiRoutes`.
API_ROUTES: Final = web.AppKey("api_routes", ApiRoutes)


def setup_api_routes(app: web.Application, wrap: Wrap, *, rules: frozenset[Access]) -> ApiRoutes:
    """Make ``wrap`` (a :func:`request_wrapper`) the app's; return the :class:`ApiRoutes` to add its table with.

    ``rules`` are the access rules ``wrap``'s ``authorize`` hook checks; a row
    with any other rule refuses to start the app.
    """
    routes = ApiRoutes(app, wrap, rules)
    app[API_ROUTES] = routes
    return routes


#: A JSON string (removed whole, so brackets inside it do not count). Possessive: a string's
#: contents are never backtracked into. An unterminated string runs to the end of the text: without
#: that, each later quote would start a new scan to the end, quadratic in the body (a 64 KiB body
#: of escaped quotes held the event loop for seconds); such a body is no JSON, the decoder refuses it.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\Z)', re.DOTALL)
#: Drops every ASCII character but brackets (JSON outside strings is ASCII; anything else is kept,
#: and counts as no bracket).
_KEEP_BRACKETS = str.maketrans({chr(c): None for c in range(128) if chr(c) not in "[]{}"})


def json_nesting_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON ``text`` nests arrays and objects more than ``limit`` levels deep.

    No recursive descent: the brackets outside strings are counted in one
    loop that stops at the first level past ``limit``. Text that is not JSON
    may get either answer; the decoder refuses it afterwards anyway.
    """
    if text.count("[") + text.count("{") <= limit:  # cannot be deeper: no need to look
        return False
    brackets = _JSON_STRING.sub("", text).translate(_KEEP_BRACKETS)
    # Each replace removes at most one level of any nesting, so this bounds the depth from above
    # at C speed: a wide body (many small arrays) needs no loop over its brackets.
    rest = brackets.replace("[]", "").replace("{}", "")
    if rest.count("[") + rest.count("{") + 2 <= limit:
        return False
    depth = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


async def read_json_object(
    request: web.Request,
    *,
    allowed: Iterable[str] | None = None,
    required: bool = False,
    error: type[ApiError] = ApiError,
) -> dict[str, Any]:
    """Read a request body as a JSON object of at most ``MAX_BODY`` bytes and ``MAX_JSON_DEPTH`` levels.

    An empty body (no bytes at all) reads as ``{}`` unless ``required``; a body
    of only whitespace is not a JSON text and is refused like any other. Raises ``error`` (400
    ``invalid_json`` also for a body nested too deeply, 413
    ``payload_too_large``, 400 ``unknown_field``) for anything else, so that
    bad input never reaches a handler.
    """
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise error(f"body is larger than {MAX_BODY} bytes", status=413, code=ErrorCode.PAYLOAD_TOO_LARGE)
    # read(n) returns what has arrived so far: a body in several TCP segments needs several reads.
    raw = b""
    while len(raw) <= MAX_BODY and (chunk := await request.content.read(MAX_BODY + 1 - len(raw))):
        raw += chunk
    if len(raw) > MAX_BODY:
        raise error(f"body is larger than {MAX_BODY} bytes", status=413, code=ErrorCode.PAYLOAD_TOO_LARGE)
    if not raw:
        if required:
            raise error("a JSON object body is required", code=ErrorCode.INVALID_JSON)
        return {}
    try:
        # Decoded as json.loads decodes bytes (UTF-8, or UTF-16/32 by their first bytes), so that the
        # depth check reads the same characters as the decoder.
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
    except UnicodeDecodeError:
        raise error("body is not valid JSON", code=ErrorCode.INVALID_JSON) from None
    if json_nesting_exceeds(text):
        raise error(
            f"body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep", code=ErrorCode.INVALID_JSON
        )
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        # RecursionError: a backstop only; the depth check refuses such a body before decoding.
        raise error("body is not valid JSON", code=ErrorCode.INVALID_JSON) from None
    if not isinstance(body, dict):
        raise error("body must be a JSON object", code=ErrorCode.INVALID_JSON)
    if allowed is not None:
        unknown = sorted(set(body) - set(allowed))
        if unknown:
            raise error(
                f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
                code=ErrorCode.UNKNOWN_FIELD,
            )
    return body


#: What aiohttp raises while parsing a body that is not a readable form: a missing or bad
#: multipart boundary, an unknown charset, undecodable bytes, a bad part header or encoding.
_FORM_ERRORS = (ValueError, LookupError, RuntimeError, TypeError, HttpProcessingError)


async def read_form(request: web.Request, *, error: type[ApiError] = ApiError) -> MultiDictProxy[Any]:
    """Return the request's form fields (``request.post()``; empty for a body of another type).

    A body that claims to be a form but cannot be parsed raises ``error``
    (400 ``bad_request``) instead of escaping as a 500; an oversized one is
    aiohttp's 413 as usual.
    """
    try:
        return await request.post()
    except _FORM_ERRORS:
        raise error(
            "the body is not a readable form (check its Content-Type and multipart boundary)",
            code=ErrorCode.BAD_REQUEST,
        ) from None


#: A number as a client may spell it: ASCII digits only. ``int()`` (and ``\d``) also take other
#: scripts' digits (``٥``, full-width ``５``), ``_`` separators, a sign and surrounding blanks. Twenty
#: digits hold any 64-bit value; longer is out of every range anyway.
_DECIMAL = re.compile(r"[0-9]{1,20}")


def parse_decimal(text: str) -> int | None:
    """Return the non-negative integer ``text`` spells in ASCII digits (at most 20), else ``None``.

    The one parser of numbers from clients (query values, form fields): a
    value is a number only as ASCII digits, so that every layer reading it
    (a proxy, a log search, the other process) agrees on what it says.
    """
    return int(text) if _DECIMAL.fullmatch(text) else None


def reject_unknown_query(request: web.Request, allowed: Iterable[str], *, error: type[ApiError] = ApiError) -> None:
    """Raise 400 ``unknown_field`` for a query parameter the route does not take (a typo must not widen a filter)."""
    allowed = frozenset(allowed)
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise error(
            f"unknown query parameter(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed)) or 'none'}",
            code=ErrorCode.UNKNOWN_FIELD,
        )


def parse_int_query(
    request: web.Request, name: str, *, default: int, low: int, high: int, error: type[ApiError] = ApiError
) -> int:
    """Read an integer query parameter within ``[low, high]`` (:func:`parse_decimal`); anything else is a 400."""
    raw = request.query.get(name)
    if raw is None:
        return default
    value = parse_decimal(raw)
    if value is None or not low <= value <= high:
        raise error(f"{name} must be an integer between {low} and {high} (ASCII digits)", code=ErrorCode.INVALID_FIELD)
    return value


async def log_flusher(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: flush buffered log lines periodically while the app runs."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            flush_logs()

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    flush_logs()
