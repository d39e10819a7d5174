"""The one seam every security event of the gateway goes through, and the journal behind it.

Handlers never log security events themselves: they call
``await request.app[AUDIT].record(action, request=..., actor=..., outcome=..., **data)``,
which appends exactly one record to the gateway's hash-chained audit journal
(``<data-dir>/audit/``, the same format and code as the engine's journal:
:mod:`shared.journal.chain`) and then writes one structlog line naming its seq.

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

Floods. Repeated identical refusals (:data:`COALESCED_ACTIONS`: the same
action, actor, address, method, route and refusal fields) are not written
one by one: the first is written at once and opens a window of
``audit_coalesce_window`` seconds; the repeats within it are counted, and
at the window's end one summary record is written (same action, ``path``
the route template, ``repeated`` the count, ``firstAt``/``lastAt`` the
first and last repeat). A key with repeats stays open for another window;
a quiet one is forgotten, so the next denial is again written at once.
Login attempts refused before any password was checked (``login_failed``
with reason ``throttled`` or ``busy``) are coalesced too, but keyed without
the attempted user name and without per-attempt values (``retryAfter``,
``usernameInvalid``): a flood tries a new name each time. The first of a
window is written in full, name included; the summary's actor is
``(anonymous)`` and it adds ``names`` (up to :data:`NAME_SAMPLE` distinct
attempted names) and ``distinctNames`` (exact up to
:data:`MAX_DISTINCT_NAMES`, then ``distinctNamesCapped``: at least that
many). Failures that did check a password stay one record each.
Open windows are flushed at shutdown and at most :data:`MAX_OPEN_WINDOWS`
keys are held (the oldest is flushed to make room). So an anonymous 401
flood costs a few records per window, not one fsynced record per request,
and is still on the record with its size.

Field rules: never a password, token, cookie or session id. Every
user-supplied string is sanitised (:func:`sanitize`: characters that are
not printable become visible ``\\uXXXX`` escapes, lengths are capped) and
the journal stores JSON, so no input can start a line or forge a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

import attrs
import structlog
from aiohttp import web

from admin_gateway.errors import AuditUnavailable, GatewayError
from admin_gateway.peer import Network, client_address
from admin_gateway.settings import SETTINGS
from shared.contract import format_time
from shared.journal.chain import Journal, JournalError, JournalUnavailable, Record
from shared.journal.file import FileJournal
from shared.journal.postgres import PostgresJournal
from shared.text import escape_unprintable
from shared.web import REQUEST_ID

__all__ = [
    "ACCESS_DENIED",
    "ANONYMOUS",
    "AUDIT",
    "AUDIT_EXPORT",
    "AUDIT_SUBDIR",
    "COALESCED_ACTIONS",
    "CSRF_REFUSED",
    "JOB_APPROVE",
    "JOB_CANCEL",
    "JOB_CREATE",
    "JOB_PLAN",
    "JOB_REJECT",
    "JOB_RUN",
    "JOB_WITHDRAW",
    "LOGIN_FAILED",
    "LOGIN_SUCCEEDED",
    "LOGOUT",
    "MAX_DISTINCT_NAMES",
    "NAME_SAMPLE",
    "SAFE_MODE_OVERRIDE_APPROVE",
    "SAFE_MODE_OVERRIDE_END",
    "SAFE_MODE_OVERRIDE_REQUEST",
    "SAFE_MODE_REFUSED",
    "SESSION_EXPIRED",
    "UNCHECKED_LOGIN_REASONS",
    "Audit",
    "AuditUnavailable",
    "audit_journal_ctx",
    "clip",
    "outcome_of",
    "requested",
    "sanitize",
]

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
JOB_PLAN: Final = "job_plan"
JOB_CANCEL: Final = "job_cancel"
#: Break-glass for SAFE_MODE (issue 15): asking for, approving and ending an override window.
SAFE_MODE_OVERRIDE_REQUEST: Final = "safe_mode_override_request"
SAFE_MODE_OVERRIDE_APPROVE: Final = "safe_mode_override_approve"
SAFE_MODE_OVERRIDE_END: Final = "safe_mode_override_end"
JOB_APPROVE: Final = "job_approve"
JOB_REJECT: Final = "job_reject"
JOB_WITHDRAW: Final = "job_withdraw"
#: A super_admin downloaded the audit trail (``GET /api/admin/audit/export``).
AUDIT_EXPORT: Final = "audit_export"

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
#: Refusals anyone can repeat at will, without an account: counted per window, not written one by one.
COALESCED_ACTIONS: Final = frozenset({ACCESS_DENIED, CSRF_REFUSED})
#: At most this many coalescing windows are open at once (memory stays bounded under a flood
#: from many addresses).
MAX_OPEN_WINDOWS: Final = 10_000
#: ``data`` fields that differ between otherwise identical requests: not part of a coalescing key.
_PER_REQUEST_FIELDS = frozenset({"userAgent", "requestId", "path"})
#: ``login_failed`` reasons given before any password was checked: coalesced like the actions above.
UNCHECKED_LOGIN_REASONS: Final = frozenset({"throttled", "busy"})
#: Fields of such a refusal that differ from attempt to attempt: neither in its key nor in its summary.
_PER_ATTEMPT_FIELDS = frozenset({"retryAfter", "usernameInvalid"})
#: Attempted names a login refusals' summary lists, and how many distinct ones it counts exactly.
NAME_SAMPLE: Final = 5
MAX_DISTINCT_NAMES: Final = 100


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
    value = value[: limit + 1]
    return clip(escape_unprintable(value), limit)


def _clean(value: Any) -> Any:
    """A ``data`` value as stored: strings sanitised (a run reason may be 1000 characters), numbers as they are."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return sanitize(str(value), _MAX_DATA_TEXT)


