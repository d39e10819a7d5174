"""The engine's event hub (:class:`shared.sse.EventHub`) as app state.

It is fed one :meth:`~shared.sse.EventHub.publish` per committed change, in
seq order: by the embedded store as it applies a change, by a PostgreSQL
node's listener as it reads the change feed (:mod:`engine_hub.store.changes`),
so a change made on node A reaches a stream open on node B.
``GET /api/events`` (:mod:`engine_hub.http.events`) serves its streams.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from shared.sse import EventHub

__all__ = ["EVENTS", "EventHub"]

#: The app's event hub.
EVENTS: Final = web.AppKey("events", EventHub)
