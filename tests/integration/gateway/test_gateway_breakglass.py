"""Break-glass for SAFE_MODE through real gateways in front of a real engine (issue 15).

The engine and the gateways share one injected clock (:class:`FakeClock`):
a window expires because the test moves time, never because it sleeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from admin_gateway.auth.users import USERS_FILE
from shared.journal.chain import GENESIS
from shared.journal.postgres import ChainCheck, record_of_row
from shared.journal.tools import verify
from tests.integration.gateway.harness import (
    ADMIN,
    ENGINE_TOKEN,
    SUPER,
    FakeClock,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
    User,
    start_upstream_engine,
    users_file_text,
)

#: The second super_admin, who approves alice's requests.
SECOND = "carol"
OVERRIDE = "/api/admin/safe-mode/override"
RUN_ROUTE = r"^/api/jobs/[^/]+/run$"
_ENGINE_AUTH = {"Authorization": f"Bearer {ENGINE_TOKEN}"}
#: An engine audit record's keys, in the order of ``shared.journal.postgres.AUDIT_COLUMNS``.
RECORD_KEYS = ("seq", "at", "actor", "source", "action", "jobId", "data", "prev", "hash")


@pytest.fixture
async def engine(aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> UpstreamEngine:
    """The real engine on the gateways' clock (its sweep idle: the checks alone must close the window)."""
    return await start_upstream_engine(aiohttp_server, aiohttp_client, tmp_path, clock=clock, override_sweep=3600.0)


async def _gateway(make_gateway_server: MakeGatewayServer, engine: UpstreamEngine, **settings: Any) -> GatewayServer:
    settings.setdefault("safe_mode", True)
    gateway = await make_gateway_server(engine.url, **settings)
    (gateway.settings.data_dir / USERS_FILE).write_text(users_file_text((SECOND, "super_admin")))
    return gateway


async def _run(user: User, job_id: str) -> tuple[int, Any]:
    resp = await user.post(f"/api/admin/engine/jobs/{job_id}/run", {"reason": "INC-1"})
    return resp.status, await resp.json()


async def _request(user: User, minutes: int = 1) -> dict[str, Any]:
    resp = await user.post(OVERRIDE, {"reason": "INC-1: reindex now", "minutes": minutes})
    assert resp.status == 201, await resp.text()
    window: dict[str, Any] = (await resp.json())["window"]
    return window


async def _change(user: User, window_id: str, verb: str) -> tuple[int, Any]:
    resp = await user.post(f"{OVERRIDE}/{window_id}/{verb}")
    return resp.status, await resp.json()


async def _config(user: User) -> dict[str, Any]:
    resp = await user.client.get("/api/admin/config")
    assert resp.status == 200
    config: dict[str, Any] = await resp.json()
    return config


