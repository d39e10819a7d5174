"""Reading Server-Sent Events in tests, as a browser's EventSource parses them (comments skipped)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import attrs


@attrs.frozen
class Message:
    """One event: its ``id`` (``None`` when the message set none), ``event`` name and ``data`` text."""

    id: str | None
    event: str
    data: str

    def json(self) -> Any:
        """``data`` parsed as JSON."""
        return json.loads(self.data)


async def messages(content: aiohttp.StreamReader) -> AsyncIterator[Message]:
    """Yield each message of a stream until it ends (``retry``-only and comment blocks yield nothing)."""
    fields: dict[str, str] = {}
    data: list[str] = []
    while True:
        raw = await content.readline()
        if not raw:
            return
        line = raw.decode().rstrip("\n").rstrip("\r")
        if not line:
            if data:
                yield Message(id=fields.get("id"), event=fields.get("event", "message"), data="\n".join(data))
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value


async def take(stream: AsyncIterator[Message], count: int, *, timeout: float = 10.0) -> list[Message]:
    """The next ``count`` messages; fails if they do not all arrive within ``timeout`` seconds."""

    async def collect() -> list[Message]:
        return [await anext(stream) for _ in range(count)]

    return await asyncio.wait_for(collect(), timeout)
