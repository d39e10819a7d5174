"""The one seam every security event of the gateway goes through.

Handlers never log security events themselves: they call
``await request.app[AUDIT].record(event, request=..., **fields)``. Today the
:class:`Audit` writes one structlog event per call; the hash-chained journal
(issue 4) plugs in here by subclassing and overriding :meth:`Audit.write`
(and :meth:`Audit.require_writable`, which mutations await *before* they
act, so that an unwritable journal refuses them: fail closed).

Field rules: never a password, token, cookie or session id. User-supplied
strings (user names, user agents, reasons) are cut to a bounded length; the
JSON renderer escapes them, so they cannot forge a log line.
"""

from __future__ import annotations

from typing import Any, Final

import structlog
from aiohttp import web

from shared.web import REQUEST_ID

from .peer import Network, client_address

#: Fixed event names (one per kind of security event).
LOGIN_SUCCEEDED: Final = "login_succeeded"
LOGIN_FAILED: Final = "login_failed"
LOGOUT: Final = "logout"
SESSION_EXPIRED: Final = "session_expired"
ACCESS_DENIED: Final = "access_denied"
CSRF_REFUSED: Final = "csrf_refused"
SAFE_MODE_REFUSED: Final = "safe_mode_refused"
JOB_CREATE: Final = "job_create"
JOB_RUN: Final = "job_run"
JOB_CANCEL: Final = "job_cancel"

_MAX_TEXT = 200


def clip(value: str | None, limit: int = _MAX_TEXT) -> str | None:
    """Return ``value`` cut to ``limit`` characters (``None`` stays ``None``)."""
    if value is None or len(value) <= limit:
        return value
    return value[:limit] + "…"


class AuditUnavailable(Exception):
    """The audit trail cannot record; a mutation must not go ahead."""


class Audit:
    """Records security events. Subclass and override :meth:`write` for another sink."""

    def __init__(self, trusted_proxies: tuple[Network, ...] = ()) -> None:
        self._trusted = trusted_proxies
        self._log = structlog.get_logger("audit")

    def request_fields(self, request: web.Request) -> dict[str, Any]:
        """Return who/where fields of a request: client address, user agent, request id."""
        return {
            "client": client_address(request, self._trusted),
            "user_agent": clip(request.headers.get("User-Agent")),
            "request_id": request.get(REQUEST_ID),
            "method": request.method,
            "path": clip(request.path),
        }

    async def record(self, event: str, *, request: web.Request | None = None, actor: str | None = None,
                     **fields: Any) -> None:
        """Record one security ``event`` with its ``actor`` and context.

        ``request`` contributes the client address, user agent and request id.
        Raises :class:`AuditUnavailable` if the event cannot be recorded.
        """
        body: dict[str, Any] = {"actor": clip(actor)}
        if request is not None:
            body.update(self.request_fields(request))
        body.update(fields)
        await self.write(event, body)

    async def write(self, event: str, fields: dict[str, Any]) -> None:
        """Write one event (structlog: a warning for refusals, info otherwise)."""
        if event in (ACCESS_DENIED, CSRF_REFUSED, SAFE_MODE_REFUSED, LOGIN_FAILED):
            self._log.warning(event, **fields)
        else:
            self._log.info(event, **fields)

    async def require_writable(self) -> None:
        """Raise :class:`AuditUnavailable` when events cannot be recorded right now.

        Mutations call this before touching the engine. The structlog sink is
        always writable; a durable journal overrides this.
        """


#: The app's audit sink.
AUDIT = web.AppKey("audit", Audit)
