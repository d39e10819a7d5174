"""The gateway's one HTTP client to the engine.

One ``aiohttp.ClientSession`` per app (opened and closed in ``cleanup_ctx``)
with explicit timeouts, no cookie jar, and the engine's admin token.
Outgoing headers are built from scratch from an allow-list; nothing of the
incoming request (``Authorization``, ``Cookie``, ``X-Engine-Actor``,
``X-Forwarded-*``…) is ever copied. The acting user is the *session* user,
sent as ``X-Engine-Actor``.

Failures become gateway errors: unreachable (refused, reset, connect
timeout) → :class:`EngineUnavailable`; no answer within the total timeout →
:class:`EngineTimeout`. With several engine URLs, :class:`EngineClient`
fails over between them (its docstring has the rule) and raises only when
no engine answered.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import unquote_plus, urlencode

import aiohttp
import attrs
import structlog
from aiohttp import web
from yarl import URL

from admin_gateway.errors import EngineFailed, EngineTimeout, EngineUnavailable, GatewayError
from admin_gateway.settings import SETTINGS, SettingsError, engine_base_url
from shared.contract import ErrorCode
from shared.web import REQUEST_ID

#: The most the gateway reads of one engine answer (a 1000-job page is well below this).
MAX_ENGINE_BODY = 32 * 1024 * 1024

log = structlog.get_logger("engine_client")


_NEXT_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')
_BEFORE = re.compile(r"[?&]before=([^&#]*)")
#: Query values made only of these need no percent-encoding (the common case: numbers, ids).
_SAFE_VALUE = re.compile(r"[A-Za-z0-9._~-]*")


@attrs.frozen(kw_only=True)
class EngineResponse:
    """What the engine answered: status, raw body, ``Content-Type``, ``Link`` (paging) and ``Retry-After`` headers."""

    status: int
    body: bytes = attrs.field(repr=False)
    content_type: str
    link: str | None = None
    retry_after: str | None = None

    @property
    def next_url(self) -> URL | None:
        """The (relative) URL of the next page from ``Link: <…>; rel="next"``, if any."""
        match = _NEXT_LINK.search(self.link) if self.link else None
        return URL(match.group(1)) if match else None

    @property
    def next_cursor(self) -> str | None:
        """The ``before`` job id of the next page, if any."""
        match = _NEXT_LINK.search(self.link) if self.link else None
        if match is None:
            return None
        before = _BEFORE.search(match.group(1))
        if before is None:
            return None
        value = before.group(1)
        return unquote_plus(value) if "%" in value or "+" in value else value

    @property
    def is_json(self) -> bool:
        """Whether the engine said the body is JSON."""
        return self.content_type.startswith("application/json")


def _encode_query(query: Mapping[str, str]) -> str:
    """``urlencode``, skipping the quoting work for values that need none."""
    if all(_SAFE_VALUE.fullmatch(v) for v in query.values()):
        return "&".join(f"{k}={v}" for k, v in query.items())
    return urlencode(query)


async def _read_body(resp: aiohttp.ClientResponse) -> bytes:
    """Read the whole body, refusing more than :data:`MAX_ENGINE_BODY` bytes."""
    if resp.content_length is not None:
        if resp.content_length > MAX_ENGINE_BODY:
            raise EngineFailed("the engine's answer is too large")
        return await resp.read()
    chunks, size = [], 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > MAX_ENGINE_BODY:
            raise EngineFailed("the engine's answer is too large")
        chunks.append(chunk)
    return b"".join(chunks)


def resolve_token(explicit: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Return the engine admin token: the explicit one, else ``ENGINE_HUB_TOKEN``, else ``None``.

    ``ENGINE_HUB_TOKEN`` is looked up in ``environ``, the real environment when it is ``None``.
    """
    env = os.environ if environ is None else environ
    token = explicit if explicit is not None else env.get("ENGINE_HUB_TOKEN")
    token = token.strip() if token else None
    return token or None


#: Methods that change nothing at the engine: after a timeout they are safely sent to the next engine.
_IDEMPOTENT = frozenset({"GET", "HEAD"})


def _node_not_ready(response: EngineResponse) -> bool:
    """Whether the engine said 503 ``node_not_ready``: it may not take work now, and changed nothing."""
    if response.status != 503:
        return False
    try:
        body = json.loads(response.body)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("code") == ErrorCode.NODE_NOT_READY


@attrs.frozen
class _Failure:
    """One attempt that got no HTTP answer: the error to raise if it is the last, and whether it was sent.

    ``sent`` is False when no connection was made (the engine never saw the request), so any
    method may go to the next engine; True when the engine may have acted on it.
    """

    error: GatewayError
    reason: str
    sent: bool


