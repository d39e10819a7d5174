"""The gateway's one exception family: every refusal is a :class:`GatewayError` subclass.

The process's request wrapper (``shared.web.request_wrapper``, built in
:mod:`admin_gateway.http.app`) renders them as ``{"error", "code"}`` with their status.
"""

from __future__ import annotations

from shared.contract import ErrorCode
from shared.web import ApiError


class GatewayError(ApiError):
    """Base of every error the gateway raises on purpose (a 4xx/5xx with a code)."""


class Unauthorized(GatewayError):
    """401: no valid session, or a role that may not use this route."""

    status = 401
    code = ErrorCode.UNAUTHORIZED


class CsrfRefused(GatewayError):
    """403 ``csrf``: the synchronizer token or the request's origin is wrong."""

    status = 403
    code = ErrorCode.CSRF


class SafeModeRefused(GatewayError):
    """403 ``safe_mode``: SAFE_MODE is on, nothing may start."""

    status = 403
    code = ErrorCode.SAFE_MODE


class Throttled(GatewayError):
    """429 ``throttled``: too many failed logins; carries ``Retry-After``."""

    status = 429
    code = ErrorCode.THROTTLED


class EngineUnavailable(GatewayError):
    """502 ``engine_unavailable``: the engine could not be reached."""

    status = 502
    code = ErrorCode.ENGINE_UNAVAILABLE


class EngineTimeout(GatewayError):
    """504 ``engine_timeout``: the engine did not answer within the total timeout."""

    status = 504
    code = ErrorCode.ENGINE_TIMEOUT


class EngineFailed(GatewayError):
    """502 ``engine_error``: the engine answered, but not with anything we can pass on."""

    status = 502
    code = ErrorCode.ENGINE_ERROR


class AuditUnavailable(GatewayError):
    """503 ``journal_unavailable``: the audit journal cannot record, so the request was not carried out."""

    status = 503
    code = ErrorCode.JOURNAL_UNAVAILABLE
