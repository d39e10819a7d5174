"""The one seam every security event of the gateway goes through, and the journal behind it.

Handlers never log security events themselves: they call
``await request.app[AUDIT].record(action, request=..., actor=..., outcome=..., **data)``,
which appends exactly one record to the gateway's hash-chained audit journal
(``<data-dir>/audit/``, the same format and code as the engine's journal:
:mod:`shared.journal`) and then writes one structlog line naming its seq.

A record is ``{seq, at, actor, source, action, jobId, data, prev, hash}``:
``actor`` is the signed-in user (or the attempted user name of a failed
login, or ``(anonymous)``), ``source`` the client address (see
:func:`admin_gateway.peer.client_address`), and ``data`` always holds
``outcome`` (:data:`OUTCOMES`), ``userAgent``, ``requestId``, ``method`` and
``path``, plus what the event adds (``code``, ``status``, ``reason``…).

Failing closed. :meth:`Audit.record` with ``fail_closed=True`` raises
:class:`AuditUnavailable` (503 ``journal_unavailable``) when the record
cannot be made durable: a login or a job mutation then does not happen.
Refusals (access denied, CSRF, SAFE_MODE, failed logins), logouts and
session expiries are recorded best effort: what they refuse or end stays
refused or ended, and a record that could not be written is logged at
ERROR (``audit_write_failed``) with its fields instead.

Field rules: never a password, token, cookie or session id. Every
user-supplied string is sanitised (:func:`sanitize`: characters that are
not printable become visible ``\\uXXXX`` escapes, lengths are capped) and
the journal stores JSON, so no input can start a line or forge a record.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import structlog
from aiohttp import web

from shared.journal import Journal, JournalError, JournalUnavailable, Record
from shared.journal_file import FileJournal
from shared.text import escape_unprintable
from shared.web import REQUEST_ID

from .errors import AuditUnavailable, GatewayError
from .peer import Network, client_address
from .settings import SETTINGS

__all__ = ["ACCESS_DENIED", "ANONYMOUS", "AUDIT", "AUDIT_SUBDIR", "CSRF_REFUSED", "JOB_CANCEL", "JOB_CREATE",
           "JOB_RUN", "LOGIN_FAILED", "LOGIN_SUCCEEDED", "LOGOUT", "SAFE_MODE_REFUSED", "SESSION_EXPIRED", "Audit",
           "AuditUnavailable", "audit_journal_ctx", "clip", "outcome_of", "requested", "sanitize"]

#: Fixed action names (one per kind of security event).
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

#: ``data.outcome`` values: an intent recorded before the engine is called, the request
#: done, refused (with ``code``), failed at the engine (with ``code``), a session expired.
REQUESTED: Final = "requested"
ACCEPTED: Final = "accepted"
REFUSED: Final = "refused"
ERROR: Final = "error"
EXPIRED: Final = "expired"
OUTCOMES: Final = (REQUESTED, ACCEPTED, REFUSED, ERROR, EXPIRED)

#: The actor of a record nobody signed in for. Not a possible user name (no parentheses allowed).
ANONYMOUS: Final = "(anonymous)"
#: Where the gateway's journal lives, under the data dir.
AUDIT_SUBDIR: Final = "audit"
PROG: Final = "admin-gateway"

_MAX_TEXT = 200
_MAX_NAME = 64
_MAX_USER_AGENT = 512
_MAX_DATA_TEXT = 1000
_WARNING_ACTIONS = frozenset({ACCESS_DENIED, CSRF_REFUSED, SAFE_MODE_REFUSED, LOGIN_FAILED})


def requested(action: str) -> str:
    """The action of the intent record written before ``action`` is sent to the engine."""
    return f"{action}_requested"


def clip(value: str | None, limit: int = _MAX_TEXT) -> str | None:
    """Return ``value`` cut to ``limit`` characters, marked with ``…`` (``None`` stays ``None``)."""
    if value is None or len(value) <= limit:
        return value
    return value[:limit] + "…"


def sanitize(value: str | None, limit: int = _MAX_TEXT) -> str | None:
    """Return ``value`` safe to store and show: capped at ``limit`` characters, nothing unprintable.

    Every character that is not printable (control characters such as
    newlines, bidi and other format characters, line separators, lone
    surrogates from undecodable header bytes) becomes a visible
    ``\\uXXXX`` escape, so the text can neither break a line in a log or a
    terminal nor hide what it says. ``None`` stays ``None``.
    """
    if value is None:
        return None
    value = value[:limit + 1]
    return clip(escape_unprintable(value), limit)


def _clean(value: Any) -> Any:
    """A ``data`` value as stored: strings sanitised (a run reason may be 1000 characters), numbers as they are."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return sanitize(str(value), _MAX_DATA_TEXT)


def outcome_of(exc: GatewayError) -> dict[str, Any]:
    """``data`` fields describing a request that ended with ``exc``: refused (4xx) or error (5xx)."""
    return {"outcome": REFUSED if exc.status < 500 else ERROR, "code": str(exc.code), "status": exc.status}


