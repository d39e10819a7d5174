"""``GET /healthz``: whether the gateway process answers, and whether its audit journal can be written."""

from __future__ import annotations

from aiohttp import web

from admin_gateway.audit.trail import AUDIT


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz`` (no session): ``{"status": "ok"}``, or ``"degraded"`` while the audit journal fails.

    Always 200: the process answers and reads work. Says nothing about the engine.
    """
    if request.app[AUDIT].healthy:
        return web.json_response({"status": "ok"})
    return web.json_response(
        {
            "status": "degraded",
            "audit": "unavailable",
            "detail": "the audit journal cannot be written: sign-ins and job changes are refused",
        }
    )
