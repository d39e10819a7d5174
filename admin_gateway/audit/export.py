"""The audit timeline as a download: CSV or JSON Lines, streamed page by page, and audited as an export.

``GET /api/admin/audit/export?format=csv|jsonl&<filters>`` (``csv`` by default; the handler is
:func:`admin_gateway.http.audit_page.export_audit`) writes the records the
audit page's filter selects, newest first, reading the timeline
:data:`PAGE` records at a time: memory stays within one page however long
the trail is.

Each export is on the record, in the gateway's journal, before a byte
leaves: ``audit_export_requested`` (who, filter, format) is written fail
closed, and ``audit_export`` follows with ``count``, the records written
(outcome ``accepted``, or ``error`` with ``reason`` when the download was cut
short). An export never silently leaves out the engine's records: if the
engine cannot be read the export fails (502 before the first byte; after
it, the connection is cut, so the file is visibly incomplete).

CSV has the columns :data:`CSV_COLUMNS` (``data`` as JSON); a text cell that
starts like a spreadsheet formula (``= + - @``, tab, CR) gets a leading
``'`` (:func:`shared.journal.tools.csv_cell`). JSON Lines has one record per
line in the shape of ``GET /api/admin/audit``'s records.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any, Final, Literal

import attrs
from aiohttp import web

from admin_gateway.audit.timeline import MAX_LIMIT, TimelineQuery, read_timeline
from admin_gateway.errors import GatewayError
from shared.contract import ErrorCode
from shared.journal.chain import canonical_json
from shared.journal.tools import csv_cell

ExportFormat = Literal["csv", "jsonl"]
#: ``format`` values and their media types.
MEDIA_TYPES: Final[dict[str, str]] = {"csv": "text/csv", "jsonl": "application/jsonl"}
#: Records read from the timeline per step.
PAGE: Final = MAX_LIMIT
CSV_COLUMNS: Final = (
    "journal",
    "seq",
    "at",
    "actor",
    "source",
    "action",
    "jobId",
    "outcome",
    "data",
    "prev",
    "hash",
)


class EngineGone(GatewayError):
    """502 ``engine_unavailable``: the engine's records cannot be read, so no complete export can be made."""

    status = 502
    code = ErrorCode.ENGINE_UNAVAILABLE


def export_format(raw: str | None) -> ExportFormat:
    """The ``format`` parameter (``csv`` when not given); 400 ``invalid_field`` unless ``csv`` or ``jsonl``."""
    if raw is None or raw == "csv":
        return "csv"
    if raw == "jsonl":
        return "jsonl"
    raise GatewayError("format must be csv or jsonl", code=ErrorCode.INVALID_FIELD)


def _text(value: Any) -> str:
    return csv_cell(value) if isinstance(value, str) else ""


class ExportWriter:
    """Turns timeline records into the export's text, one format for the whole download."""

    def __init__(self, fmt: ExportFormat) -> None:
        self._fmt = fmt
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, lineterminator="\n")

    def header(self) -> str:
        """The text before the first record (the CSV header row; nothing for JSON Lines)."""
        if self._fmt == "jsonl":
            return ""
        self._csv.writerow(CSV_COLUMNS)
        return self._take()

    def lines(self, records: list[dict[str, Any]]) -> str:
        """The text of ``records`` (each a timeline record: a journal record plus ``journal``)."""
        if self._fmt == "jsonl":
            return "".join(canonical_json(r).decode() + "\n" for r in records)
        for r in records:
            data = r.get("data")
            outcome = data.get("outcome") if isinstance(data, dict) else None
            self._csv.writerow(
                [
                    _text(r.get("journal")),
                    r.get("seq"),
                    _text(r.get("at")),
                    _text(r.get("actor")),
                    _text(r.get("source")),
                    _text(r.get("action")),
                    _text(r.get("jobId")),
                    _text(outcome),
                    canonical_json(data).decode(),
                    _text(r.get("prev")),
                    _text(r.get("hash")),
                ]
            )
        return self._take()

    def _take(self) -> str:
        text = self._buf.getvalue()
        self._buf.seek(0)
        self._buf.truncate()
        return text


async def export_pages(request: web.Request, actor: str, query: TimelineQuery) -> AsyncIterator[list[dict[str, Any]]]:
    """Yield the timeline for ``query`` page by page, newest first; :class:`EngineGone` when the engine fails."""
    query = attrs.evolve(query, limit=PAGE)
    while True:
        timeline = await read_timeline(request, actor, query)
        if timeline.engine == "down":
            raise EngineGone(timeline.warning or "the engine's audit records cannot be read")
        if timeline.records:
            yield timeline.records
        if timeline.next is None:
            return
        query = attrs.evolve(query, cursor=timeline.next)
