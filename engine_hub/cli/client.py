"""A small synchronous HTTP client of the engine API, used by the CLI.

It uses the standard library only (fast start-up for a command-line tool)
and turns every failure into :class:`ClientError`, whose message is one line
a human can act on: which engine could not be reached, or what the engine
answered.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from engine_hub.settings import ACTOR_HEADER, TOKEN_ENV, TOKEN_FILE
from shared.tokens import TokenFileError, read_token_file

URL_ENV: Final = "ENGINE_HUB_URL"
DEFAULT_URL: Final = "http://127.0.0.1:8090"
TIMEOUT: Final = 10.0


class ClientError(Exception):
    """A request that failed; ``str()`` is the one-line message for the user."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def find_token(*, data_dir: Path, environ: Mapping[str, str] | None = None) -> str:
    """Return the token from ``$ENGINE_HUB_TOKEN``, else from ``<data_dir>/token``; raise ``ClientError`` if neither."""
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV, "").strip()
    if token:
        return token
    path = data_dir / TOKEN_FILE
    try:
        from_file = read_token_file(path)
    except TokenFileError as exc:
        raise ClientError(str(exc)) from None
    if from_file is None:
        raise ClientError(
            f"no token: set {TOKEN_ENV} or point --data-dir at the engine's data directory ({path} does not exist)"
        )
    return from_file


class EngineClient:
    """Calls one engine at ``base_url`` with a bearer token (and optionally an actor name)."""

    def __init__(self, base_url: str, token: str, *, actor: str | None = None, timeout: float = TIMEOUT) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ClientError(f"invalid engine URL {base_url!r}: expected http://host:port")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._actor = actor
        self._timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> tuple[Any, Mapping[str, str]]:
        """Send one request; return the decoded JSON body and the response headers.

        Raises :class:`ClientError` for a network failure, a timeout, an error
        status (with the engine's message and code) or a body that is not JSON.
        """
        url = self.base_url + path
        if query:
            url += "?" + urlencode({k: str(v) for k, v in query.items()})
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._actor is not None:
            headers[ACTOR_HEADER] = self._actor
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                raw = resp.read()
                resp_headers = dict(resp.headers.items())
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except urllib.error.URLError as exc:
            raise ClientError(f"cannot reach the engine at {self.base_url}: {_reason(exc.reason)}") from None
        except TimeoutError:
            raise ClientError(f"the engine at {self.base_url} did not answer within {self._timeout:g} s") from None
        except (ConnectionError, OSError) as exc:
            raise ClientError(f"connection to the engine at {self.base_url} failed: {_reason(exc)}") from None
        try:
            return json.loads(raw), resp_headers
        except ValueError:
            raise ClientError(f"the engine at {self.base_url} answered {method} {path} with non-JSON data") from None

    def _http_error(self, exc: urllib.error.HTTPError) -> ClientError:
        try:
            body = json.loads(exc.read())
            message, code = str(body["error"]), str(body["code"])
        except (ValueError, KeyError, TypeError, OSError):
            return ClientError(f"the engine answered HTTP {exc.code} {exc.reason}", status=exc.code)
        return ClientError(f"{message} (HTTP {exc.code} {code})", status=exc.code, code=code)


def _reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is `engine-hub serve` running?)"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return f"unknown host ({reason.strerror})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)
