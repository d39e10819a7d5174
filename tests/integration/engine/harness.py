"""The in-process engine of the integration tests: :class:`EngineServer` and the helpers around it.

The fixtures that start it live in this folder's ``conftest.py``:
``make_engine_server(...)`` runs :func:`engine_hub.http.app.create_app`
under pytest-aiohttp's test server (an ephemeral port) and returns an
:class:`EngineServer` (its ``client`` is an aiohttp ``TestClient``);
``engine_server`` is the common case: the demo types plus the ``test.*``
types of :func:`testing_types`, an admin token and a submit-scope client
token, and a :class:`MemoryJournal` the test can inspect. Jobs run as real
subprocesses through the real runner.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
from aiohttp import web
from aiohttp.test_utils import TestClient

from admin_gateway.http.app import create_app as create_gateway_app
from admin_gateway.settings import Settings as GatewaySettings
from engine_hub.http.app import create_app
from engine_hub.jobs.catalog import Catalog, ClientToken, JobType, ParamSpec, hash_token
from engine_hub.jobs.demo_types import demo_types
from engine_hub.settings import Settings
from shared.journal.chain import Journal, Record
from shared.journal.postgres import AUDIT_COLUMNS, record_of_row
from shared.pg import connect

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
CLIENT_TOKEN = "test-client-token-fedcba9876543210"
CLIENT_NAME = "crm"
FINAL = frozenset({"DONE", "FAILED"})

#: RFC 3339 UTC with milliseconds, as ``shared.contract.format_time`` writes it.
RFC3339_UTC = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


def unstarted_app(process: str, tmp_path: Path) -> web.Application:
    """A fresh, not yet started ``"engine"`` (ephemeral) or ``"gateway"`` app with throwaway settings."""
    if process == "engine":
        return create_app(Settings(token=ADMIN_TOKEN, ephemeral=True, data_dir=tmp_path), environ={})
    return create_gateway_app(GatewaySettings(data_dir=tmp_path, engine_token=ADMIN_TOKEN))


def auth(token: str = ADMIN_TOKEN, actor: str | None = None) -> dict[str, str]:
    """Return request headers carrying ``token`` (and ``X-Engine-Actor`` when given)."""
    headers = {"Authorization": f"Bearer {token}"}
    if actor is not None:
        headers["X-Engine-Actor"] = actor
    return headers


def _py(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


#: A command that appends ``ran`` to the file its ``counter`` param names: one line per run.
_COUNT = _py("import os; f = open(os.environ['JOB_PARAM_COUNTER'], 'a'); f.write('ran\\n')")


def testing_types(tmp: Path) -> tuple[JobType, ...]:
    """Job types for tests; their side effects land in files under ``tmp``.

    - ``test.count`` appends one line to ``counter`` per run (default ``tmp/count.txt``);
    - ``test.block`` (exclusive) sleeps ``seconds`` (default 60), printing ``started`` first;
    - ``test.family`` starts a grandchild, writes its pid to ``pidfile``, then sleeps;
    - ``test.required`` needs a ``target`` param;
    - ``test.chatty`` prints ``lines`` numbered lines;
    - ``test.guarded`` counts its runs like ``test.count`` (default ``tmp/guarded.txt``) and needs one
      approval besides the requester; ``test.quorum`` is the same with two.
    """
    return (
        JobType(
            name="test.count",
            description="Append a line to a file.",
            command=_COUNT,
            timeout=30.0,
            params=(ParamSpec(name="counter", type="str", default=str(tmp / "count.txt")),),
        ),
        JobType(
            name="test.block",
            description="Sleep, exclusively.",
            exclusive=True,
            command=_py(
                "import os, time; print('started', flush=True); time.sleep(int(os.environ['JOB_PARAM_SECONDS']))"
            ),
            timeout=120.0,
            params=(ParamSpec(name="seconds", type="int", default=60, min=0, max=600),),
        ),
        JobType(
            name="test.family",
            description="A job with a grandchild.",
            command=_py(
                "import os, subprocess, sys, time; "
                "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                "open(os.environ['JOB_PARAM_PIDFILE'], 'w').write(str(p.pid)); "
                "print('ready', flush=True); time.sleep(600)"
            ),
            timeout=120.0,
            params=(ParamSpec(name="pidfile", type="str", default=str(tmp / "grandchild.pid")),),
        ),
        JobType(
            name="test.required",
            description="Needs a param.",
            command=_py("pass"),
            timeout=30.0,
            params=(ParamSpec(name="target", type="str", required=True),),
        ),
        JobType(
            name="test.chatty",
            description="Print numbered lines.",
            command=_py("import os\nfor i in range(int(os.environ['JOB_PARAM_LINES'])): print('line', i)"),
            timeout=30.0,
            params=(ParamSpec(name="lines", type="int", default=5, min=0, max=100_000),),
        ),
        *(
            JobType(
                name=name,
                description=f"Append a line to a file, once {approvers} other person(s) approved.",
                command=_COUNT,
                timeout=30.0,
                params=(ParamSpec(name="counter", type="str", default=str(tmp / "guarded.txt")),),
                approval="required",
                approvers=approvers,
            )
            for name, approvers in (("test.guarded", 1), ("test.quorum", 2))
        ),
    )


def make_test_catalog(tmp: Path) -> Catalog:
    """Return the demo types, the ``test.*`` types and one submit client (``crm``)."""
    types = {t.name: t for t in (*demo_types(), *testing_types(tmp))}
    return Catalog(
        types=types, clients=(ClientToken(name=CLIENT_NAME, scope="submit", token_sha256=hash_token(CLIENT_TOKEN)),)
    )


@attrs.define
class EngineServer:
    """A running in-process engine app (ephemeral port) and request helpers that fail loudly on unexpected answers."""

    client: TestClient[web.Request, web.Application]
    journal: Journal | None
    store_url: str | None = None

    async def records(self) -> list[Record]:
        """Every audit record the engine wrote, oldest first (its journal's, or its PostgreSQL chain's)."""
        if self.journal is not None:
            return list(self.journal.recent())
        assert self.store_url is not None
        conn = await connect(self.store_url)
        try:
            cur = await conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE chain = 'engine' ORDER BY seq")
            return [record_of_row(row) for row in await cur.fetchall()]
        finally:
            await conn.close()

    async def create(
        self,
        type_name: str,
        params: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a job (expecting 201) and return it."""
        body: dict[str, Any] = {"type": type_name}
        if params is not None:
            body["params"] = dict(params)
        if name is not None:
            body["name"] = name
        resp = await self.client.post("/api/jobs", json=body, headers=headers or auth())
        assert resp.status == 201, await resp.text()
        job: dict[str, Any] = await resp.json()
        return job

    async def run(
        self, job_id: str, *, reason: str | None = None, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Run a job (expecting 202) and return the job from the answer."""
        body = {"reason": reason} if reason is not None else {}
        resp = await self.client.post(f"/api/jobs/{job_id}/run", json=body, headers=headers or auth())
        assert resp.status == 202, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return dict(answer["job"])

    async def job(self, job_id: str) -> dict[str, Any]:
        """Return a job (expecting 200)."""
        resp = await self.client.get(f"/api/jobs/{job_id}", headers=auth())
        assert resp.status == 200, await resp.text()
        job: dict[str, Any] = await resp.json()
        return job

    async def wait_for(self, job_id: str, statuses: Iterable[str] = FINAL, *, timeout: float = 20.0) -> dict[str, Any]:
        """Poll a job until its status is one of ``statuses``; fail after ``timeout`` seconds."""
        return await wait_for_status(self.client, job_id, statuses, timeout=timeout)


async def wait_for_status(
    client: TestClient[web.Request, web.Application],
    job_id: str,
    statuses: Iterable[str] = FINAL,
    *,
    timeout: float = 20.0,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Poll ``GET /api/jobs/{id}`` until the status is in ``statuses``; fail after ``timeout`` seconds."""
    wanted = frozenset(statuses)
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resp = await client.get(f"/api/jobs/{job_id}", headers=headers or auth())
        assert resp.status == 200, await resp.text()
        job = await resp.json()
        if job["status"] in wanted:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not reach {sorted(wanted)} within {timeout}s: {job}")


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` (plain or async) until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout

    async def holds() -> bool:
        value = predicate()
        return await value if not isinstance(value, bool) else value

    while not await holds():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.02)


MakeEngineServer = Callable[..., Awaitable[EngineServer]]
