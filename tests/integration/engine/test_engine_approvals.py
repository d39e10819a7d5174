"""Run approvals (issue 15, two-person rule) on a real engine, both stores: request, approve, reject,
withdraw, expire, at most once under concurrent approvals, the bypass guards, records and events."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest

from engine_hub.errors import Conflict
from engine_hub.jobs.catalog import Catalog
from engine_hub.jobs.service import SERVICE, JobService
from shared.contract import JOB_FIELDS, format_time, parse_time, utcnow
from shared.journal.chain import MemoryJournal
from shared.openapi import contract_schemas
from tests.integration.engine.conftest import BOTH_STORES
from tests.integration.engine.harness import EngineServer, MakeEngineServer, auth, make_test_catalog
from tests.integration.engine.test_engine_events import open_stream
from tests.sse import take

pytestmark = BOTH_STORES

PLAN_A = "a" * 64
PLAN_B = "b" * 64


def service_of(server: EngineServer) -> JobService:
    """The job service of an in-process engine."""
    return server.client.app[SERVICE]


async def post(server: EngineServer, job_id: str, verb: str, actor: str, **body: Any) -> tuple[int, dict[str, Any]]:
    """POST /api/jobs/{id}/{verb} as ``actor``; return the status and the JSON answer."""
    resp = await server.client.post(f"/api/jobs/{job_id}/{verb}", json=body, headers=auth(actor=actor))
    answer: dict[str, Any] = await resp.json()
    return resp.status, answer


async def requested(server: EngineServer, tmp_path: Path, type_name: str = "test.guarded", **body: Any) -> str:
    """Create a job of ``type_name`` (counting its runs in ``tmp_path/runs.txt``), have alice request its run."""
    job = await server.create(type_name, {"counter": str(tmp_path / "runs.txt")})
    status, answer = await post(server, job["id"], "run", "alice", reason="ticket OPS-1", **body)
    assert status == 202, answer
    return str(job["id"])


async def actions(server: EngineServer, job_id: str) -> list[tuple[str, str]]:
    """``(action, actor)`` of the job's audit records, oldest first."""
    return [(r.action, r.actor) for r in await server.records() if r.job_id == job_id]


class TestRequest:
    async def test_run_opens_a_request_and_another_persons_approval_runs_the_job(
        self, engine_server: EngineServer, tmp_path: Path
    ) -> None:
        """alice's RUN leaves the job READY with an open request; bob's approval starts it, once."""
        job = await engine_server.create("test.guarded", {"counter": str(tmp_path / "runs.txt")})
        status, answer = await post(engine_server, job["id"], "run", "alice", reason="ticket OPS-1", planSha256=PLAN_A)
        assert status == 202 and answer["job"]["status"] == "READY"
        request = answer["job"]["runRequest"]
        assert {k: request[k] for k in ("by", "reason", "required", "approvals", "state", "planSha256")} == {
            "by": "alice",
            "reason": "ticket OPS-1",
            "required": 1,
            "approvals": [],
            "state": "open",
            "planSha256": PLAN_A,
        }
        at, expires = parse_time(request["at"]), parse_time(request["expiresAt"])
        assert at is not None and expires is not None and expires - at == dt.timedelta(hours=1)
        assert not (tmp_path / "runs.txt").exists()
        status, answer = await post(
            engine_server, job["id"], "approve", "bob", reason="plan checked", planSha256=PLAN_A
        )
        assert status == 202 and answer["job"]["status"] == "RUNNING"
        done = await engine_server.wait_for(job["id"])
        assert done["status"] == "DONE" and (tmp_path / "runs.txt").read_text() == "ran\n"
        assert done["runBy"] == "alice" and done["runReason"] == "ticket OPS-1"
        assert done["runRequest"]["state"] == "approved"
        assert [(a["by"], a["reason"]) for a in done["runRequest"]["approvals"]] == [("bob", "plan checked")]
        records = [r for r in await engine_server.records() if r.job_id == job["id"]]
        assert [(r.action, r.actor) for r in records][:3] == [
            ("job_created", "admin"),
            ("run_request_opened", "alice"),
            ("run_requested", "bob"),
        ]
        opened, started = records[1].data, records[2].data
        assert opened["planSha256"] == PLAN_A and opened["reason"] == "ticket OPS-1"
        assert started["requestId"] == opened["requestId"] == request["id"]
        assert started["approvers"] == ["bob"] and started["runBy"] == "alice"
        assert started["planSha256"] == PLAN_A
        # The legacy engine log stays the original's: no entry for a run request's steps.
        logs = await (await engine_server.client.get("/engines/logs", headers=auth())).json()
        assert [e["message"] for e in logs if e["jobId"] == job["id"]][:2] == ["Job created", "Job started"]

    async def test_the_requester_cannot_approve_their_own_request(
        self, engine_server: EngineServer, tmp_path: Path
    ) -> None:
        """alice approving alice's request is 403 self_approval; nothing is recorded, nothing runs."""
        job_id = await requested(engine_server, tmp_path)
        for actor in ("alice", "Alice", "ＡＬＩＣＥ"):  # one person however the name is spelled in case or width
            status, answer = await post(engine_server, job_id, "approve", actor)
            assert (status, answer["code"]) == (403, "self_approval"), actor
        job = await engine_server.job(job_id)
        assert job["status"] == "READY" and job["runRequest"]["approvals"] == []
        assert [a for a, _ in await actions(engine_server, job_id)] == ["job_created", "run_request_opened"]

    async def test_a_quorum_needs_distinct_approvers_and_starts_at_the_last(
        self, engine_server: EngineServer, tmp_path: Path
    ) -> None:
        """With approvers = 2: bob's approval keeps it READY, bob again is 409 already_approved, carol starts it."""
        job_id = await requested(engine_server, tmp_path, "test.quorum")
        status, answer = await post(engine_server, job_id, "approve", "bob")
        assert status == 202 and answer["job"]["status"] == "READY"
        assert answer["job"]["runRequest"]["state"] == "open"
        status, answer = await post(engine_server, job_id, "approve", "bob")
        assert (status, answer["code"]) == (409, "already_approved")
        status, answer = await post(engine_server, job_id, "approve", "carol")
        assert status == 202 and answer["job"]["status"] == "RUNNING"
        await engine_server.wait_for(job_id)
        assert [a for a, _ in await actions(engine_server, job_id)][1:4] == [
            "run_request_opened",
            "run_request_approved",
            "run_requested",
        ]
        assert [a["by"] for a in (await engine_server.job(job_id))["runRequest"]["approvals"]] == ["bob", "carol"]

    async def test_a_second_run_while_a_request_is_open_is_approval_required(
        self, engine_server: EngineServer, tmp_path: Path
    ) -> None:
        """A RUN while the request waits (by anyone) is 409 approval_required and opens nothing."""
        job_id = await requested(engine_server, tmp_path)
        for actor in ("alice", "bob"):
            status, answer = await post(engine_server, job_id, "run", actor)
            assert (status, answer["code"]) == (409, "approval_required")
        assert [a for a, _ in await actions(engine_server, job_id)] == ["job_created", "run_request_opened"]

    async def test_approve_reject_and_withdraw_need_an_open_request(self, engine_server: EngineServer) -> None:
        """On a job with no request each is 409 no_run_request; a bad planSha256 or a missing reason is 400."""
        job = await engine_server.create("test.guarded")
        for verb, body in (("approve", {}), ("reject", {"reason": "no"}), ("withdraw", {})):
            status, answer = await post(engine_server, job["id"], verb, "bob", **body)
            assert (status, answer["code"]) == (409, "no_run_request"), verb
        status, answer = await post(engine_server, job["id"], "run", "alice", planSha256="ABC")
        assert (status, answer["code"]) == (400, "invalid_field")
        status, answer = await post(engine_server, job["id"], "reject", "bob")
        assert (status, answer["code"]) == (400, "invalid_field")


class TestAtMostOnce:
    @pytest.mark.parametrize("type_name", ["test.guarded", "test.quorum"])
    async def test_20_concurrent_approvals_start_the_job_exactly_once(
        self, make_engine_server: MakeEngineServer, tmp_path: Path, type_name: str
    ) -> None:
        """20 people approve at the same instant (across two nodes on PostgreSQL): one run, one started record."""
        server = await make_engine_server()
        servers = [server] if server.store_url is None else [server, await make_engine_server()]
        job_id = await requested(server, tmp_path, type_name)

        async def approve(i: int) -> tuple[int, dict[str, Any]]:
            return await post(servers[i % len(servers)], job_id, "approve", f"approver{i}")

        answers = await asyncio.gather(*(approve(i) for i in range(20)))
        statuses = Counter(status for status, _ in answers)
        approvals = 2 if type_name == "test.quorum" else 1
        assert statuses[202] == approvals and statuses[409] == 20 - approvals, answers
        assert {a["code"] for s, a in answers if s == 409} <= {"already_running", "no_run_request"}
        done = await server.wait_for(job_id)
        assert done["status"] == "DONE"
        assert (tmp_path / "runs.txt").read_text() == "ran\n"
        found = Counter(a for a, _ in await actions(server, job_id))
        assert found["run_requested"] == 1 and found["job_started"] == 1
        assert found["run_request_approved"] == approvals - 1

    async def test_concurrent_runs_open_one_request(self, make_engine_server: MakeEngineServer, tmp_path: Path) -> None:
        """10 RUNs at the same instant (across two nodes on PostgreSQL) open one request; the rest are 409."""
        server = await make_engine_server()
        servers = [server] if server.store_url is None else [server, await make_engine_server()]
        job = await server.create("test.guarded", {"counter": str(tmp_path / "runs.txt")})
        answers = await asyncio.gather(
            *(post(servers[i % len(servers)], job["id"], "run", f"requester{i}") for i in range(10))
        )
        assert Counter(status for status, _ in answers) == {202: 1, 409: 9}, answers
        assert {a["code"] for s, a in answers if s == 409} == {"approval_required"}
        assert Counter(a for a, _ in await actions(server, job["id"]))["run_request_opened"] == 1


class TestClosing:
    async def test_withdraw_is_the_requesters_and_leaves_the_job_ready(
        self, engine_server: EngineServer, tmp_path: Path
    ) -> None:
        """Only alice may withdraw her request (bob: 403 not_requester); the job stays READY, to be asked again."""
        job_id = await requested(engine_server, tmp_path)
        status, answer = await post(engine_server, job_id, "withdraw", "bob")
        assert (status, answer["code"]) == (403, "not_requester")
        status, answer = await post(engine_server, job_id, "withdraw", "alice", reason="wrong window")
        assert status == 202 and answer["job"]["status"] == "READY"
        closed = answer["job"]["runRequest"]
        assert (closed["state"], closed["closedBy"], closed["closeReason"]) == ("withdrawn", "alice", "wrong window")
        status, answer = await post(engine_server, job_id, "approve", "bob")
        assert (status, answer["code"]) == (409, "no_run_request")
        status, answer = await post(engine_server, job_id, "run", "alice")
        assert status == 202 and answer["job"]["runRequest"]["state"] == "open"
        assert answer["job"]["runRequest"]["id"] != closed["id"]
        assert not (tmp_path / "runs.txt").exists()

    async def test_reject_needs_a_reason_and_leaves_the_job_ready(
        self, engine_server: EngineServer, tmp_path: Path
    ) -> None:
        """carol rejects with a reason: the request is closed, the job READY, later approvals refused."""
        job_id = await requested(engine_server, tmp_path)
        status, answer = await post(engine_server, job_id, "reject", "carol", reason="not during the sale")
        assert status == 202 and answer["job"]["status"] == "READY"
        closed = answer["job"]["runRequest"]
        assert (closed["state"], closed["closedBy"], closed["closeReason"]) == (
            "rejected",
            "carol",
            "not during the sale",
        )
        status, answer = await post(engine_server, job_id, "approve", "bob")
        assert (status, answer["code"]) == (409, "no_run_request")
        assert (await engine_server.job(job_id))["status"] == "READY"
        assert ("run_request_rejected", "carol") in await actions(engine_server, job_id)
        assert not (tmp_path / "runs.txt").exists()

    async def test_an_approval_of_another_plan_closes_the_request(
        self, engine_server: EngineServer, tmp_path: Path
    ) -> None:
        """Approving with another planSha256 is 409 plan_changed and supersedes the request; the same plan runs."""
        job_id = await requested(engine_server, tmp_path, planSha256=PLAN_A)
        status, answer = await post(engine_server, job_id, "approve", "bob", planSha256=PLAN_B)
        assert (status, answer["code"]) == (409, "plan_changed")
        job = await engine_server.job(job_id)
        assert job["status"] == "READY" and job["runRequest"]["state"] == "superseded"
        record = next(r for r in await engine_server.records() if r.action == "run_request_superseded")
        assert (record.actor, record.data["planSha256"]) == ("bob", PLAN_B)
        status, _ = await post(engine_server, job_id, "run", "alice", planSha256=PLAN_B)
        assert status == 202
        status, answer = await post(engine_server, job_id, "approve", "bob", planSha256=PLAN_B)
        assert status == 202 and answer["job"]["status"] == "RUNNING"
        await engine_server.wait_for(job_id)

    async def test_a_request_made_on_a_plan_is_approved_only_on_a_plan(
        self, engine_server: EngineServer, tmp_path: Path
    ) -> None:
        """Without planSha256 the approval is 400 and the request stays open; a request without one takes any."""
        job_id = await requested(engine_server, tmp_path, planSha256=PLAN_A)
        status, answer = await post(engine_server, job_id, "approve", "bob")
        assert (status, answer["code"]) == (400, "invalid_field")
        job = await engine_server.job(job_id)
        assert (job["status"], job["runRequest"]["state"], job["runRequest"]["approvals"]) == ("READY", "open", [])
        planless = await requested(engine_server, tmp_path)
        status, answer = await post(engine_server, planless, "approve", "bob", planSha256=PLAN_B)
        assert status == 202 and answer["job"]["status"] == "RUNNING", answer
        await engine_server.wait_for(planless)


class TestExpiry:
    async def test_an_expired_request_is_refused_before_the_sweep_and_closed_once(
        self, engine_server: EngineServer, tmp_path: Path
    ) -> None:
        """One second past expiresAt (injected clock) an approval is 409 and the request is recorded expired once."""
        service = service_of(engine_server)
        job_id = await requested(engine_server, tmp_path)
        expires = parse_time((await engine_server.job(job_id))["runRequest"]["expiresAt"])
        assert expires is not None
        service.requests.clock = lambda: expires - dt.timedelta(seconds=1)
        assert await service.requests.expire_requests() == 0
        service.requests.clock = lambda: expires + dt.timedelta(seconds=1)
        status, answer = await post(engine_server, job_id, "approve", "bob")
        assert (status, answer["code"]) == (409, "no_run_request")
        assert "expired" in answer["error"]
        job = await engine_server.job(job_id)
        assert job["status"] == "READY"
        assert (job["runRequest"]["state"], job["runRequest"]["closedBy"]) == ("expired", "system")
        assert await service.requests.expire_requests() == 0  # already closed: no second record
        assert (await actions(engine_server, job_id)).count(("run_request_expired", "system")) == 1
        assert not (tmp_path / "runs.txt").exists()

    async def test_the_sweep_closes_expired_requests_only(self, engine_server: EngineServer, tmp_path: Path) -> None:
        """The sweep closes the request past its expiry and leaves a younger one open."""
        service = service_of(engine_server)
        base = utcnow()
        service.requests.clock = lambda: base
        old = await requested(engine_server, tmp_path)
        service.requests.clock = lambda: base + dt.timedelta(minutes=30)
        young = await requested(engine_server, tmp_path)
        service.requests.clock = lambda: base + dt.timedelta(minutes=61)
        assert await service.requests.expire_requests() == 1
        assert (await engine_server.job(old))["runRequest"]["state"] == "expired"
        assert (await engine_server.job(young))["runRequest"]["state"] == "open"
        assert (
            format_time(base + dt.timedelta(minutes=90)) == (await engine_server.job(young))["runRequest"]["expiresAt"]
        )

    async def test_a_run_after_expiry_opens_a_new_request(self, engine_server: EngineServer, tmp_path: Path) -> None:
        """A RUN finding an expired open request records its expiry and opens a fresh one."""
        service = service_of(engine_server)
        job_id = await requested(engine_server, tmp_path)
        first = (await engine_server.job(job_id))["runRequest"]
        service.requests.clock = lambda: utcnow() + dt.timedelta(hours=2)
        status, answer = await post(engine_server, job_id, "run", "alice")
        assert status == 202 and answer["job"]["runRequest"]["state"] == "open"
        assert answer["job"]["runRequest"]["id"] != first["id"]
        assert [a for a, _ in await actions(engine_server, job_id)][1:] == [
            "run_request_opened",
            "run_request_expired",
            "run_request_opened",
        ]


class TestBypass:
    async def test_no_path_starts_a_guarded_job_without_its_approval(
        self, engine_server: EngineServer, tmp_path: Path
    ) -> None:
        """A forcing body is refused, and the service's start path itself is 409 approval_required."""
        job = await engine_server.create("test.guarded", {"counter": str(tmp_path / "runs.txt")})
        status, answer = await post(engine_server, job["id"], "run", "alice", force=True)
        assert (status, answer["code"]) == (400, "unknown_field")
        service = service_of(engine_server)
        entry = await service.get(job["id"])
        with pytest.raises(Conflict) as refused:
            await service.start_run(entry, actor="alice", source="test", data={"runBy": "alice", "reason": None})
        assert refused.value.code == "approval_required"
        assert (await engine_server.job(job["id"]))["status"] == "READY"
        assert not any(r.action == "run_requested" for r in await engine_server.records())

    async def test_the_legacy_routes_still_run_nothing(self, engine_server: EngineServer) -> None:
        """POST /engines/jobs/run of a guarded type creates a READY job, with no request and no run."""
        resp = await engine_server.client.post(
            "/engines/jobs/run", json={"engine": "test.guarded", "name": "legacy"}, headers=auth()
        )
        assert resp.status == 202
        job = await resp.json()
        assert (job["status"], job["runRequest"]) == ("READY", None)
        assert [a for a, _ in await actions(engine_server, job["id"])] == ["job_created"]

    async def test_an_open_request_outlives_a_catalog_that_drops_the_policy(
        self, make_engine_server: MakeEngineServer, tmp_path: Path
    ) -> None:
        """Restarted with test.guarded no longer needing approval, the open request still decides: a plain run
        is 409 approval_required (nothing written), and its approval starts the job."""
        journal = MemoryJournal()
        first = await make_engine_server(journal=journal)
        job_id = await requested(first, tmp_path)
        catalog = make_test_catalog(tmp_path)
        relaxed = Catalog(
            types={**catalog.types, "test.guarded": attrs.evolve(catalog.types["test.guarded"], approval="none")},
            clients=catalog.clients,
        )
        second = await make_engine_server(journal=journal, catalog=relaxed)
        records = len(journal.recent())
        status, answer = await post(second, job_id, "run", "bob")
        assert (status, answer["code"]) == (409, "approval_required")
        assert len(journal.recent()) == records
        status, answer = await post(second, job_id, "approve", "bob")
        assert status == 202 and answer["job"]["status"] == "RUNNING"
        await second.wait_for(job_id)


class TestVisibility:
    async def test_types_show_the_policy(self, engine_server: EngineServer) -> None:
        """GET /api/types says which types need approval and how many approvers."""
        types = {t["name"]: t for t in await (await engine_server.client.get("/api/types", headers=auth())).json()}
        assert (types["test.quorum"]["approval"], types["test.quorum"]["approvers"]) == ("required", 2)
        assert (types["demo.guarded"]["approval"], types["demo.guarded"]["approvers"]) == ("required", 1)
        assert (types["test.count"]["approval"], types["test.count"]["approvers"]) == ("none", 0)

    async def test_the_waiting_list_holds_open_requests_soonest_expiry_first(
        self, engine_server: EngineServer, tmp_path: Path
    ) -> None:
        """GET /api/run-requests lists open requests by expiry; closed, run, expired and plain jobs are not in it."""
        service = service_of(engine_server)
        base = utcnow()
        ids = []
        for minutes in (20, 0, 10, 5):
            service.requests.clock = lambda minutes=minutes: base + dt.timedelta(minutes=minutes)  # type: ignore[misc]
            ids.append(await requested(engine_server, tmp_path))
        later, soonest, middle, rejected = ids
        await post(engine_server, rejected, "reject", "bob", reason="no")
        await engine_server.create("test.guarded")  # never requested
        service.requests.clock = lambda: base + dt.timedelta(minutes=1)
        resp = await engine_server.client.get("/api/run-requests", headers=auth())
        assert resp.status == 200
        assert [job["id"] for job in await resp.json()] == [soonest, middle, later]
        resp = await engine_server.client.get("/api/run-requests?limit=1", headers=auth())
        assert [job["id"] for job in await resp.json()] == [soonest]
        service.requests.clock = lambda: base + dt.timedelta(minutes=65)  # soonest expired, not yet swept
        resp = await engine_server.client.get("/api/run-requests", headers=auth())
        assert [job["id"] for job in await resp.json()] == [middle, later]
        resp = await engine_server.client.get("/api/run-requests?state=open", headers=auth())
        assert (resp.status, (await resp.json())["code"]) == (400, "unknown_field")

    async def test_the_list_serves_each_request_as_get_does(self, engine_server: EngineServer, tmp_path: Path) -> None:
        """Open (with an approval), rejected and approved requests: list and GET bodies are the same bytes,
        the request's fields in the documented order."""
        quorum = await requested(engine_server, tmp_path, "test.quorum", planSha256=PLAN_A)
        await post(engine_server, quorum, "approve", "bob", reason="looks fine")
        rejected = await requested(engine_server, tmp_path)
        await post(engine_server, rejected, "reject", "carol", reason="no")
        ran = await requested(engine_server, tmp_path)
        await post(engine_server, ran, "approve", "bob")
        await engine_server.wait_for(ran)
        listed = json.loads(await (await engine_server.client.get("/api/jobs", headers=auth())).read())
        by_id = {job["id"]: job for job in listed}
        for job_id in (quorum, rejected, ran):
            body = await (await engine_server.client.get(f"/api/jobs/{job_id}", headers=auth())).read()
            assert json.dumps(by_id[job_id], separators=(",", ":"), ensure_ascii=False).encode() == body
            assert list(json.loads(body)["runRequest"]) == list(contract_schemas()["RunRequest"]["properties"])

    async def test_metrics_count_the_open_requests(self, engine_server: EngineServer, tmp_path: Path) -> None:
        """engine_run_requests_open follows requests opening and closing."""

        async def gauge() -> str:
            text = await (await engine_server.client.get("/metrics", headers=auth())).text()
            return next(line for line in text.splitlines() if line.startswith("engine_run_requests_open "))

        assert await gauge() == "engine_run_requests_open 0"
        first = await requested(engine_server, tmp_path)
        await requested(engine_server, tmp_path)
        assert await gauge() == "engine_run_requests_open 2"
        await post(engine_server, first, "withdraw", "alice")
        assert await gauge() == "engine_run_requests_open 1"

    async def test_every_step_is_an_event_of_the_stream(self, engine_server: EngineServer, tmp_path: Path) -> None:
        """opened, approved (quorum), started: each is a message named after its record, with the job's JSON."""
        resp, stream = await open_stream(engine_server)
        await take(stream, 1)  # ready
        job_id = await requested(engine_server, tmp_path, "test.quorum")
        await post(engine_server, job_id, "approve", "bob")
        await post(engine_server, job_id, "approve", "carol")
        events = await take(stream, 4)
        assert [m.event for m in events] == [
            "job_created",
            "run_request_opened",
            "run_request_approved",
            "run_requested",
        ]
        assert events[2].json()["runRequest"]["approvals"][0]["by"] == "bob"
        resp.close()
        await engine_server.wait_for(job_id)