class EngineClient:
    """Talks to the engine(s) for the gateway; one instance per app.

    With several engine URLs the client keeps a *current* one (the last that
    answered) and sends every request there first. A request that could not
    connect goes to the next URL at once, whatever its method: no engine saw
    it. A GET or HEAD that timed out (or whose connection was dropped) goes
    to the next URL too (and when another URL is left, a GET or HEAD waits only
    ``failover_timeout`` for a hung engine before it does); any other method
    does not, since the engine may have acted on it: it fails as with one engine, and the next request starts at
    the next URL. A 503 ``node_not_ready`` (a node of a PostgreSQL store
    that is registering again, which changed nothing) goes to the next URL
    too, whatever the method. Each URL is tried at most once per request, so
    a request lasts at most one total timeout per URL. Any other HTTP answer,
    5xx included, is returned as it is (the last URL's ``node_not_ready``
    too). Each move of the current URL is logged once as ``engine_failover``.
    """

    def __init__(
        self,
        base_urls: tuple[str, ...],
        *,
        token: str | None,
        connect_timeout: float,
        total_timeout: float,
        failover_timeout: float | None = None,
    ) -> None:
        if not base_urls:
            raise SettingsError("no engine URL")
        self._bases = tuple(engine_base_url(url) for url in base_urls)
        # For logs: never a password that someone put in a URL.
        self._shown = tuple(str(URL(base).with_user(None)) for base in self._bases)
        self._current = 0
        self._fixed_headers = {"Accept": "application/json", "User-Agent": "admin-gateway"}
        if token:
            self._fixed_headers["Authorization"] = f"Bearer {token}"
        # ceil_threshold above every timeout: aiohttp would round one of 5 s or more up to a whole second.
        ceil = max(total_timeout, connect_timeout) + 1
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout, ceil_threshold=ceil)
        # A read that another URL could answer waits less for a hung engine (one that accepts and never answers).
        self._failover_timeout = aiohttp.ClientTimeout(
            total=min(failover_timeout or total_timeout, total_timeout),
            sock_connect=connect_timeout,
            ceil_threshold=ceil,
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the client session (call from within the running loop)."""
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )

    async def close(self) -> None:
        """Close the client session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, actor: str, request_id: str | None, has_body: bool) -> dict[str, str]:
        # Built from scratch (a copy of our own constant part): nothing the browser sent is copied.
        headers = self._fixed_headers.copy()
        headers["X-Engine-Actor"] = actor
        if request_id:
            headers["X-Request-Id"] = request_id
        if has_body:
            headers["Content-Type"] = "application/json"
        return headers

    async def call(
        self,
        method: str,
        path: str,
        *,
        actor: str,
        query: Mapping[str, str] | None = None,
        raw_query: str | None = None,
        json_body: Any = None,
        request_id: str | None = None,
        total: float | None = None,
    ) -> EngineResponse:
        """Send one request to the engine and return its answer, whatever its status.

        ``path`` is relative to the engine URL (segments already quoted);
        ``query`` is encoded, ``raw_query`` (already encoded, nothing to
        quote) is appended as it is. ``total`` replaces the total timeout for
        a request the engine is known to take longer over (a plan). Raises :class:`EngineUnavailable` or
        :class:`EngineTimeout` when no engine answered (see the class for
        which engines are tried).
        """
        assert self._session is not None, "EngineClient.start() was not called"
        # A string URL, encoded once here: cheaper than yarl joins on the hottest path.
        target = path.lstrip("/")
        if query:
            target += "?" + _encode_query(query)
        elif raw_query:
            target += "?" + raw_query
        headers = self._headers(actor, request_id, json_body is not None)
        count = len(self._bases)
        first = self._current
        for attempt in range(count):
            index = (first + attempt) % count
            last = attempt == count - 1
            quick = not last and method in _IDEMPOTENT
            outcome = await self._send(index, method, target, headers, json_body, path, quick=quick, total=total)
            if isinstance(outcome, EngineResponse):
                if last or not _node_not_ready(outcome):
                    self._current = index
                    return outcome
                self._move_past(index, ErrorCode.NODE_NOT_READY)
                continue
            self._move_past(index, outcome.reason)
            if last or (outcome.sent and method not in _IDEMPOTENT):
                raise outcome.error
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    @contextlib.asynccontextmanager
    async def stream(
        self, target: str, *, actor: str, idle: float, accept: str = "text/event-stream"
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a GET read as it comes (an event stream, a log download) at the first engine that takes the connection.

        The current engine is tried first, then the others in turn; the one
        that connected becomes current. ``target`` is the encoded path and
        query. The answer is yielded whatever its status; reading it fails
        with ``TimeoutError`` once ``idle`` seconds pass without a byte.
        Raises :class:`EngineUnavailable` when no engine took the connection.
        """
        assert self._session is not None, "EngineClient.start() was not called"
        headers = self._headers(actor, None, False)
        headers["Accept"] = accept
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout.sock_connect, sock_read=idle, ceil_threshold=idle + 1
        )
        first = self._current
        for attempt in range(len(self._bases)):
            index = (first + attempt) % len(self._bases)
            try:
                resp = await self._session.get(
                    URL(self._bases[index] + target.lstrip("/"), encoded=True),
                    headers=headers,
                    allow_redirects=False,
                    timeout=timeout,
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._move_past(index, type(exc).__name__)
                continue
            self._current = index
            try:
                yield resp
            finally:
                resp.close()  # the stream never ends by itself: its connection is not reused
            return
        raise EngineUnavailable("the engine is unreachable")

    def _move_past(self, index: int, reason: str) -> None:
        """Make the URL after ``index`` current, unless another request already moved on."""
        if self._current != index or len(self._bases) == 1:
            return
        self._current = (index + 1) % len(self._bases)
        log.warning("engine_failover", from_url=self._shown[index], to_url=self._shown[self._current], reason=reason)

    async def _send(
        self,
        index: int,
        method: str,
        target: str,
        headers: dict[str, str],
        json_body: Any,
        path: str,
        *,
        quick: bool = False,
        total: float | None = None,
    ) -> EngineResponse | _Failure:
        """One attempt at engine ``index``: its answer, or why there was none (``quick``: the failover timeout;
        ``total``: a total timeout of its own)."""
        assert self._session is not None
        engine = self._shown[index]
        timeout = self._failover_timeout if quick else self._timeout
        if total is not None and not quick:
            timeout = aiohttp.ClientTimeout(total=total, sock_connect=timeout.sock_connect, ceil_threshold=total + 1)
        try:
            async with self._session.request(
                method,
                URL(self._bases[index] + target, encoded=True),
                headers=headers,
                json=json_body,
                allow_redirects=False,
                timeout=timeout,
            ) as resp:
                body = await _read_body(resp)
                resp_headers = resp.headers
                return EngineResponse(
                    status=resp.status,
                    body=body,
                    content_type=resp_headers.get("Content-Type", ""),
                    link=resp_headers.get("Link"),
                    retry_after=resp_headers.get("Retry-After"),
                )
        except aiohttp.ConnectionTimeoutError:
            # Not even a connection within the connect timeout: as unreachable as a refusal.
            log.warning("engine_unreachable", method=method, path=path, engine=engine, error="connect timeout")
            return _Failure(EngineUnavailable("the engine is unreachable (connect timeout)"), "connect timeout", False)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionResetError) as exc:
            log.warning("engine_disconnected", method=method, path=path, engine=engine, error=type(exc).__name__)
            message = "the engine closed the connection before answering; check the job's status before retrying"
            return _Failure(EngineUnavailable(message), "disconnected", True)
        except TimeoutError:
            log.warning("engine_timeout", method=method, path=path, engine=engine)
            message = "the engine did not answer in time; check the job's status before retrying"
            return _Failure(EngineTimeout(message), "timeout", True)
        except aiohttp.ClientError as exc:
            log.warning("engine_unreachable", method=method, path=path, engine=engine, error=type(exc).__name__)
            # A connector error (refused, unreachable, DNS) means nothing was sent; anything else may have been.
            sent = not isinstance(exc, aiohttp.ClientConnectorError)
            return _Failure(EngineUnavailable("the engine is unreachable"), type(exc).__name__, sent)


#: The app's engine client.
ENGINE_CLIENT = web.AppKey("engine_client", EngineClient)


def request_id_of(request: web.Request) -> str | None:
    """Return the request id to propagate to the engine."""
    return request.get(REQUEST_ID)


async def engine_client_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the app's :class:`EngineClient`, close it at shutdown."""
    settings = app[SETTINGS]
    client = EngineClient(
        settings.engine_urls,
        token=resolve_token(settings.engine_token),
        connect_timeout=settings.connect_timeout,
        total_timeout=settings.total_timeout,
        failover_timeout=settings.failover_timeout,
    )
    await client.start()
    app[ENGINE_CLIENT] = client
    try:
        yield
    finally:
        await client.close()