class Audit:
    """Records security events in the audit journal (attached when the app starts)."""

    def __init__(self, trusted_proxies: tuple[Network, ...] = ()) -> None:
        self._trusted = trusted_proxies
        self._journal: Journal | None = None
        self._log = structlog.get_logger("audit")

    def attach(self, journal: Journal | None) -> None:
        """Write to ``journal`` from now on (``None``: nothing can be recorded, mutations are refused)."""
        self._journal = journal

    @property
    def journal(self) -> Journal | None:
        """The journal records go to, or ``None`` before the app started and after it stopped."""
        return self._journal

    @property
    def healthy(self) -> bool:
        """False while records cannot be written (``/healthz`` then says ``degraded``)."""
        return self._journal is not None and self._journal.healthy

    def request_fields(self, request: web.Request) -> tuple[str, dict[str, Any]]:
        """Return the client address and the request's ``data`` fields (user agent, request id, method, path)."""
        return client_address(request, self._trusted), {
            "userAgent": sanitize(request.headers.get("User-Agent"), _MAX_USER_AGENT),
            "requestId": request.get(REQUEST_ID),
            "method": request.method,
            "path": sanitize(request.path),
        }

    async def record(self, action: str, *, request: web.Request | None = None, actor: str | None = None,
                     job_id: str | None = None, outcome: str, fail_closed: bool = False,
                     **data: Any) -> Record | None:
        """Append one record for ``action`` and return it once it is durable.

        ``request`` contributes the source address and the request fields;
        ``data`` values that are ``None`` are left out. If the record cannot
        be written: with ``fail_closed`` raise :class:`AuditUnavailable` (the
        caller must not act), else log ``audit_write_failed`` at ERROR with
        the record's fields and return ``None``.
        """
        source, body = self.request_fields(request) if request is not None else ("gateway", {})
        body["outcome"] = outcome
        body.update((k, _clean(v)) for k, v in data.items() if v is not None)
        who = sanitize(actor, _MAX_NAME) or ANONYMOUS
        job = sanitize(job_id, _MAX_NAME)
        try:
            record = await self.write(action=action, actor=who, source=source, job_id=job, data=body)
        except AuditUnavailable as exc:
            self._log.error("audit_write_failed", action=action, actor=who, source=source, job_id=job,
                            outcome=outcome, reason=body.get("reason"), error=exc.message, fail_closed=fail_closed)
            if fail_closed:
                raise
            return None
        # The journal is the audit trail; this line is for whoever watches the logs.
        line = {"seq": record.seq, "actor": who, "source": source, "job_id": job, "outcome": outcome,
                "code": body.get("code"), "reason": body.get("reason")}
        log = self._log.warning if action in _WARNING_ACTIONS else self._log.info
        log(action, **{k: v for k, v in line.items() if v is not None})
        return record

    async def write(self, *, action: str, actor: str, source: str, job_id: str | None,
                    data: dict[str, Any]) -> Record:
        """Append one record to the journal; raise :class:`AuditUnavailable` if it is not durable."""
        journal = self._journal
        if journal is None:
            raise AuditUnavailable("the audit journal is not open")
        try:
            return await journal.append(action=action, actor=actor, source=source, job_id=job_id, data=data)
        except JournalUnavailable as exc:
            raise AuditUnavailable(f"the audit journal cannot be written ({exc}); nothing was done") from None


#: The app's audit sink.
AUDIT = web.AppKey("audit", Audit)

#: How often old segments are pruned (retention: the journal's default, 400 days).
_PRUNE_EVERY = 24 * 3600.0


def open_journal(directory: Path) -> FileJournal:
    """Open the audit journal in ``directory`` and check its chain (blocking).

    Raises ``JournalError`` (locked by another process, or a broken chain
    naming the first bad record) or ``OSError`` (cannot create or read it).
    """
    journal = FileJournal.open(directory, prog=PROG)
    try:
        for _ in journal.replay():  # verified as it is read; the gateway keeps no state from it
            pass
    except BaseException:
        asyncio.run(journal.close())
        raise
    return journal


async def audit_journal_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open ``<data-dir>/audit/`` before the first request; snapshot and close it at the end.

    A journal that cannot be opened (unwritable, locked, broken chain) stops
    the start: a gateway that cannot audit must not serve. The snapshot at a
    clean stop lets the next start check only what came after it (``audit
    verify`` still checks everything).
    """
    audit = app[AUDIT]
    directory = app[SETTINGS].data_dir / AUDIT_SUBDIR
    journal = await asyncio.to_thread(open_journal, directory)
    audit.attach(journal)

    async def prune() -> None:
        while True:
            await asyncio.sleep(_PRUNE_EVERY)
            with contextlib.suppress(OSError, JournalError):
                await journal.prune()

    task = asyncio.create_task(prune())
    try:
        yield
    finally:
        audit.attach(None)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if journal.last_seq and journal.healthy:
            await journal.write_snapshot({}, seq=journal.last_seq, head=journal.head)
        await journal.close()
