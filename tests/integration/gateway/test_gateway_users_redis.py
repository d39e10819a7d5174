"""Several gateways on one Redis: a user change made on one gateway holds on the others at once.

Each gateway has its own data dir (its own users file and journal); the users
are mirrored through Redis (admin_gateway/auth/user_sync.py). Needs
``redis-server``, like test_gateway_redis.py (whose fixture starts it).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from admin_gateway.auth.users import UserStore
from tests.integration.gateway.harness import (
    ADMIN,
    PASSWORD,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
    post_login,
    session_cookie,
)
from tests.integration.gateway.test_gateway_redis import redis_url  # noqa: F401  (the fixture)


async def _pair(
    upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer, url: str
) -> tuple[GatewayServer, GatewayServer]:
    one = await make_gateway_server(upstream_engine.url, session_backend="redis", redis_url=url)
    two = await make_gateway_server(upstream_engine.url, session_backend="redis", redis_url=url)
    return one, two


async def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not synced in time"
        await asyncio.sleep(0.1)


class TestUsersAcrossGateways:
    async def test_disable_on_one_gateway_holds_on_the_other_at_once(
        self,
        upstream_engine: UpstreamEngine,
        make_gateway_server: MakeGatewayServer,
        redis_url: str,  # noqa: F811
    ) -> None:
        """Disabled on gw-1: bob's session is dead on gw-2 at once, and gw-2 refuses his sign-in at once."""
        one, two = await _pair(upstream_engine, make_gateway_server, redis_url)
        bob = await two.login(ADMIN)
        assert session_cookie(bob.client)
        alice = await one.login()
        resp = await alice.post(f"/api/admin/users/{ADMIN}/disable")
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["sessionsEnded"] == 1
        assert (await bob.client.get("/api/admin/config")).status == 401
        refused = await post_login(await two.client(), ADMIN, PASSWORD)
        assert refused.status == 401
        # And the file of gw-2 follows within the sync interval.
        await _wait_for(lambda: UserStore(two.settings.data_dir).get(ADMIN).disabled)  # type: ignore[union-attr]

    async def test_user_added_on_one_gateway_signs_in_on_the_other(
        self,
        upstream_engine: UpstreamEngine,
        make_gateway_server: MakeGatewayServer,
        redis_url: str,  # noqa: F811
    ) -> None:
        """A user added (and a password reset) on gw-1 signs in on gw-2 with the one-time password."""
        one, two = await _pair(upstream_engine, make_gateway_server, redis_url)
        alice = await one.login()
        resp = await alice.post("/api/admin/users", {"name": "carol", "role": "admin"})
        password = (await resp.json())["password"]
        signed = await post_login(await two.client(), "carol", password)
        assert signed.status == 303 and signed.headers["Location"] == "/admin/password"

    async def test_cli_change_on_one_host_reaches_the_others(
        self,
        upstream_engine: UpstreamEngine,
        make_gateway_server: MakeGatewayServer,
        redis_url: str,  # noqa: F811
        tmp_path: Path,
    ) -> None:
        """A user added with the CLI to gw-1's file is published by gw-1 and reaches gw-2's file."""
        one, two = await _pair(upstream_engine, make_gateway_server, redis_url)
        await asyncio.to_thread(UserStore(one.settings.data_dir).add, "dora", "admin", PASSWORD)
        await _wait_for(lambda: UserStore(two.settings.data_dir).get("dora") is not None)
        signed = await post_login(await two.client(), "dora", PASSWORD)
        assert signed.status == 303