def outcome_of(exc: GatewayError) -> dict[str, Any]:
    """``data`` fields describing a request that ended with ``exc``: refused (4xx) or error (5xx)."""
    return {"outcome": REFUSED if exc.status < 500 else ERROR, "code": str(exc.code), "status": exc.status}


@attrs.define
class _Window:
    """Repeats of one refusal since its last record: what the summary record will say."""

    action: str
    actor: str
    source: str
    data: dict[str, Any]  #: the refusal's fields, ``path`` being the route template
    opened: float  #: monotonic time the window opened
    repeated: int = 0
    first: float = 0.0  #: clock time of the first and the last repeat
    last: float = 0.0
    names: _Names | None = None  #: login refusals only: the repeats' attempted names


@attrs.define
class _Names:
    """The attempted names of a window's repeats, in bounded memory: a sample and a capped distinct count."""

    sample: list[str] = attrs.Factory(list)
    seen: set[int] = attrs.Factory(set)  #: hashes, at most MAX_DISTINCT_NAMES of them
    capped: bool = False

    def add(self, name: str) -> None:
        key = hash(name)
        if key in self.seen:
            return
        if len(self.seen) >= MAX_DISTINCT_NAMES:
            self.capped = True
            return
        self.seen.add(key)
        if len(self.sample) < NAME_SAMPLE:
            self.sample.append(name)

    def fields(self) -> dict[str, Any]:
        """The summary's ``names``, ``distinctNames`` and (when the count is a floor) ``distinctNamesCapped``."""
        out: dict[str, Any] = {"names": list(self.sample), "distinctNames": len(self.seen)}
        if self.capped:
            out["distinctNamesCapped"] = True
        return out


_WindowKey = tuple[str, str, str, tuple[tuple[str, Any], ...]]


def _route_template(request: web.Request) -> str:
    # The route, not the path: a flood spread over /x/1, /x/2 … is one flood.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def _iso(epoch: float) -> str | None:
    return format_time(dt.datetime.fromtimestamp(epoch, dt.UTC))


def _summary(window: _Window) -> dict[str, Any]:
    """The ``data`` of a window's summary record."""
    names = window.names.fields() if window.names is not None else {}
    return {
        **window.data,
        "repeated": window.repeated,
        "firstAt": _iso(window.first),
        "lastAt": _iso(window.last),
        **names,
    }


def _unchecked_login(action: str, body: dict[str, Any]) -> bool:
    """Whether this is a login attempt refused before its password was checked."""
    return action == LOGIN_FAILED and body.get("reason") in UNCHECKED_LOGIN_REASONS


