"""The gateway's one HTTP client to the engine.

One ``aiohttp.ClientSession`` per app (opened and closed in ``cleanup_ctx``)
with explicit timeouts, no cookie jar, and the engine's admin token.
Outgoing headers are built from scratch from an allow-list; nothing of the
incoming request (``Authorization``, ``Cookie``, ``X-Engine-Actor``,
``X-Forwarded-*``…) is ever copied. The acting user is the *session* user,
sent as ``X-Engine-Actor``.

Failures become gateway errors: unreachable (refused, reset, connect
timeout) → :class:`EngineUnavailable`; no answer within the total timeout →
:class:`EngineTimeout`.
"""

from __future__ import annotations

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

from admin_gateway.errors import EngineFailed, EngineTimeout, EngineUnavailable
from admin_gateway.settings import SETTINGS, SettingsError
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
    """What the engine answered: status, raw body, ``Content-Type`` header and ``Link`` header (paging)."""

    status: int
    body: bytes = attrs.field(repr=False)
    content_type: str
    link: str | None = None

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


class EngineClient:
    """Talks to the engine for the gateway; one instance per app."""

    def __init__(self, base_url: str, *, token: str | None, connect_timeout: float, total_timeout: float) -> None:
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise SettingsError(f"engine URL must be http(s)://host[:port], got {base_url!r}")
        self.base_url = url.with_path("/")
        self._base = str(self.base_url)
        self._fixed_headers = {"Accept": "application/json", "User-Agent": "admin-gateway"}
        if token:
            self._fixed_headers["Authorization"] = f"Bearer {token}"
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout)
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
    ) -> EngineResponse:
        """Send one request to the engine and return its answer, whatever its status.

        ``path`` is relative to the engine URL (segments already quoted);
        ``query`` is encoded, ``raw_query`` (already encoded, nothing to
        quote) is appended as it is. Raises :class:`EngineUnavailable` or
        :class:`EngineTimeout`.
        """
        assert self._session is not None, "EngineClient.start() was not called"
        # A string URL, encoded once here: cheaper than yarl joins on the hottest path.
        url = self._base + path.lstrip("/")
        if query:
            url += "?" + _encode_query(query)
        elif raw_query:
            url += "?" + raw_query
        has_body = json_body is not None
        try:
            async with self._session.request(
                method,
                URL(url, encoded=True),
                headers=self._headers(actor, request_id, has_body),
                json=json_body if has_body else None,
                allow_redirects=False,
            ) as resp:
                body = await _read_body(resp)
                headers = resp.headers
                return EngineResponse(
                    status=resp.status,
                    body=body,
                    content_type=headers.get("Content-Type", ""),
                    link=headers.get("Link"),
                )
        except aiohttp.ConnectionTimeoutError:
            # Not even a connection within the connect timeout: as unreachable as a refusal.
            log.warning("engine_unreachable", method=method, path=path, error="connect timeout")
            raise EngineUnavailable("the engine is unreachable (connect timeout)") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionResetError) as exc:
            log.warning("engine_disconnected", method=method, path=path, error=type(exc).__name__)
            raise EngineUnavailable(
                "the engine closed the connection before answering; check the job's status before retrying"
            ) from None
        except TimeoutError:
            log.warning("engine_timeout", method=method, path=path)
            raise EngineTimeout("the engine did not answer in time; check the job's status before retrying") from None
        except aiohttp.ClientError as exc:
            log.warning("engine_unreachable", method=method, path=path, error=type(exc).__name__)
            raise EngineUnavailable("the engine is unreachable") from None


#: The app's engine client.
ENGINE_CLIENT = web.AppKey("engine_client", EngineClient)


def request_id_of(request: web.Request) -> str | None:
    """Return the request id to propagate to the engine."""
    return request.get(REQUEST_ID)


async def engine_client_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the app's :class:`EngineClient`, close it at shutdown."""
    settings = app[SETTINGS]
    client = EngineClient(
        settings.engine_url,
        token=resolve_token(settings.engine_token),
        connect_timeout=settings.connect_timeout,
        total_timeout=settings.total_timeout,
    )
    await client.start()
    app[ENGINE_CLIENT] = client
    try:
        yield
    finally:
        await client.close()
