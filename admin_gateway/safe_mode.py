"""The gateway's SAFE_MODE check with break-glass (issue 15): "config says on, and no window is open".

The override window lives in the engine (its store and hash chain), so
every gateway in front of it sees the same one. This gateway asks for it
(``GET /api/safe-mode/override``) only while its own SAFE_MODE is on, and
keeps the answer :data:`CACHE_SECONDS` at most. The cache never decides
alone: each check compares the window's ``until`` with the gateway's clock
(``Settings.clock``), so a window stops letting runs through at its end to
the second, cached or not. A window ended early at another gateway may look
open here for up to :data:`CACHE_SECONDS`: the run then carries the
window's id and the engine, which checks the window itself at that moment,
refuses it (409 ``override_closed``).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any, Final

import structlog
from aiohttp import web

from admin_gateway.engine_client import ENGINE_CLIENT, request_id_of
from admin_gateway.errors import EngineFailed, GatewayError
from admin_gateway.settings import SETTINGS
from shared.contract import format_time

log = structlog.get_logger("safe_mode")

#: The engine's route for the window.
ENGINE_PATH: Final = "api/safe-mode/override"
#: How long an answer of the engine is reused (seconds, monotonic).
CACHE_SECONDS: Final = 2.0


def clock_text(epoch: float) -> str:
    """``epoch`` as the engine writes times (fixed-width UTC text: string order is time order)."""
    return format_time(dt.datetime.fromtimestamp(epoch, dt.UTC)) or ""


class OverrideWindow:
    """This gateway's view of the engine's override window: a short cache of the engine's answer."""

    def __init__(self) -> None:
        self._window: dict[str, Any] | None = None
        self._fetched: float | None = None

    def forget(self) -> None:
        """Drop the cached answer (after this gateway changed the window, or the engine said it closed)."""
        self._fetched = None

    async def fetch(self, request: web.Request, actor: str) -> dict[str, Any] | None:
        """The window the engine says is requested or open (``None``: none), at most :data:`CACHE_SECONDS` old.

        Raises :class:`GatewayError` when the engine cannot be asked or answers something else.
        """
        now = time.monotonic()
        if self._fetched is not None and now - self._fetched < CACHE_SECONDS:
            return self._window
        resp = await request.app[ENGINE_CLIENT].call("GET", ENGINE_PATH, actor=actor, request_id=request_id_of(request))
        try:
            body = json.loads(resp.body) if resp.status == 200 else None
        except ValueError:
            body = None
        window = body.get("window") if isinstance(body, dict) else None
        if resp.status != 200 or not isinstance(body, dict) or not (window is None or isinstance(window, dict)):
            raise EngineFailed(f"the engine did not say which override window is open ({resp.status})")
        self._window, self._fetched = window, now
        return window

    async def current(self, request: web.Request, actor: str) -> dict[str, Any] | None:
        """The window requested or open at this gateway's clock now, or ``None``; what a banner shows.

        A cached answer's window past its ``until`` (or its request past ``requestExpiresAt``) is ``None``.
        Raises :class:`GatewayError` when the engine cannot say.
        """
        window = await self.fetch(request, actor)
        if window is None:
            return None
        now = clock_text(request.app[SETTINGS].clock())
        end = window.get("until") if window.get("state") == "open" else window.get("requestExpiresAt")
        return window if str(end or "") > now else None

    async def open_window(self, request: web.Request, actor: str) -> dict[str, Any] | None:
        """The window open at this gateway's clock now, or ``None`` (none, pending, past ``until``, engine down)."""
        try:
            window = await self.current(request, actor)
        except GatewayError as exc:
            # Fail closed: a window nobody can confirm lets nothing through.
            log.warning("override_check_failed", error=exc.message)
            return None
        return window if window is not None and window.get("state") == "open" else None


#: The app's view of the override window.
OVERRIDE_WINDOW: Final = web.AppKey("override_window", OverrideWindow)
