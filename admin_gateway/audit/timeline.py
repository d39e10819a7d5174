"""One audit timeline over both journals: the engine's (``GET /api/audit``) and the gateway's own.

Both are newest first and paged by seq (``before``), but their seqs are
independent, so a page of the merged timeline takes up to ``limit`` records
from each, merges them by time and keeps the newest ``limit``. The cursor
of the next page carries one ``before`` per journal (:class:`Cursor`):
records that did not make it onto this page are the first of the next.

The engine being down (unreachable, failing, or without an audit API) never
hides the gateway's records: the timeline then holds the gateway's alone
and says ``engine: "down"`` with a warning.

``GET /api/admin/audit`` serves it as JSON and the panel's pages render it
with :func:`timeline_context` (both in :mod:`admin_gateway.http.audit_page`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs
from aiohttp import web

from admin_gateway.audit.trail import AUDIT
from admin_gateway.engine_client import ENGINE_CLIENT, request_id_of
from admin_gateway.errors import GatewayError
from shared.contract import DEFAULT_PAGE_LIMIT, MAX_FILTER_CHARS, ErrorCode, format_time, parse_time
from shared.journal.chain import AuditQuery
from shared.web import parse_decimal

JournalName = Literal["engine", "gateway"]
JOURNALS: Final[tuple[JournalName, ...]] = ("engine", "gateway")
#: Records per page of the timeline when ``limit`` is not given (the engine's own default).
DEFAULT_LIMIT: Final = DEFAULT_PAGE_LIMIT
#: Largest timeline page: two journals are read and merged per page, so it stays below the engine's.
MAX_LIMIT: Final = 500
#: Filter parameters of the timeline (API, page and export).
FILTERS: Final = frozenset({"actor", "action", "outcome", "jobId", "since", "until", "journal"})
#: Query parameters of the timeline (API and page).
PARAMS: Final = FILTERS | {"limit", "before"}

#: Data fields shown in their own column rather than among a record's details.
_COLUMNS: Final = frozenset({"outcome"})
_MAX_DETAIL = 300
#: What a job id looks like (anything else is no job id to filter by or to look up).
JOB_ID: Final = re.compile(r"[A-Za-z0-9-]{1,64}")
_CURSOR = re.compile(r"e([0-9]{0,18})\.g([0-9]{0,18})")
_LOCAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?")
#: Action names and ``data.outcome`` values: what the journals write (lower case and ``_``).
_WORD = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _invalid(message: str) -> GatewayError:
    return GatewayError(message, code=ErrorCode.INVALID_FIELD)


@attrs.frozen(kw_only=True)
class Cursor:
    """Where the next page starts in each journal: a ``before`` seq, ``None`` (from the newest), or 0 (done)."""

    engine: int | None = None
    gateway: int | None = None

    def get(self, journal: JournalName) -> int | None:
        """The position in ``journal``."""
        return self.engine if journal == "engine" else self.gateway

    def encode(self) -> str:
        """``e<engine>.g<gateway>``, an empty number meaning "from the newest"."""
        return f"e{'' if self.engine is None else self.engine}.g{'' if self.gateway is None else self.gateway}"

    @classmethod
    def parse(cls, raw: str) -> Cursor:
        """Parse :meth:`encode` output; raises a 400 ``invalid_field`` otherwise."""
        match = _CURSOR.fullmatch(raw)
        if match is None:
            raise _invalid("before must be a cursor from a previous page's next (e<seq>.g<seq>)")
        engine, gateway = (int(v) if v else None for v in match.groups())
        return cls(engine=engine, gateway=gateway)

    @property
    def done(self) -> bool:
        """Both journals are exhausted."""
        return self.engine == 0 and self.gateway == 0


def parse_time_filter(name: str, raw: str) -> dt.datetime:
    """Parse a ``since``/``until`` value: RFC 3339 with a zone, ``YYYY-MM-DD``, or a zone-less time as UTC.

    The zone-less forms are what a ``datetime-local`` input sends without
    script (``2025-01-31T09:00``) and what the panel shows (``2025-01-31
    09:00``); both are UTC. Raises 400 ``invalid_field``.
    """
    try:
        if len(raw) == 10:
            return dt.datetime.fromisoformat(raw).replace(tzinfo=dt.UTC)
        if _LOCAL_TIME.fullmatch(raw):
            return dt.datetime.fromisoformat(raw).replace(tzinfo=dt.UTC)
        parsed = parse_time(raw)
    except (ValueError, OverflowError):  # OverflowError: a time before year 1 in UTC
        parsed = None
    if parsed is None:
        raise _invalid(
            f"{name} must be a date (YYYY-MM-DD) or a time (RFC 3339, e.g. 2025-01-31T09:00:00Z; "
            f"or 2025-01-31 09:00; without a zone it is UTC)"
        )
    return parsed


@attrs.frozen(kw_only=True)
class TimelineQuery:
    """A filter over both journals.

    ``actor`` matches the start of the actor (``ali`` finds ``alice``),
    ``action``, ``outcome`` (``data.outcome``) and ``job_id`` match exactly,
    ``since`` is inclusive and ``until`` exclusive.
    """

    actor: str | None = None
    action: str | None = None
    outcome: str | None = None
    job_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    journals: tuple[JournalName, ...] = JOURNALS
    limit: int = DEFAULT_LIMIT
    cursor: Cursor = Cursor()

    @classmethod
    def from_params(cls, params: Mapping[str, str], *, default_limit: int = DEFAULT_LIMIT) -> TimelineQuery:
        """Build a query from request parameters (empty values mean "not given"); 400 for a bad value."""
        values = {k: v.strip() for k, v in params.items() if k in PARAMS and v.strip()}
        actor, job_id = values.get("actor"), values.get("jobId")
        if actor is not None and (len(actor) > MAX_FILTER_CHARS or not actor.isprintable()):
            raise _invalid(f"actor must be 1 to {MAX_FILTER_CHARS} printable characters")
        if job_id is not None and not JOB_ID.fullmatch(job_id):
            raise _invalid("jobId must be a job id (letters, digits and -, at most 64)")
        action, outcome = values.get("action"), values.get("outcome")
        for name, word in (("action", action), ("outcome", outcome)):
            if word is not None and not _WORD.fullmatch(word):
                raise _invalid(f"{name} must be a name such as job_run (a-z, 0-9 and _, at most 64)")
        since = parse_time_filter("since", values["since"]) if "since" in values else None
        until = parse_time_filter("until", values["until"]) if "until" in values else None
        if since is not None and until is not None and until <= since:
            raise _invalid("until must be after since")
        journal = values.get("journal", "all")
        if journal not in ("all", *JOURNALS):
            raise _invalid("journal must be engine, gateway or all")
        journals: tuple[JournalName, ...] = JOURNALS if journal == "all" else (journal,)  # type: ignore[assignment]
        limit = default_limit
        if "limit" in values:
            # The value as sent, not stripped: " 5" is no number (shared.web.parse_decimal).
            parsed = parse_decimal(params["limit"])
            if parsed is None or not 1 <= parsed <= MAX_LIMIT:
                raise _invalid(f"limit must be a number from 1 to {MAX_LIMIT}")
            limit = parsed
        cursor = Cursor.parse(values["before"]) if "before" in values else Cursor()
        return cls(
            actor=actor,
            action=action,
            outcome=outcome,
            job_id=job_id,
            since=since,
            until=until,
            journals=journals,
            limit=limit,
            cursor=cursor,
        )

    def params(self) -> dict[str, str]:
        """The query as request parameters (without the cursor and the limit), for links to other pages."""
        out = {
            "actor": self.actor,
            "action": self.action,
            "outcome": self.outcome,
            "jobId": self.job_id,
            "since": format_time(self.since),
            "until": format_time(self.until),
            "journal": self.journals[0] if len(self.journals) == 1 else None,
        }
        return {k: v for k, v in out.items() if v}


@attrs.frozen(kw_only=True)
class Timeline:
    """One page: records newest first (each with ``journal``), the next page's cursor, the engine's state."""

    records: list[dict[str, Any]]
    next: Cursor | None
    engine: Literal["up", "down", "skipped"]
    warning: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of ``GET /api/admin/audit``."""
        return {
            "records": self.records,
            "next": self.next.encode() if self.next else None,
            "engine": self.engine,
            "warning": self.warning,
        }