class TestReplay:
    async def test_a_restarted_engine_shows_the_same_requests(
        self, make_engine_server: MakeEngineServer, tmp_path: Path
    ) -> None:
        """Replaying a journal with open, approved and rejected requests gives the very same jobs, byte for byte."""
        journal = MemoryJournal()
        first = await make_engine_server(journal=journal)
        open_id = await requested(first, tmp_path, "test.quorum")
        await post(first, open_id, "approve", "bob")
        rejected = await requested(first, tmp_path)
        await post(first, rejected, "reject", "carol", reason="no")
        ran = await requested(first, tmp_path)
        await post(first, ran, "approve", "bob")
        await first.wait_for(ran)
        before = {
            j: await (await first.client.get(f"/api/jobs/{j}", headers=auth())).read() for j in (open_id, rejected, ran)
        }
        second = await make_engine_server(journal=journal)
        for job_id, body in before.items():
            assert await (await second.client.get(f"/api/jobs/{job_id}", headers=auth())).read() == body
        assert service_of(second).backend.store.open_requests().keys() == {open_id}  # type: ignore[attr-defined]
        status, answer = await post(second, open_id, "approve", "carol")
        assert status == 202 and answer["job"]["status"] == "RUNNING"
        await second.wait_for(open_id)

    async def test_a_journal_from_before_run_requests_replays_with_none(
        self, make_engine_server: MakeEngineServer
    ) -> None:
        """A job_created record without runRequest (an older engine's) replays as runRequest null."""
        journal = MemoryJournal()
        first = await make_engine_server(journal=journal)
        job = await first.create("test.count")
        old = MemoryJournal()
        for record in journal.recent():
            data = {k: v for k, v in record.data.items() if k != "runRequest"}
            await old.append(
                action=record.action, actor=record.actor, source=record.source, job_id=record.job_id, data=data
            )
        assert "runRequest" not in next(iter(old.recent())).data
        second = await make_engine_server(journal=old)
        body = json.loads(await (await second.client.get(f"/api/jobs/{job['id']}", headers=auth())).read())
        assert body["runRequest"] is None and list(body) == list(JOB_FIELDS)
