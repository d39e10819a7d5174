"""``GET /api/audit``: the engine's journal records, filtered and paged, admin token only."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any

import pytest

from shared.contract import format_time, utcnow
from tests.integration.engine.conftest import BOTH_STORES
from tests.integration.engine.harness import CLIENT_TOKEN, EngineServer, auth

#: The contract: every test runs against the embedded store and against PostgreSQL.
pytestmark = BOTH_STORES

RECORD_KEYS = {"seq", "at", "actor", "source", "action", "jobId", "data", "prev", "hash"}


async def audit(engine_server: EngineServer, query: str = "", *, status: int = 200) -> tuple[Any, str | None]:
    """GET /api/audit?query; return the body and the Link header."""
    resp = await engine_server.client.get(f"/api/audit{query}", headers=auth())
    assert resp.status == status, await resp.text()
    return await resp.json(), resp.headers.get("Link")


class TestAuditApi:
    async def test_records_newest_first_in_wire_shape(self, engine_server: EngineServer) -> None:
        """Records come newest first with every journal field, chained by prev/hash."""
        job = await engine_server.create("demo.echo", headers=auth(actor="alice"))
        await engine_server.run(job["id"], reason="check", headers=auth(actor="bob"))
        await engine_server.wait_for(job["id"])
        records, link = await audit(engine_server)
        assert link is None
        assert [r["action"] for r in records] == ["job_finished", "job_started", "run_requested", "job_created"]
        assert all(set(r) == RECORD_KEYS for r in records)
        assert [r["seq"] for r in records] == [4, 3, 2, 1]
        assert all(newer["prev"] == older["hash"] for newer, older in itertools.pairwise(records))
        assert (records[2]["actor"], records[2]["data"]) == ("bob", {"runBy": "bob", "reason": "check"})
        assert records[3]["data"]["createdBy"] == "alice" and records[3]["source"] == "127.0.0.1"

    async def test_filters_by_job_actor_and_time(self, engine_server: EngineServer) -> None:
        """jobId and actor match exactly; since is inclusive, until exclusive."""
        first = await engine_server.create("demo.echo", headers=auth(actor="alice"))
        created_at = (await engine_server.records())[-1].at
        middle = format_time(utcnow()) or ""
        while middle <= created_at:  # times have millisecond precision: step past alice's
            await asyncio.sleep(0.001)
            middle = format_time(utcnow()) or ""
        await engine_server.create("demo.echo", headers=auth(actor="carol"))
        by_job, _ = await audit(engine_server, f"?jobId={first['id']}")
        assert [(r["jobId"], r["action"]) for r in by_job] == [(first["id"], "job_created")]
        by_actor, _ = await audit(engine_server, "?actor=carol")
        assert [r["actor"] for r in by_actor] == ["carol"]
        later, _ = await audit(engine_server, f"?since={middle}")
        earlier, _ = await audit(engine_server, f"?until={middle}")
        assert [r["actor"] for r in later] == ["carol"] and [r["actor"] for r in earlier] == ["alice"]
        tomorrow = (utcnow() + dt.timedelta(days=1)).date().isoformat()
        assert (await audit(engine_server, f"?since={tomorrow}"))[0] == []

    async def test_before_cursor_pages_to_the_end(self, engine_server: EngineServer) -> None:
        """limit caps a page; the Link header's before= cursor walks every record once."""
        for _ in range(7):
            await engine_server.create("demo.echo")
        seen: list[int] = []
        query = "?limit=3&actor=admin"
        while True:
            page, link = await audit(engine_server, query)
            seen += [r["seq"] for r in page]
            if link is None:
                break
            assert link.endswith('>; rel="next"') and "actor=admin" in link
            query = link[link.index("?") : link.index(">")]
        assert seen == [7, 6, 5, 4, 3, 2, 1]

    @pytest.mark.parametrize(
        "query",
        [
            "?limit=0",
            "?limit=1001",
            "?limit=x",
            "?before=0",
            "?before=-3",
            "?since=yesterday",
            "?until=2025-01-01T00:00:00",
            "?since=2025-02-01&until=2025-01-01",
            "?jobid=x",
            "?actor=",
        ],
    )
    async def test_bad_parameters_are_400(self, engine_server: EngineServer, query: str) -> None:
        """Malformed or unknown parameters get a JSON 400, never a 500."""
        body, _ = await audit(engine_server, query, status=400)
        assert set(body) == {"error", "code"}

    async def test_submit_token_is_forbidden(self, engine_server: EngineServer) -> None:
        """A submit-scope client token cannot read the audit trail (403); no token is 401."""
        resp = await engine_server.client.get("/api/audit", headers=auth(CLIENT_TOKEN))
        assert (resp.status, (await resp.json())["code"]) == (403, "forbidden")
        assert (await engine_server.client.get("/api/audit")).status == 401


class TestAuditFilters:
    async def test_action_and_actor_prefix(self, engine_server: EngineServer) -> None:
        """action matches exactly and actorPrefix the start of the actor; both combine with the others."""
        job = await engine_server.create("demo.echo", headers=auth(actor="alice"))
        await engine_server.create("demo.echo", headers=auth(actor="alicia"))
        await engine_server.create("demo.echo", headers=auth(actor="bob"))
        await engine_server.run(job["id"], headers=auth(actor="alice"))
        await engine_server.wait_for(job["id"])
        created, _ = await audit(engine_server, "?action=job_created")
        assert [r["actor"] for r in created] == ["bob", "alicia", "alice"]
        by_prefix, _ = await audit(engine_server, "?actorPrefix=ali&action=job_created")
        assert [r["actor"] for r in by_prefix] == ["alicia", "alice"]
        assert (await audit(engine_server, "?actorPrefix=ALI"))[0] == []
        runs, _ = await audit(engine_server, f"?actorPrefix=alice&jobId={job['id']}&action=run_requested")
        assert [(r["actor"], r["action"]) for r in runs] == [("alice", "run_requested")]

    async def test_outcome_matches_data_outcome(self, engine_server: EngineServer) -> None:
        """outcome keeps only records whose data.outcome is that text (job records carry none)."""
        await engine_server.create("demo.echo")
        assert len((await audit(engine_server))[0]) == 1
        assert (await audit(engine_server, "?outcome=accepted"))[0] == []

    @pytest.mark.parametrize("query", ["?action=", "?outcome=", "?actorPrefix=", "?actorPrefix=" + "a" * 300])
    async def test_bad_filters_are_400(self, engine_server: EngineServer, query: str) -> None:
        """Empty or overlong new filters are a JSON 400."""
        body, _ = await audit(engine_server, query, status=400)
        assert body["code"] == "invalid_field"
