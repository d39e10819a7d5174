"""Paging of the panel's Engine log page (``/admin/engine/logs``).

The engine's log route answers its newest entries (at most
:data:`FETCH`, which is all the embedded engine keeps) without a cursor, so
the gateway pages them itself: newest first, :data:`PAGE_SIZE` per page,
each older page starting strictly before the last time the previous one
showed (``before=<RFC 3339 time>``). A cursor that is a time, not a
position, keeps pages stable while new entries arrive; entries sharing the
boundary time all stay on the earlier page, so none is skipped or repeated.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import attrs

from shared.contract import format_time, parse_time

#: Entries shown per page.
PAGE_SIZE: Final = 50
#: Entries asked of the engine (its log route's largest ``limit``).
FETCH: Final = 500


class BadCursor(ValueError):
    """``before`` is not an RFC 3339 time."""


@attrs.frozen(kw_only=True)
class LogPage:
    """One page of the log, newest first, and the ``before`` cursor of the next (older) page, if any."""

    entries: list[dict[str, Any]]
    older: str | None


def parse_cursor(raw: str) -> str | None:
    """The ``before`` parameter as the engine writes times ('' → ``None``); :class:`BadCursor` otherwise."""
    if not raw:
        return None
    try:
        return format_time(parse_time(raw))
    except (ValueError, OverflowError):
        raise BadCursor("before must be a time from an Older link (RFC 3339)") from None


def page_of(entries: Iterable[dict[str, Any]], before: str | None, *, size: int = PAGE_SIZE) -> LogPage:
    """The page of ``entries`` (each with a ``timestamp`` text or ``None``) older than ``before``, newest first."""
    # Newest first whatever order the engine answers in (RFC 3339 UTC strings sort as times;
    # ties keep the newest first: reversed, then a stable sort).
    ordered = sorted(reversed(list(entries)), key=lambda e: e["timestamp"] or "", reverse=True)  # noqa: C414
    if before is not None:
        ordered = [e for e in ordered if (e["timestamp"] or "") < before]
    shown = ordered[:size]
    if shown:
        last = shown[-1]["timestamp"]
        shown += [e for e in ordered[size:] if e["timestamp"] == last]  # the boundary time stays whole
    rest = len(ordered) > len(shown)
    older = shown[-1]["timestamp"] if rest and shown and shown[-1]["timestamp"] else None
    return LogPage(entries=shown, older=older)
