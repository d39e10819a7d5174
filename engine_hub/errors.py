"""The engine's one exception base and its subclasses.

Every error a handler raises derives from :class:`EngineError`; the shared
``request_wrapper`` renders it as ``{"error": message, "code": code}`` with
the class's HTTP status.
"""

from __future__ import annotations

from shared.contract import ErrorCode
from shared.web import ApiError


class EngineError(ApiError):
    """Base of every engine error: a 400 ``bad_request`` unless a subclass says otherwise."""


class InvalidField(EngineError):
    """A field or query parameter has a wrong type or value (400 ``invalid_field``)."""

    status = 400
    code = ErrorCode.INVALID_FIELD


class UnknownType(EngineError):
    """A job type that the catalog does not hold (400 ``unknown_type``)."""

    status = 400
    code = ErrorCode.UNKNOWN_TYPE


class InvalidParam(EngineError):
    """Job params that the job type does not accept (400 ``invalid_param``)."""

    status = 400
    code = ErrorCode.INVALID_PARAM


class Unauthorized(EngineError):
    """No or a wrong bearer token (401 ``unauthorized``, with ``WWW-Authenticate``)."""

    status = 401
    code = ErrorCode.UNAUTHORIZED

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="engine-hub"'})


class Forbidden(EngineError):
    """A valid token whose scope does not allow the request (403 ``forbidden``)."""

    status = 403
    code = ErrorCode.FORBIDDEN


class SelfApproval(EngineError):
    """The requester of a run tried to approve it (403 ``self_approval``): the two-person rule."""

    status = 403
    code = ErrorCode.SELF_APPROVAL


class NotRequester(EngineError):
    """Someone other than the requester tried to withdraw a run request (403 ``not_requester``)."""

    status = 403
    code = ErrorCode.NOT_REQUESTER


class NotFound(EngineError):
    """An unknown job id (404 ``not_found``)."""

    status = 404
    code = ErrorCode.NOT_FOUND


class LogExpired(EngineError):
    """The job exists but log retention deleted its output (404 ``log_expired``; see docs/engine.md)."""

    status = 404
    code = ErrorCode.LOG_EXPIRED


class Conflict(EngineError):
    """The job's state forbids the request right now (409; the code says why)."""

    status = 409
    code = ErrorCode.ALREADY_RUNNING


class NotReady(EngineError):
    """The job has already finished (DONE or FAILED) and can never run again (400 ``not_ready``)."""

    status = 400
    code = ErrorCode.NOT_READY


class JournalDown(EngineError):
    """The journal cannot make the change durable, so nothing changed (503 ``journal_unavailable``)."""

    status = 503
    code = ErrorCode.JOURNAL_UNAVAILABLE


class StoreDown(JournalDown):
    """The PostgreSQL store cannot be reached (or its pool is exhausted): nothing changed, nothing read
    (503 ``store_unavailable``). A :class:`JournalDown`, so a run's finish keeps being retried."""

    code = ErrorCode.STORE_UNAVAILABLE


class StoreTimeout(StoreDown):
    """A statement ran past the store's statement timeout (503 ``store_unavailable``); the store itself is up."""


class NodeNotReady(EngineError):
    """This engine node may not claim runs right now: it lost its registration and is re-registering,
    or it has not registered yet (503 ``node_not_ready``; another node can take the request)."""

    status = 503
    code = ErrorCode.NODE_NOT_READY


class ConfigError(Exception):
    """The engine cannot start with this configuration; the message says what to fix."""


class StartupError(Exception):
    """The engine cannot start from its data as it is (a broken journal, a locked data dir).

    The message is one line saying what is wrong and what to run or fix.
    """


class TooManyStreams(EngineError):
    """The engine has as many open event streams as it allows (429 ``throttled``, with ``Retry-After``)."""

    status = 429
    code = ErrorCode.THROTTLED


class TooManyPlans(EngineError):
    """The engine runs as many plans at once as it allows (429 ``throttled``, with ``Retry-After``)."""

    status = 429
    code = ErrorCode.THROTTLED