class TestBreakGlass:
    async def test_runs_are_allowed_only_inside_an_approved_window(
        self, engine: UpstreamEngine, make_gateway_server: MakeGatewayServer, clock: FakeClock
    ) -> None:
        """Under SAFE_MODE a run is refused, allowed once a second person opened a window, refused 1 s after it."""
        gateway = await _gateway(make_gateway_server, engine)
        alice, carol = await gateway.login(SUPER), await gateway.login(SECOND)
        job_ids = [await engine.create() for _ in range(3)]
        status, body = await _run(alice, job_ids[0])
        assert (status, body["code"]) == (403, "safe_mode")
        window = await _request(alice, minutes=1)
        assert (await _change(alice, window["id"], "approve"))[1]["code"] == "self_approval"
        assert (await _run(alice, job_ids[0]))[0] == 403
        status, body = await _change(carol, window["id"], "approve")
        assert status == 200, body
        shown = (await _config(alice))["safeModeOverride"]
        assert (shown["requestedBy"], shown["approvedBy"], shown["reason"], shown["state"]) == (
            SUPER,
            SECOND,
            "INC-1: reindex now",
            "open",
        )
        assert shown["until"] == "2033-05-18T03:34:20.000Z"  # EPOCH + 1 minute
        status, body = await _run(alice, job_ids[0])
        assert status == 202, body
        run = [c for c in engine.calls if c[0] == "POST" and c[1].endswith(f"{job_ids[0]}/run")]
        assert len(run) == 1
        clock.advance(59)
        assert (await _run(carol, job_ids[1]))[0] == 202
        clock.advance(2)  # one second past until; the gateway's cache is still warm
        before = engine.count("POST", RUN_ROUTE)
        status, body = await _run(alice, job_ids[2])
        assert (status, body["code"]) == (403, "safe_mode")
        assert engine.count("POST", RUN_ROUTE) == before  # refused by the gateway's clock: the engine is not asked
        assert await engine.status(job_ids[2]) == "READY"
        assert (await _config(alice))["safeModeOverride"] is None  # the banner goes at the end, cached or not
        # A new request first records the old window's expiry: every step is in the engine's verified chain.
        await _request(carol)
        resp = await engine.client.get("/api/audit", params={"limit": "1000"}, headers=_ENGINE_AUTH)
        chain = [record_of_row([r[k] for k in RECORD_KEYS]) for r in (await resp.json())[::-1]]
        checker = ChainCheck(where="engine", start=(1, GENESIS))
        assert [checker.check(r) for r in chain] == [None] * len(chain)
        assert [r.action for r in chain if r.action.startswith("safe_mode_override")] == [
            "safe_mode_override_requested",
            "safe_mode_override_approved",
            "safe_mode_override_expired",
            "safe_mode_override_requested",
        ]
        assert [r.data.get("overrideId") for r in chain if r.action == "run_requested"] == [window["id"]] * 2
        records = gateway.audit_records()
        runs = [r for r in records if r.action == "job_run" and r.data["outcome"] == "accepted"]
        assert [r.data["overrideId"] for r in runs] == [window["id"], window["id"]]
        actions = {r.action for r in records}
        assert {"safe_mode_override_request", "safe_mode_override_approve"} <= actions
        assert verify(gateway.audit_dir).ok

    async def test_an_approval_that_starts_a_run_goes_through_the_window(
        self, engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Under SAFE_MODE approving is refused; inside a window the approval starts the run, which names it."""
        gateway = await _gateway(make_gateway_server, engine)
        alice, carol = await gateway.login(SUPER), await gateway.login(SECOND)
        job_id = await engine.create("demo.guarded")
        window = await _request(alice, minutes=5)
        assert (await _change(carol, window["id"], "approve"))[0] == 200
        status, body = await _run(alice, job_id)  # a run request, opened through the window
        assert status == 202, body
        assert body["job"]["runRequest"]["state"] == "open"
        assert (await _change(alice, window["id"], "end"))[0] == 200
        resp = await carol.post(f"/api/admin/engine/jobs/{job_id}/approve", {"reason": "checked"})
        assert (resp.status, (await resp.json())["code"]) == (403, "safe_mode")
        window = await _request(alice, minutes=5)
        assert (await _change(carol, window["id"], "approve"))[0] == 200
        resp = await carol.post(f"/api/admin/engine/jobs/{job_id}/approve", {"reason": "checked"})
        assert resp.status == 202, await resp.text()
        resp = await engine.client.get("/api/audit", params={"limit": "1000"}, headers=_ENGINE_AUTH)
        started = [r for r in await resp.json() if r["action"] == "run_requested"]
        assert [r["data"]["overrideId"] for r in started] == [window["id"]]
        approvals = [
            r for r in gateway.audit_records() if r.action == "job_approve" and r.data["outcome"] == "accepted"
        ]
        assert [r.data["overrideId"] for r in approvals] == [window["id"]]

    async def test_two_gateways_agree_on_the_window(
        self, engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Asked for at one gateway and approved at another, the window lets runs through both, and ends for both."""
        first, second = await _gateway(make_gateway_server, engine), await _gateway(make_gateway_server, engine)
        alice, carol = await first.login(SUPER), await second.login(SECOND)
        window = await _request(alice, minutes=10)
        # The second gateway sees the request too: one at a time, across gateways.
        resp = await carol.post(OVERRIDE, {"reason": "me too"})
        assert (resp.status, (await resp.json())["code"]) == (409, "override_active")
        assert (await _change(carol, window["id"], "approve"))[0] == 200
        assert (await _config(alice))["safeModeOverride"]["id"] == window["id"]
        assert (await _run(alice, await engine.create()))[0] == 202
        assert (await _run(carol, await engine.create()))[0] == 202
        status, body = await _change(carol, window["id"], "end")
        assert (status, body["window"]["state"], body["window"]["endedBy"]) == (200, "ended", SECOND)
        job_id = await engine.create()
        # The first gateway may still hold the window for a moment: the engine then refuses its id.
        status, body = await _run(alice, job_id)
        assert (status, body["code"]) in ((409, "override_closed"), (403, "safe_mode"))
        status, body = await _run(alice, job_id)
        assert (status, body["code"]) == (403, "safe_mode")
        assert await engine.status(job_id) == "READY"
        assert (await _config(alice))["safeModeOverride"] is None

    async def test_requesting_needs_safe_mode_on_and_a_super_admin(
        self, engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """SAFE_MODE off: requesting is 409 ``safe_mode_off`` (recorded); an admin is refused; no engine call."""
        gateway = await _gateway(make_gateway_server, engine, safe_mode=False)
        alice = await gateway.login(SUPER)
        resp = await alice.post(OVERRIDE, {"reason": "why not"})
        assert (resp.status, (await resp.json())["code"]) == (409, "safe_mode_off")
        bob = await (await _gateway(make_gateway_server, engine)).login(ADMIN)
        resp = await bob.post(OVERRIDE, {"reason": "why not"})
        assert resp.status == 401
        assert engine.count("POST", "safe-mode") == 0
        refused = [r for r in gateway.audit_records() if r.action == "safe_mode_override_request"]
        assert [(r.data["outcome"], r.data["code"]) for r in refused] == [("refused", "safe_mode_off")]

    async def test_bad_minutes_are_400_and_recorded(
        self, engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Minutes that are not 1-60 in plain digits ("²", thousands of digits, true) are 400, never a 500."""
        gateway = await _gateway(make_gateway_server, engine)
        alice = await gateway.login(SUPER)
        for minutes in ("\u00b2", "9" * 5000, True, "1.5", -1):
            resp = await alice.post(OVERRIDE, {"reason": "INC-1", "minutes": minutes})
            assert (resp.status, (await resp.json())["code"]) == (400, "invalid_field"), minutes
        refused = [r for r in gateway.audit_records() if r.action == "safe_mode_override_request"]
        assert len(refused) >= 4 and all(r.data["outcome"] == "refused" for r in refused)