def _is_record(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("seq"), int)
        and isinstance(item.get("at"), str)
        and isinstance(item.get("data"), dict)
    )


async def _engine_records(
    request: web.Request, actor: str, query: TimelineQuery, before: int | None
) -> list[dict[str, Any]] | str:
    """The engine's records for ``query`` (newest first), or why they are unavailable."""
    params = {"limit": str(query.limit)}
    for name, value in (
        ("actorPrefix", query.actor),
        ("action", query.action),
        ("outcome", query.outcome),
        ("jobId", query.job_id),
        ("since", format_time(query.since)),
        ("until", format_time(query.until)),
        ("before", None if before is None else str(before)),
    ):
        if value is not None:
            params[name] = value
    try:
        resp = await request.app[ENGINE_CLIENT].call(
            "GET", "api/audit", actor=actor, query=params, request_id=request_id_of(request)
        )
    except GatewayError as exc:
        return exc.message
    if resp.status == 404:
        return "this engine has no audit API (GET /api/audit answered 404)"
    if resp.status != 200 or not resp.is_json:
        return f"the engine answered {resp.status}"
    try:
        items = json.loads(resp.body)
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(_is_record(item) for item in items):
        return "the engine answered with something that is not a list of audit records"
    return items


async def _gateway_records(request: web.Request, query: TimelineQuery, before: int | None) -> list[dict[str, Any]]:
    journal = request.app[AUDIT].journal
    if journal is None:
        return []
    found = await journal.query(
        AuditQuery(
            job_id=query.job_id,
            actor_prefix=query.actor,
            action=query.action,
            outcome=query.outcome,
            since=query.since,
            until=query.until,
            before=before,
            limit=query.limit,
        )
    )
    return [record.to_json() for record in found]


