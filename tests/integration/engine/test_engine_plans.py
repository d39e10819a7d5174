"""Plans (dry runs) through the real engine: output and hash, the 64 KiB cap, the timeout, refusals, the audit."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse

from engine_hub.jobs.catalog import Catalog, JobType, ParamSpec
from engine_hub.jobs.service import MAX_CONCURRENT_PLANS, PLAN_RETRY_AFTER
from shared.contract import MAX_PLAN_OUTPUT
from shared.journal.chain import JournalUnavailable, MemoryJournal, Record
from tests.integration.engine.conftest import BOTH_STORES
from tests.integration.engine.harness import (
    CLIENT_TOKEN,
    EngineServer,
    MakeEngineServer,
    auth,
    make_test_catalog,
    wait_until,
)
from tests.sse import messages, take


def _py(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def plan_types(tmp: Path) -> tuple[JobType, ...]:
    """Types whose plans show the environment, print a lot, hang with a grandchild, cannot start, or are slow."""
    run = _py("raise SystemExit('the run must never start from a plan')")
    return (
        JobType(
            name="plan.env",
            command=run,
            timeout=30.0,
            cwd=tmp,
            env={"PLAN_TARGET": "staging"},
            params=(ParamSpec(name="index", type="str", default="products"),),
            plan=_py(
                "import os, sys; "
                "print('index', os.environ['JOB_PARAM_INDEX'], 'target', os.environ['PLAN_TARGET'], flush=True); "
                "print('cwd', os.getcwd(), 'job', os.environ['JOB_ID'], 'type', os.environ['JOB_TYPE'], flush=True); "
                "print('token' if 'ENGINE_HUB_TOKEN' in os.environ else 'no token', flush=True); "
                "print('to stderr', file=sys.stderr, flush=True); sys.exit(3)"
            ),
        ),
        JobType(
            name="plan.big",
            command=run,
            timeout=30.0,
            params=(ParamSpec(name="size", type="int", default=10, min=0, max=10_000_000),),
            plan=_py("import os, sys; sys.stdout.buffer.write(b'x' * int(os.environ['JOB_PARAM_SIZE']))"),
        ),
        JobType(
            name="plan.family",
            command=run,
            timeout=30.0,
            params=(ParamSpec(name="pidfile", type="str", default=str(tmp / "plan-grandchild.pid")),),
            plan=_py(
                "import os, subprocess, sys, time; "
                "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                "open(os.environ['JOB_PARAM_PIDFILE'], 'w').write(str(p.pid)); "
                "print('planning', flush=True); time.sleep(600)"
            ),
            plan_timeout=1.0,
        ),
        JobType(name="plan.missing", command=run, timeout=30.0, plan=(str(tmp / "no-such-plan"),)),
        JobType(
            name="plan.mark",
            command=run,
            timeout=30.0,
            params=(ParamSpec(name="marker", type="str", default=str(tmp / "planned.txt")),),
            plan=_py("import os; open(os.environ['JOB_PARAM_MARKER'], 'a').write('planned\\n'); print('marked')"),
        ),
        JobType(
            name="plan.slow",
            command=run,
            timeout=30.0,
            plan=_py("import time; time.sleep(1.5); print('slow plan')"),
        ),
    )


def plan_catalog(tmp: Path) -> Catalog:
    """The test catalog (demo and ``test.*`` types, the ``crm`` client) plus :func:`plan_types`."""
    base = make_test_catalog(tmp)
    return Catalog(types={**base.types, **{t.name: t for t in plan_types(tmp)}}, clients=base.clients)


@pytest.fixture
async def engine(make_engine_server: MakeEngineServer, tmp_path: Path) -> EngineServer:
    """An engine with :func:`plan_catalog`."""
    return await make_engine_server(catalog=plan_catalog(tmp_path))


async def plan(engine: EngineServer, job_id: str, *, actor: str | None = None) -> ClientResponse:
    """POST the plan route of ``job_id`` with the admin token."""
    return await engine.client.post(f"/api/jobs/{job_id}/plan", json={}, headers=auth(actor=actor))


async def planned(engine: EngineServer, job_id: str, *, actor: str | None = None) -> dict[str, Any]:
    """Plan ``job_id`` expecting 200 and return the answer."""
    resp = await plan(engine, job_id, actor=actor)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


@BOTH_STORES
class TestPlanOutput:
    async def test_demo_sleep_says_what_it_would_do_and_hashes_the_exact_bytes(self, engine: EngineServer) -> None:
        """demo.sleep's plan prints "would sleep N s"; sha256 is that of the output bytes; nothing runs."""
        job = await engine.create("demo.sleep", {"seconds": 7})
        body = await planned(engine, job["id"])
        assert body["output"] == "would sleep 7 s\n"
        assert body["sha256"] == hashlib.sha256(b"would sleep 7 s\n").hexdigest()
        assert (body["exitCode"], body["truncated"], body["timedOut"], body["error"]) == (0, False, False, None)
        assert body["jobId"] == job["id"] and body["at"].endswith("Z")
        assert await engine.job(job["id"]) == job

    async def test_same_params_same_hash_and_other_params_another(self, engine: EngineServer) -> None:
        """Planning twice gives the same output and hash; a job with other params gets another of each."""
        first = await engine.create("demo.sleep", {"seconds": 7})
        other = await engine.create("demo.sleep", {"seconds": 8})
        one, again, different = [await planned(engine, j["id"]) for j in (first, first, other)]
        assert (one["output"], one["sha256"]) == (again["output"], again["sha256"])
        assert different["output"] == "would sleep 8 s\n"
        assert different["sha256"] != one["sha256"]

    async def test_plan_gets_the_runs_environment_and_both_streams(
        self, engine: EngineServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Params, the type's env and cwd, JOB_ID/JOB_TYPE reach the plan; no engine secret; stderr is in the output."""
        monkeypatch.setenv("ENGINE_HUB_TOKEN", "an-engine-secret-the-plan-must-not-see")
        job = await engine.create("plan.env", {"index": "orders"})
        body = await planned(engine, job["id"])
        assert body["output"].splitlines() == [
            "index orders target staging",
            f"cwd {tmp_path} job {job['id']} type plan.env",
            "no token",
            "to stderr",
        ]
        assert (body["exitCode"], body["error"]) == (3, "exited with code 3")

    async def test_output_is_capped_at_64_kib_and_says_so(self, engine: EngineServer) -> None:
        """A plan printing more than 64 KiB answers its first 64 KiB, truncated, hashed as answered."""
        job = await engine.create("plan.big", {"size": 3 * MAX_PLAN_OUTPUT})
        body = await planned(engine, job["id"])
        assert body["output"] == "x" * MAX_PLAN_OUTPUT
        assert body["truncated"] is True and body["exitCode"] == 0
        assert body["sha256"] == hashlib.sha256(b"x" * MAX_PLAN_OUTPUT).hexdigest()
        exact = await engine.create("plan.big", {"size": MAX_PLAN_OUTPUT})
        assert (await planned(engine, exact["id"]))["truncated"] is False

    async def test_timeout_kills_the_plans_whole_process_group(self, engine: EngineServer, tmp_path: Path) -> None:
        """A plan past its plan_timeout is ended with its grandchild: 200, timedOut, no exit code."""
        pidfile = tmp_path / "plan-grandchild.pid"
        job = await engine.create("plan.family", {"pidfile": str(pidfile)})
        body = await planned(engine, job["id"])
        assert body["timedOut"] is True and body["exitCode"] is None
        assert body["error"] == "timed out after 1s"
        assert body["output"] == "planning\n"
        grandchild = int(pidfile.read_text())
        await wait_until(lambda: not _pid_alive(grandchild), what="the plan's grandchild gone")
        assert (await engine.job(job["id"]))["status"] == "READY"

    async def test_a_plan_that_cannot_start_answers_200_with_the_reason(self, engine: EngineServer) -> None:
        """A plan argv that does not exist: 200, exitCode null, error "failed to start: …", empty output."""
        job = await engine.create("plan.missing")
        body = await planned(engine, job["id"])
        assert body["exitCode"] is None and body["output"] == "" and body["timedOut"] is False
        assert body["error"].startswith("failed to start: ") and "no-such-plan" in body["error"]
        assert body["sha256"] == hashlib.sha256(b"").hexdigest()


@BOTH_STORES
class TestPlanAudit:
    async def test_plan_is_recorded_and_changes_nothing(self, engine: EngineServer) -> None:
        """One job_planned record (actor, sha256, exitCode, truncated, timedOut); the job is as it was."""
        job = await engine.create("demo.sleep", {"seconds": 4})
        body = await planned(engine, job["id"], actor="alice")
        assert await engine.job(job["id"]) == job
        records = [r for r in await engine.records() if r.job_id == job["id"]]
        assert [r.action for r in records] == ["job_created", "job_planned"]
        record = records[-1]
        assert record.actor == "alice"
        assert record.data == {
            "sha256": body["sha256"],
            "bytes": len(b"would sleep 4 s\n"),
            "exitCode": 0,
            "truncated": False,
            "timedOut": False,
            "error": None,
        }
        listed = await (await engine.client.get("/api/jobs", headers=auth())).json()
        assert [j for j in listed if j["id"] == job["id"]] == [job]

    async def test_plan_is_one_job_planned_event_carrying_the_unchanged_job(self, engine: EngineServer) -> None:
        """GET /api/events relays the plan as job_planned, id its record's seq, data the job as it was."""
        resp = await engine.client.get("/api/events", headers=auth())
        assert resp.status == 200
        stream = messages(resp.content)
        await take(stream, 1)  # ready
        job = await engine.create("demo.sleep", {"seconds": 6})
        await planned(engine, job["id"])
        created, event = await take(stream, 2)
        records = [r for r in await engine.records() if r.job_id == job["id"]]
        assert [(m.event, m.id) for m in (created, event)] == [(r.action, str(r.seq)) for r in records]
        assert event.event == "job_planned" and event.json() == job
        resp.close()

    async def test_planned_job_still_runs_once(self, engine: EngineServer) -> None:
        """After plans, the job runs as any READY job does (the plan did not claim or start it)."""
        job = await engine.create("demo.echo", {"message": "hi"})
        assert (await planned(engine, job["id"]))["output"] == "would print: hi\n"
        await engine.run(job["id"])
        assert (await engine.wait_for(job["id"]))["status"] == "DONE"


@BOTH_STORES
class TestPlanRefusals:
    async def test_type_without_plan_is_409_no_plan(self, engine: EngineServer) -> None:
        """demo.fail declares no plan: 409 no_plan, nothing recorded."""
        job = await engine.create("demo.fail")
        resp = await plan(engine, job["id"])
        assert resp.status == 409
        assert (await resp.json())["code"] == "no_plan"
        assert [r.action for r in await engine.records() if r.job_id == job["id"]] == ["job_created"]

    async def test_unknown_job_is_404(self, engine: EngineServer) -> None:
        """A plan of a job nobody created: 404 not_found."""
        resp = await plan(engine, "00000000-0000-4000-8000-000000000000")
        assert resp.status == 404
        assert (await resp.json())["code"] == "not_found"

    async def test_job_that_is_not_ready_is_409(self, engine: EngineServer) -> None:
        """A finished job has nothing left to plan: 409 not_ready."""
        job = await engine.create("demo.echo")
        await engine.run(job["id"])
        await engine.wait_for(job["id"])
        resp = await plan(engine, job["id"])
        assert resp.status == 409
        assert (await resp.json())["code"] == "not_ready"

    async def test_client_token_and_body_fields_are_refused(self, engine: EngineServer) -> None:
        """A submit-scope token may not plan (403); a body field the route does not take is 400."""
        job = await engine.create("demo.sleep")
        resp = await engine.client.post(f"/api/jobs/{job['id']}/plan", headers=auth(CLIENT_TOKEN))
        assert resp.status == 403
        resp = await engine.client.post(f"/api/jobs/{job['id']}/plan", json={"reason": "x"}, headers=auth())
        assert resp.status == 400
        assert (await resp.json())["code"] == "unknown_field"

    async def test_concurrent_plans_are_bounded(self, engine: EngineServer) -> None:
        """Beyond MAX_CONCURRENT_PLANS running plans, one more is 429 throttled with Retry-After."""
        job = await engine.create("plan.slow")
        answers = await asyncio.gather(*(plan(engine, job["id"]) for _ in range(MAX_CONCURRENT_PLANS + 1)))
        statuses = sorted(resp.status for resp in answers)
        assert statuses == [200] * MAX_CONCURRENT_PLANS + [429]
        (refused,) = [resp for resp in answers if resp.status == 429]
        assert refused.headers["Retry-After"] == str(PLAN_RETRY_AFTER)
        assert (await refused.json())["code"] == "throttled"
        assert (await planned(engine, job["id"]))["output"] == "slow plan\n"


class FailingJournal(MemoryJournal):
    """A memory journal that can be made unhealthy, or made to refuse one action only."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.refuse_action: str | None = None

    @property
    def healthy(self) -> bool:
        return not self.failing

    async def append(self, *, action: str, actor: str, source: str, job_id: str | None, data: dict[str, Any]) -> Record:
        if self.failing or action == self.refuse_action:
            raise JournalUnavailable("disk full")
        return await super().append(action=action, actor=actor, source=source, job_id=job_id, data=data)


async def marked_job(make_engine_server: MakeEngineServer, tmp_path: Path) -> tuple[EngineServer, FailingJournal, str]:
    """An engine on a :class:`FailingJournal` and the id of a READY ``plan.mark`` job."""
    journal = FailingJournal()
    engine = await make_engine_server(journal=journal, catalog=plan_catalog(tmp_path))
    job = await engine.create("plan.mark")
    return engine, journal, job["id"]


class TestPlanJournal:
    async def test_no_plan_runs_while_the_journal_is_down(
        self, make_engine_server: MakeEngineServer, tmp_path: Path
    ) -> None:
        """With the journal unavailable a plan is 503 journal_unavailable and its process never starts."""
        engine, journal, job_id = await marked_job(make_engine_server, tmp_path)
        journal.failing = True
        resp = await plan(engine, job_id)
        assert resp.status == 503
        assert (await resp.json())["code"] == "journal_unavailable"
        assert not (tmp_path / "planned.txt").exists()

    async def test_a_plan_that_cannot_be_recorded_shows_no_output(
        self, make_engine_server: MakeEngineServer, tmp_path: Path
    ) -> None:
        """If its job_planned record is refused, the answer is 503 and the output is not given."""
        engine, journal, job_id = await marked_job(make_engine_server, tmp_path)
        journal.refuse_action = "job_planned"
        resp = await plan(engine, job_id)
        assert resp.status == 503
        assert "marked" not in await resp.text()
        assert (tmp_path / "planned.txt").read_text() == "planned\n"


class TestPlanReplay:
    async def test_journal_with_plans_replays(self, make_engine_server: MakeEngineServer, tmp_path: Path) -> None:
        """An engine started on a journal holding job_planned records rebuilds the same jobs."""
        journal = MemoryJournal()
        first = await make_engine_server(journal=journal, catalog=plan_catalog(tmp_path))
        job = await first.create("demo.sleep", {"seconds": 2})
        await planned(first, job["id"])
        second = await make_engine_server(journal=journal, catalog=plan_catalog(tmp_path))
        assert await second.job(job["id"]) == job
        assert [r.action for r in journal.recent()].count("job_planned") == 1
