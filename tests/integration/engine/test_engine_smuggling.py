"""Request smuggling at the engine: ambiguous framing is one 400, and the RUN hidden behind it never happens.

The attempts are in :mod:`tests.integration.smuggling`.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.engine.harness import ADMIN_TOKEN, MakeEngineServer
from tests.integration.smuggling import CASES, HONEST, build, exchange, statuses


class TestEngineSmuggling:
    async def test_control_the_inner_run_is_a_working_request(self, make_engine_server: MakeEngineServer) -> None:
        """With honest framing the same two requests get two answers and the job runs (the attack is real)."""
        engine_server = await make_engine_server()
        job = await engine_server.create("test.count")
        port = engine_server.client.server.port
        assert port is not None
        inner = _engine_inner(job["id"])
        answer = await exchange(
            port,
            HONEST.format(
                path="/api/jobs",
                auth=f"Authorization: Bearer {ADMIN_TOKEN}\r\n",
                inner=inner.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n", 1),
            ),
        )
        assert len(statuses(answer)) == 2, answer
        assert (await engine_server.wait_for(job["id"]))["status"] == "DONE"

    @pytest.mark.parametrize("case", sorted(CASES))
    async def test_ambiguous_framing_is_one_400_and_the_hidden_run_never_happens(
        self, make_engine_server: MakeEngineServer, case: str
    ) -> None:
        """The engine answers one 400, closes, and the smuggled RUN does not start the job."""
        engine_server = await make_engine_server()
        job = await engine_server.create("test.count")
        bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        inner = _engine_inner(job["id"])
        port = engine_server.client.server.port
        assert port is not None
        answer = await exchange(port, build(case, path="/api/jobs", headers=bearer, inner=inner))
        assert statuses(answer) == [400], answer
        await asyncio.sleep(0.2)
        assert (await engine_server.job(job["id"]))["status"] == "READY"


def _engine_inner(job_id: str) -> str:
    return (
        f"POST /api/jobs/{job_id}/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )
