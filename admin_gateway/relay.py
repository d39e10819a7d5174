"""The gateway's one stream of the engine's changes, fanned out to every panel page that watches.

A :class:`Relay` holds one upstream ``GET /api/events`` of the engine per
gateway process (opened when the first page starts watching, kept until
the gateway stops), whatever the number of browser tabs, and feeds its
messages to an :class:`~shared.sse.EventHub` whose streams the pages read
(``GET /api/admin/engine/events``, :mod:`admin_gateway.http.events`).

- A change keeps the engine's seq as its id, so a page resumes at the
  gateway by ``Last-Event-ID`` and the gateway resumes at the engine from
  the newest seq it has.
- When the engine cannot resume (it says ``reset``) or is first reached,
  every page is sent ``reset``: list again.
- The engine's reachability is a message of its own: ``engine`` ``down``
  as soon as the stream breaks and no engine takes a new connection,
  ``up`` as soon as an engine answers the next stream with 200. Reconnection is
  retried at growing intervals, up to ``retry_max`` seconds apart.
- An engine that sends nothing (not even its keep-alive) for ``idle``
  seconds is taken for hung: the stream is dropped and opened again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from typing import Final, Literal

import aiohttp
import structlog
from aiohttp import web

from admin_gateway.engine_client import ENGINE_CLIENT, EngineClient
from admin_gateway.errors import GatewayError
from admin_gateway.settings import SETTINGS
from shared.sse import EventHub, FrameParser, Message, notice

log = structlog.get_logger("gateway.relay")

#: The actor the engine sees for the relay's stream (it acts for nobody).
RELAY_ACTOR: Final = "admin-gateway"
#: The first delay before reconnecting to an unreachable engine (doubled up to ``retry_max``).
FIRST_RETRY: Final = 0.25

STOPPING: Final = "the gateway is stopping"

EngineState = Literal["unknown", "up", "down"]


class Relay:
    """The engine's change stream, shared by every page of one gateway process (see the module)."""

    def __init__(
        self, client: EngineClient, hub: EventHub, *, safe_mode: bool, idle: float, retry_max: float = 2.0
    ) -> None:
        self.hub = hub
        self.safe_mode = safe_mode
        #: Whether the engine's stream is open (``unknown`` until the first attempt ends).
        self.engine: EngineState = "unknown"
        self._client = client
        self._idle = idle
        self._retry_max = retry_max
        self._synced = False  # the hub follows the engine's seq (else the next stream starts fresh)
        self._task: asyncio.Task[None] | None = None
        #: Open page streams per session id (never logged: it is the session's secret).
        self.per_session: collections.Counter[str] = collections.Counter()

    def watch(self) -> None:
        """Make sure the upstream stream is being kept open (called as each page starts watching)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="engine-events-relay")

    async def stop(self) -> None:
        """Close the upstream stream and end every page's stream (the gateway is stopping)."""
        self.hub.end_all(STOPPING)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def state(self) -> bytes:
        """The messages a new page stream starts with after its resume: the engine's state and SAFE_MODE."""
        return notice("engine", {"state": self.engine}) + notice("safe_mode", {"enabled": self.safe_mode})

    def _set_engine(self, state: EngineState, **context: object) -> None:
        if state == self.engine:
            return
        previous, self.engine = self.engine, state
        if state == "down":
            log.warning("engine_stream_down", previous=previous, **context)
        else:
            log.info("engine_stream_up", previous=previous, **context)
        self.hub.broadcast(notice("engine", {"state": state}))

    async def _run(self) -> None:
        delay = FIRST_RETRY
        while True:
            try:
                if await self._follow():
                    delay = FIRST_RETRY
                    continue  # it was open: try again at once before calling the engine down
                reason: str = "refused"
            except (GatewayError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                reason = type(exc).__name__
            self._set_engine("down", reason=reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max)

    async def _follow(self) -> bool:
        """Read one upstream stream to its end; whether it was open (the engine answered 200)."""
        target = "api/events" if not self._synced else f"api/events?after={self.hub.last_seq}"
        async with self._client.stream(target, actor=RELAY_ACTOR, idle=self._idle) as resp:
            if resp.status != 200:
                log.warning("engine_stream_refused", status=resp.status)
                return False
            # A 200 means the engine is serving again, even when it has no change to send yet.
            self._set_engine("up")
            parser = FrameParser()
            async for chunk in resp.content.iter_any():
                for message in parser.feed(chunk):
                    self._take(message)
            return True

    def _take(self, message: Message) -> None:
        """Apply one upstream message to the hub."""
        if message.id is None or not message.id.isdigit():
            return  # nothing else is sent by the engine; a stranger's message is not relayed
        seq = int(message.id)
        if message.event == "reset" or (message.event == "ready" and not self._synced):
            # What the pages hold cannot be continued from here: each lists again.
            self.hub.restart(seq, "the gateway could not follow the engine's changes: list the jobs again")
            self._synced = True
        elif message.event != "ready":
            self.hub.publish(seq=seq, action=message.event, job=message.data)


#: The app's relay.
RELAY: Final = web.AppKey("relay", Relay)


async def relay_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the engine client's): the app's :class:`Relay`; its stream closes at shutdown."""
    settings = app[SETTINGS]
    hub = EventHub(
        ring=settings.events_ring,
        client_buffer=settings.events_client_buffer,
        max_streams=settings.events_max_streams,
        heartbeat=settings.events_heartbeat,
    )
    # The engine sends a keep-alive every 15 s: two missed and a margin mean it hangs.
    relay = Relay(app[ENGINE_CLIENT], hub, safe_mode=settings.safe_mode, idle=settings.events_upstream_idle)
    app[RELAY] = relay

    async def end_streams(_: web.Application) -> None:
        # Before the server waits for its handlers: an open stream would hold it for the whole shutdown timeout.
        hub.end_all(STOPPING)

    app.on_shutdown.append(end_streams)
    try:
        yield
    finally:
        await relay.stop()
