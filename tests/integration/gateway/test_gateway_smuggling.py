"""Request smuggling at the gateway: ambiguous framing is one 400, and the engine is never asked to RUN.

The attempts are in :mod:`tests.integration.smuggling`.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.gateway.harness import GatewayServer, UpstreamEngine, User
from tests.integration.smuggling import CASES, HONEST, build, exchange, statuses


def _gateway_inner(gateway_server: GatewayServer, alice: User, job_id: str) -> tuple[dict[str, str], str]:
    """The signed-in headers of ``alice`` and a raw RUN of ``job_id`` through the gateway."""
    cookie = "; ".join(f"{c.key}={c.value}" for c in alice.client.session.cookie_jar)
    signed_in = {"Cookie": cookie, "X-CSRF-Token": alice.csrf, "Origin": gateway_server.origin}
    host = gateway_server.origin.split("://", 1)[1]
    inner = (
        f"POST /api/admin/engine/jobs/{job_id}/run HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        f"Cookie: {cookie}\r\nX-CSRF-Token: {alice.csrf}\r\nOrigin: {gateway_server.origin}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )
    return signed_in, inner


class TestGatewaySmuggling:
    async def test_control_the_inner_run_is_a_working_request(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """With honest framing the gateway answers both requests and forwards the RUN (the attack is real)."""
        alice: User = await gateway_server.login()
        job_id = await upstream_engine.create()
        signed_in, inner = _gateway_inner(gateway_server, alice, job_id)
        port = gateway_server.server.port
        assert port is not None
        auth = "".join(f"{k}: {v}\r\n" for k, v in signed_in.items())
        answer = await exchange(port, HONEST.format(path="/api/admin/engine/jobs", auth=auth, inner=inner))
        assert len(statuses(answer)) == 2, answer
        assert upstream_engine.count("POST", r"/run$") == 1

    @pytest.mark.parametrize("case", sorted(CASES))
    async def test_ambiguous_framing_is_one_400_and_the_engine_is_never_asked(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer, case: str
    ) -> None:
        """The gateway answers one 400, closes, and never forwards the smuggled RUN."""
        alice: User = await gateway_server.login()
        job_id = await upstream_engine.create()
        signed_in, inner = _gateway_inner(gateway_server, alice, job_id)
        port = gateway_server.server.port
        assert port is not None
        answer = await exchange(port, build(case, path="/api/admin/engine/jobs", headers=signed_in, inner=inner))
        assert statuses(answer) == [400], answer
        await asyncio.sleep(0.2)
        assert upstream_engine.count("POST", r"/run$") == 0
        assert await upstream_engine.status(job_id) == "READY"
