"""Sessions in Redis: shared by several gateways, and still dead after logout or expiry.

Needs ``redis-server`` (Debian package) and the ``redis`` Python package;
``.ci/run`` installs the server, so CI always runs these.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from admin_gateway.auth.session_backends import RedisSessionBackend, SessionRecord
from tests.integration.gateway.harness import (
    PASSWORD,
    SUPER,
    MakeGatewayServer,
    UpstreamEngine,
    anonymous_flood,
    check_flood_answers,
    form_token_in,
    login,
    session_cookie,
)
from tests.requirements import missing


def _redis_server() -> str:
    path = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/sbin")
    if path is None:
        missing("REQUIRE_DEPLOY_TOOLS", "redis-server is not installed; .ci/run installs it so CI always runs this")
    pytest.importorskip("redis", reason="the redis package (extra engine-jobs[redis]) is not installed")
    return path


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A private redis-server on a free loopback port (no persistence), stopped afterwards."""
    binary = _redis_server()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class TestRedisSessions:
    async def test_two_gateways_share_sessions(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer, redis_url: str
    ) -> None:
        """A session opened on one gateway works on another; logging out on either ends it for both."""
        one = await make_gateway_server(upstream_engine.url, session_backend="redis", redis_url=redis_url)
        two = await make_gateway_server(upstream_engine.url, session_backend="redis", redis_url=redis_url)
        user = await one.login()
        cookie = session_cookie(user.client)
        assert cookie
        other = await two.client()
        other.session.cookie_jar.update_cookies({"gw_session": cookie}, other.make_url("/"))
        resp = await other.get("/api/admin/config")
        assert resp.status == 200
        assert (await resp.json())["user"] == SUPER
        out = await other.post("/logout", data={"csrf_token": user.csrf}, allow_redirects=False)
        assert out.status == 303
        assert (await user.client.get("/api/admin/config")).status == 401

    async def test_rotation_and_idle_expiry(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer, redis_url: str
    ) -> None:
        """A session id planted before login is replaced, and an idle session expires by the injected clock."""
        gw = await make_gateway_server(upstream_engine.url, session_backend="redis", redis_url=redis_url)
        client = await gw.client()
        planted = "planted-by-an-attacker-0123456789"
        client.session.cookie_jar.update_cookies({"gw_session": planted}, client.make_url("/"))
        await login(client, SUPER, "correct horse battery staple")
        assert session_cookie(client) != planted
        replay = await gw.client()
        replay.session.cookie_jar.update_cookies({"gw_session": planted}, replay.make_url("/"))
        assert (await replay.get("/api/admin/config")).status == 401
        gw.clock.advance(1801)
        assert (await client.get("/api/admin/config")).status == 401

    async def test_writing_back_does_not_revive_a_deleted_session(self, redis_url: str) -> None:
        """A refresh after a logout deleted the record (a request racing the logout) leaves it deleted."""
        backend = RedisSessionBackend(redis_url)
        try:
            record = SessionRecord(created=1.0, seen=1.0, data={"user": SUPER})
            await backend.put("k", record, 60)
            await backend.refresh("k", attrs.evolve(record, seen=2.0), 60)
            assert (await backend.get("k")) == attrs.evolve(record, seen=2.0)
            await backend.delete("k")
            await backend.refresh("k", record, 60)
            assert await backend.get("k") is None
        finally:
            await backend.close()


async def _keys(redis_url: str) -> set[str]:
    from redis import asyncio as aioredis

    redis = aioredis.Redis.from_url(redis_url)
    try:
        return {key.decode() async for key in redis.scan_iter()}
    finally:
        await redis.aclose()


class TestRedisAnonymousTraffic:
    async def test_flood_writes_no_key(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer, redis_url: str
    ) -> None:
        """A parallel anonymous flood writes no Redis key; the signed-in super_admin keeps working."""
        gw = await make_gateway_server(upstream_engine.url, session_backend="redis", redis_url=redis_url)
        alice = await gw.login()
        keys = await _keys(redis_url)
        statuses = await anonymous_flood(gw)
        assert await _keys(redis_url) == keys
        assert len([k for k in keys if k.startswith("admin_gateway:session:")]) == 1
        assert (await alice.client.get("/api/admin/config")).status == 200
        await alice.create()
        check_flood_answers(statuses)

    async def test_login_form_of_one_gateway_signs_in_on_another(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer, redis_url: str
    ) -> None:
        """Gateways sharing Redis share the form secret: a form served by one is accepted by the other."""
        one = await make_gateway_server(upstream_engine.url, session_backend="redis", redis_url=redis_url)
        two = await make_gateway_server(upstream_engine.url, session_backend="redis", redis_url=redis_url)
        client = await one.client()
        token = form_token_in(await (await client.get("/login")).text())
        form_cookie = "; ".join(f"{c.key}={c.value}" for c in client.session.cookie_jar)
        other = await two.client()
        resp = await other.post(
            "/login",
            data={"username": SUPER, "password": PASSWORD, "csrf_token": token},
            headers={"Cookie": form_cookie},
            allow_redirects=False,
        )
        assert resp.status == 303, await resp.text()
