"""Job names for the audit page: the jobs its records name, asked of the engine, bounded and cached briefly.

A journal record carries a job's id, not its name, and the engine has no
"names of these ids" route, so the page asks ``GET /api/jobs/{id}`` once per
job it has not seen lately. The cost stays bounded: at most
:data:`MAX_LOOKUPS` engine reads per page (the rest show their id alone),
:data:`CONCURRENCY` at a time, each with :data:`LOOKUP_TIMEOUT` seconds;
answers (a name, or "none": unknown job, no name, engine down) are kept
:data:`TTL` seconds for at most :data:`MAX_CACHED` jobs. A name is only
ever shown next to its id, so a stale one cannot mislead about which job a
record is about.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from typing import Final

import structlog
from aiohttp import web

from admin_gateway.audit.timeline import JOB_ID
from admin_gateway.engine_client import ENGINE_CLIENT, request_id_of
from admin_gateway.errors import GatewayError

#: Engine reads one page may cause (distinct uncached job ids beyond it show no name).
MAX_LOOKUPS: Final = 50
#: Engine reads in flight at once for one page.
CONCURRENCY: Final = 8
#: Seconds one read may take.
LOOKUP_TIMEOUT: Final = 2.0
#: Seconds an answer is kept.
TTL: Final = 60.0
#: Jobs whose answers are kept at once (the oldest are dropped first).
MAX_CACHED: Final = 2000

log = structlog.get_logger("audit")


class JobNames:
    """A small time-bounded cache of job id → name (``None``: no name to show), filled from the engine."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[float, str | None]] = {}

    def cached(self, job_id: str) -> tuple[bool, str | None]:
        """Whether ``job_id`` has a fresh answer, and that answer."""
        entry = self._entries.get(job_id)
        if entry is None or entry[0] <= self._clock():
            return False, None
        return True, entry[1]

    def remember(self, job_id: str, name: str | None) -> None:
        """Keep ``name`` for ``job_id`` for :data:`TTL` seconds, dropping the oldest entries past :data:`MAX_CACHED`."""
        self._entries.pop(job_id, None)
        self._entries[job_id] = (self._clock() + TTL, name)
        while len(self._entries) > MAX_CACHED:
            del self._entries[next(iter(self._entries))]

    async def resolve(self, request: web.Request, actor: str, job_ids: Iterable[str]) -> dict[str, str]:
        """Return the names of ``job_ids`` that have one (see the module doc for the bounds), asking as ``actor``."""
        names: dict[str, str] = {}
        missing: list[str] = []
        for job_id in dict.fromkeys(job_ids):
            if not JOB_ID.fullmatch(job_id):
                continue
            fresh, name = self.cached(job_id)
            if not fresh:
                missing.append(job_id)
            elif name is not None:
                names[job_id] = name
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(job_id: str) -> None:
            async with gate:
                name = await _job_name(request, actor, job_id)
            self.remember(job_id, name)
            if name is not None:
                names[job_id] = name

        await asyncio.gather(*(one(job_id) for job_id in missing[:MAX_LOOKUPS]))
        return names


async def _job_name(request: web.Request, actor: str, job_id: str) -> str | None:
    """The job's name from the engine, or ``None`` (no such job, no name, or no answer)."""
    try:
        resp = await request.app[ENGINE_CLIENT].call(
            "GET", f"api/jobs/{job_id}", actor=actor, request_id=request_id_of(request), total=LOOKUP_TIMEOUT
        )
    except GatewayError as exc:
        log.info("audit_job_name_unavailable", job_id=job_id, error=exc.message)
        return None
    if resp.status != 200 or not resp.is_json:
        return None
    try:
        job = json.loads(resp.body)
    except ValueError:
        return None
    name = job.get("name") if isinstance(job, dict) else None
    return name if isinstance(name, str) and name else None


JOB_NAMES: Final = web.AppKey("audit_job_names", JobNames)