async def read_timeline(request: web.Request, actor: str, query: TimelineQuery) -> Timeline:
    """Return one page of the merged timeline for ``query``, asking the engine as ``actor`` (see the module doc)."""
    fetched: dict[JournalName, list[dict[str, Any]]] = {}
    engine_state: Literal["up", "down", "skipped"] = "skipped"
    warning = None
    for name in query.journals:
        before = query.cursor.get(name)
        if before == 0:
            continue  # this journal has no older records
        if name == "gateway":
            fetched[name] = await _gateway_records(request, query, before)
            continue
        result = await _engine_records(request, actor, query, before)
        if isinstance(result, str):
            engine_state, warning = "down", f"Engine audit unavailable: {result}. Only the gateway's records are shown."
        else:
            engine_state, fetched[name] = "up", result
    merged = [{**record, "journal": name} for name, records in fetched.items() for record in records]
    # Newest first; within one millisecond, higher seqs first, the engine's before the gateway's.
    merged.sort(key=lambda r: (r["at"], r["journal"] == "engine", r["seq"]), reverse=True)
    page = merged[: query.limit]
    positions: dict[JournalName, int | None] = {}
    for name in JOURNALS:
        if name not in query.journals:
            positions[name] = 0
        elif name not in fetched:
            positions[name] = query.cursor.get(name)  # exhausted (0) or not read this time (engine down)
        else:
            taken = [r["seq"] for r in page if r["journal"] == name]
            rest = len(fetched[name]) - len(taken)
            if rest == 0 and len(fetched[name]) < query.limit:
                positions[name] = 0  # everything it had is on this page
            else:
                positions[name] = min(taken) if taken else query.cursor.get(name)
    cursor = Cursor(engine=positions["engine"], gateway=positions["gateway"])
    # Without a record on this page there is nothing to page from (an engine that stays down would loop).
    return Timeline(
        records=page, next=None if cursor.done or not page else cursor, engine=engine_state, warning=warning
    )


def details(record: dict[str, Any]) -> list[tuple[str, str]]:
    """A record's ``data`` as (name, text) pairs for display: strings as they are, the rest as JSON, capped."""
    data = record.get("data")
    out = []
    for key, value in sorted(data.items()) if isinstance(data, dict) else ():
        if key in _COLUMNS or value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
        out.append((str(key), text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "…"))
    return out


#: Detail fields that say most about a record, shown first in its one-line summary.
_TELLING: Final = ("reason", "error", "code", "status", "name", "type", "count", "format", "filter", "exitCode")
#: Detail fields every gateway record has: in its summary only when it has nothing else.
_ROUTINE: Final = frozenset({"userAgent", "requestId", "method", "path", "intentSeq"})


def summary(record: dict[str, Any], *, fields: int = 3) -> str:
    """A record's details in one line (the telling fields first, routine request fields last), for a folded row."""
    pairs = details(record)
    rank = {key: i for i, key in enumerate(_TELLING)}
    pairs.sort(key=lambda kv: (kv[0] in _ROUTINE, rank.get(kv[0], len(rank))))
    return " · ".join(f"{key}: {value}" for key, value in pairs[:fields])


def timeline_context(timeline: Timeline) -> dict[str, Any]:
    """Template context for ``_audit.html`` (the audit page and the job page's audit section)."""
    return {
        "audit_records": timeline.records,
        "audit_engine": timeline.engine,
        "audit_warning": timeline.warning,
        "audit_details": details,
        "audit_summary": summary,
    }