class Audit:
    """Records security events in the audit journal (attached when the app starts)."""

    def __init__(self, trusted_proxies: tuple[Network, ...] = ()) -> None:
        self._trusted = trusted_proxies
        self._journal: Journal | None = None
        self._log = structlog.get_logger("audit")
        self._window: float | None = None
        self._clock: Callable[[], float] = time.time
        self._open: dict[_WindowKey, _Window] = {}
        self._max_open = MAX_OPEN_WINDOWS

    def coalesce(self, window: float, clock: Callable[[], float], *, max_open: int = MAX_OPEN_WINDOWS) -> None:
        """Count repeated identical refusals over ``window`` seconds, in at most ``max_open`` (>= 1) windows.

        See the module docstring. ``clock`` gives the ``firstAt``/``lastAt``
        times; windows are timed with the monotonic clock. Until this is
        called every refusal is written.
        """
        self._window = window
        self._clock = clock
        self._max_open = max_open

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

    async def record(
        self,
        action: str,
        *,
        request: web.Request | None = None,
        actor: str | None = None,
        job_id: str | None = None,
        outcome: str,
        fail_closed: bool = False,
        **data: Any,
    ) -> Record | None:
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
        if (
            request is not None
            and self._window is not None
            and (action in COALESCED_ACTIONS or _unchecked_login(action, body))
            and outcome == REFUSED
            and not fail_closed
            and job is None
            and await self._counted(action, who, source, body, request)
        ):
            return None
        return await self._append(action, who, source, job, body, fail_closed=fail_closed)

    async def _counted(self, action: str, who: str, source: str, body: dict[str, Any], request: web.Request) -> bool:
        """Count a refusal into its open window (``True``), or open one for it (``False``: write it now)."""
        per_name = _unchecked_login(action, body)
        skip = _PER_REQUEST_FIELDS | _PER_ATTEMPT_FIELDS if per_name else _PER_REQUEST_FIELDS
        fields = {k: v for k, v in body.items() if k not in skip}
        fields["path"] = sanitize(_route_template(request))
        # A flood tries a new name per attempt: those refusals are one flood whatever the name.
        actor = ANONYMOUS if per_name else who
        key: _WindowKey = (action, actor, source, tuple(sorted(fields.items())))
        window = self._open.get(key)
        if window is not None:
            now = self._clock()
            if not window.repeated:
                window.first = now
            window.repeated += 1
            window.last = now
            if window.names is not None and who != ANONYMOUS:
                window.names.add(who)
            return True
        # Opened before anything is awaited: concurrent repeats are counted, not written.
        self._open[key] = _Window(
            action=action,
            actor=actor,
            source=source,
            data=fields,
            opened=time.monotonic(),
            names=_Names() if per_name else None,
        )
        if len(self._open) > self._max_open:
            await self._close(next(iter(self._open)))  # the oldest, never the one just opened
        return False

    async def _close(self, key: _WindowKey) -> None:
        """Forget a window, writing its summary record if it counted repeats."""
        window = self._open.pop(key, None)
        if window is not None and window.repeated:
            await self._append(window.action, window.actor, window.source, None, _summary(window), fail_closed=False)

    async def flush_windows(self, *, everything: bool = False) -> None:
        """Write the summaries of windows that have ended (``everything``: of all, at shutdown).

        A window that counted repeats is reopened for another period; a quiet one is forgotten.
        """
        if self._window is None:
            return
        now = time.monotonic()
        for key, window in list(self._open.items()):
            if not everything and now - window.opened < self._window:
                continue
            if everything or not window.repeated:
                await self._close(key)
                continue
            summary = _summary(window)
            # Reset before the write is awaited: repeats arriving meanwhile count in the new period.
            window.repeated, window.opened = 0, now
            if window.names is not None:
                window.names = _Names()
            await self._append(window.action, window.actor, window.source, None, summary, fail_closed=False)

    async def _append(
        self, action: str, who: str, source: str, job: str | None, body: dict[str, Any], *, fail_closed: bool
    ) -> Record | None:
        """Write one record and its log line (see :meth:`record` for failures)."""
        outcome = body["outcome"]
        try:
            record = await self.write(action=action, actor=who, source=source, job_id=job, data=body)
        except AuditUnavailable as exc:
            self._log.error(
                "audit_write_failed",
                action=action,
                actor=who,
                source=source,
                job_id=job,
                outcome=outcome,
                reason=body.get("reason"),
                error=exc.message,
                fail_closed=fail_closed,
            )
            if fail_closed:
                raise
            return None
        # The journal is the audit trail; this line is for whoever watches the logs.
        line = {
            "seq": record.seq,
            "actor": who,
            "source": source,
            "job_id": job,
            "outcome": outcome,
            "code": body.get("code"),
            "reason": body.get("reason"),
        }
        log = self._log.warning if action in _WARNING_ACTIONS else self._log.info
        log(action, **{k: v for k, v in line.items() if v is not None})
        return record

    async def write(self, *, action: str, actor: str, source: str, job_id: str | None, data: dict[str, Any]) -> Record:
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
    """cleanup_ctx: open the audit journal before the first request; close it at the end.

    The journal is ``<data-dir>/audit/``, or with ``audit_store`` set the
    chain ``audit_chain`` in that PostgreSQL database (nothing on disk). A
    journal that cannot be opened (unwritable, locked, broken chain,
    database unreachable or not migrated) stops the start: a gateway that
    cannot audit must not serve. The snapshot at a clean stop of a file
    journal lets the next start check only what came after it (``audit
    verify`` still checks everything).
    """
    audit = app[AUDIT]
    settings = app[SETTINGS]
    journal: FileJournal | PostgresJournal
    if settings.audit_store:
        journal = await PostgresJournal.open(settings.audit_store, settings.audit_chain)
    else:
        journal = await asyncio.to_thread(open_journal, settings.data_dir / AUDIT_SUBDIR)
    audit.attach(journal)

    async def prune() -> None:
        while True:
            await asyncio.sleep(_PRUNE_EVERY)
            with contextlib.suppress(OSError, JournalError):
                await file_journal.prune()

    window = settings.audit_coalesce_window
    audit.coalesce(window, settings.clock)

    async def flush() -> None:
        while True:
            # A quarter window: a summary is written at most that late.
            await asyncio.sleep(window / 4)
            await audit.flush_windows()

    tasks = [asyncio.create_task(flush())]
    if isinstance(journal, FileJournal):
        file_journal = journal
        tasks.append(asyncio.create_task(prune()))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await audit.flush_windows(everything=True)
        audit.attach(None)
        if journal.last_seq and journal.healthy:
            await journal.write_snapshot({}, seq=journal.last_seq, head=journal.head)
        await journal.close()
