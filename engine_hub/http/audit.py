"""``GET /api/audit``: the engine's journal records, newest first (admin token only).

Query: ``jobId``, ``actor``, ``action`` (exact matches), ``actorPrefix``
(the start of the actor), ``outcome`` (``data.outcome``), ``since`` (inclusive) and
``until`` (exclusive) as RFC 3339 times with a timezone (or a bare
``YYYY-MM-DD``, midnight UTC), ``limit`` (1-1000, default 100) and
``before`` (a seq: only records older than it). The answer is a bare JSON
array of records in the journal's wire shape ``{seq, at, actor, source,
action, jobId, data, prev, hash}``; when the page is full, a ``Link:
<...&before=<last seq>>; rel="next"`` header points at the next page.
Works the same on a durable and an ``--ephemeral`` engine.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Final

from aiohttp import web

from engine_hub.errors import EngineError, InvalidField
from engine_hub.http.jobs import reject_unknown_query
from engine_hub.jobs.service import SERVICE
from engine_hub.store.entry import encode_wire
from shared.contract import DEFAULT_PAGE_LIMIT, MAX_FILTER_CHARS, MAX_PAGE_LIMIT, parse_time
from shared.journal.chain import AuditQuery
from shared.web import parse_int_query

AUDIT_QUERY: Final = frozenset(
    {"jobId", "actor", "actorPrefix", "action", "outcome", "since", "until", "limit", "before"}
)


def _time_param(request: web.Request, name: str) -> dt.datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        if len(raw) == 10:  # a bare date means midnight UTC
            return dt.datetime.fromisoformat(raw).replace(tzinfo=dt.UTC)
        return parse_time(raw)
    except ValueError:
        raise InvalidField(
            f"{name} must be an RFC 3339 time with a timezone (e.g. 2025-01-31T09:00:00Z) "
            f"or a date (YYYY-MM-DD); got {raw!r}"
        ) from None


def _text_param(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    if raw is not None and (not raw or len(raw) > MAX_FILTER_CHARS or not raw.isprintable()):
        raise InvalidField(f"{name} must be 1 to {MAX_FILTER_CHARS} printable characters")
    return raw


async def audit(request: web.Request) -> web.Response:
    """``GET /api/audit``: matching journal records, newest first, paged by ``before`` (see the module doc)."""
    reject_unknown_query(request, AUDIT_QUERY)
    since, until = _time_param(request, "since"), _time_param(request, "until")
    if since is not None and until is not None and until <= since:
        raise InvalidField("until must be after since")
    limit = parse_int_query(request, "limit", default=DEFAULT_PAGE_LIMIT, low=1, high=MAX_PAGE_LIMIT, error=EngineError)
    before = None
    if "before" in request.query:
        before = parse_int_query(request, "before", default=0, low=1, high=2**63 - 1, error=EngineError)
    query = AuditQuery(
        job_id=_text_param(request, "jobId"),
        actor=_text_param(request, "actor"),
        actor_prefix=_text_param(request, "actorPrefix"),
        action=_text_param(request, "action"),
        outcome=_text_param(request, "outcome"),
        since=since,
        until=until,
        before=before,
        limit=limit,
    )
    records = await request.app[SERVICE].backend.audit(query)
    headers = {}
    if len(records) == limit and records[-1].seq > 1:
        params = [(k, v) for k, v in request.query.items() if k != "before"]
        params.append(("before", str(records[-1].seq)))
        headers["Link"] = f'<{request.path}?{urllib.parse.urlencode(params)}>; rel="next"'
    body = b"[" + b",".join(encode_wire(r.to_json()) for r in records) + b"]"
    return web.Response(body=body, content_type="application/json", headers=headers)
