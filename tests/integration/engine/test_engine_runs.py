"""Runs through the real engine: at most once, exclusive types, cancel, legacy routes, restarts, journal failures."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine_hub.jobs.service import INTERRUPTED_ERROR
from shared.contract import HistoryEntry, Job, JobStatus, new_job_id, utcnow
from shared.journal.chain import JournalUnavailable, MemoryJournal, Record
from tests.integration.engine.conftest import BOTH_STORES
from tests.integration.engine.harness import ADMIN_TOKEN, EngineServer, MakeEngineServer, auth, wait_until

#: The contract: every test runs against the embedded store and against PostgreSQL.
pytestmark = BOTH_STORES


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class SlowJournal(MemoryJournal):
    """A memory journal whose appends take a few milliseconds, like a disk write with fsync."""

    async def append(self, *, action: str, actor: str, source: str, job_id: str | None, data: dict[str, Any]) -> Record:
        await asyncio.sleep(0.005)
        return await super().append(action=action, actor=actor, source=source, job_id=job_id, data=data)


class TestAtMostOnce:
    @pytest.mark.parametrize("journal_class", [MemoryJournal, SlowJournal])
    async def test_200_concurrent_runs_start_the_job_exactly_once(
        self, make_engine_server: MakeEngineServer, tmp_path: Path, journal_class: type[MemoryJournal]
    ) -> None:
        """Of 200 simultaneous run requests exactly one is accepted, the rest get 409, and the command runs once."""
        engine_server = await make_engine_server(journal=journal_class())
        counter = tmp_path / "once.txt"
        job = await engine_server.create("test.count", {"counter": str(counter)})

        async def run() -> tuple[int, dict[str, Any]]:
            resp = await engine_server.client.post(f"/api/jobs/{job['id']}/run", json={}, headers=auth())
            return resp.status, await resp.json()

        answers = await asyncio.gather(*(run() for _ in range(200)))
        statuses = Counter(status for status, _ in answers)
        assert statuses == {202: 1, 409: 199}
        assert {body["code"] for status, body in answers if status == 409} == {"already_running"}
        done = await engine_server.wait_for(job["id"])
        assert done["status"] == "DONE"
        assert counter.read_text() == "ran\n"
        assert [h["status"] for h in done["history"]] == ["READY", "RUNNING", "DONE"]
        assert [r.action for r in (await engine_server.records()) if r.job_id == job["id"]].count("run_requested") == 1

    async def test_finished_job_never_runs_again(self, engine_server: EngineServer, tmp_path: Path) -> None:
        """A DONE job answers 400 not_ready to a run request and its command does not run again."""
        counter = tmp_path / "again.txt"
        job = await engine_server.create("test.count", {"counter": str(counter)})
        await engine_server.run(job["id"])
        await engine_server.wait_for(job["id"])
        resp = await engine_server.client.post(f"/api/jobs/{job['id']}/run", headers=auth())
        assert resp.status == 400
        assert (await resp.json())["code"] == "not_ready"
        assert counter.read_text() == "ran\n"

    async def test_post_job_without_run_does_not_run_it(self, engine_server: EngineServer, tmp_path: Path) -> None:
        """POST /api/jobs/{id} (no /run) is a 405 and leaves the job READY with no run recorded."""
        job = await engine_server.create("test.count", {"counter": str(tmp_path / "never.txt")})
        resp = await engine_server.client.post(f"/api/jobs/{job['id']}", json={}, headers=auth())
        assert resp.status == 405
        assert (await resp.json())["code"] == "method_not_allowed"
        assert "GET" in resp.headers["Allow"]
        assert (await engine_server.job(job["id"]))["status"] == "READY"
        assert not any(r.action == "run_requested" for r in (await engine_server.records()))
        assert not (tmp_path / "never.txt").exists()


class TestListMatchesJob:
    async def test_every_listed_job_is_byte_for_byte_its_get_body_in_every_state(
        self, engine_server: EngineServer, tmp_path: Path
    ) -> None:
        """READY, RUNNING, DONE, FAILED, cancelled: the list serves each job exactly as GET does."""
        ready = await engine_server.create("test.count")
        done = await engine_server.create("test.count")
        failed = await engine_server.create("demo.fail")
        cancelled = await engine_server.create("test.block", {"seconds": 60})
        running = await engine_server.create("test.family", {"pidfile": str(tmp_path / "family.pid")})
        for job in (done, failed, cancelled, running):
            await engine_server.run(job["id"])
        await engine_server.wait_for(cancelled["id"], {"RUNNING"})
        reply = await engine_server.client.post(f"/api/jobs/{cancelled['id']}/cancel", json={}, headers=auth())
        assert reply.status == 202
        for job in (done, failed, cancelled):
            await engine_server.wait_for(job["id"])
        await engine_server.wait_for(running["id"], {"RUNNING"})
        listing = await engine_server.client.get("/api/jobs", headers=auth())
        listed = {job["id"]: job for job in await listing.json()}
        statuses = []
        for job in (ready, done, failed, cancelled, running):
            body = await (await engine_server.client.get(f"/api/jobs/{job['id']}", headers=auth())).read()
            assert listed[job["id"]] == json.loads(body)
            assert json.dumps(listed[job["id"]], separators=(",", ":")).encode() == body
            statuses.append(listed[job["id"]]["status"])
        assert statuses == ["READY", "DONE", "FAILED", "FAILED", "RUNNING"]


class TestExclusiveTypes:
    async def test_second_run_of_exclusive_type_is_refused(self, engine_server: EngineServer) -> None:
        """While an exclusive type has a RUNNING job, running another job of it is 409 type_busy."""
        first = await engine_server.create("test.block")
        second = await engine_server.create("test.block")
        await engine_server.run(first["id"])
        resp = await engine_server.client.post(f"/api/jobs/{second['id']}/run", headers=auth())
        assert resp.status == 409
        assert (await resp.json())["code"] == "type_busy"
        assert (await engine_server.job(second["id"]))["status"] == "READY"
        await engine_server.client.post(f"/api/jobs/{first['id']}/cancel", headers=auth())
        await engine_server.wait_for(first["id"])
        await engine_server.run(second["id"])  # free again once the first run has ended
        await engine_server.client.post(f"/api/jobs/{second['id']}/cancel", headers=auth())
        await engine_server.wait_for(second["id"])

    async def test_concurrent_runs_of_two_exclusive_jobs_start_one(self, make_engine_server: MakeEngineServer) -> None:
        """Two jobs of an exclusive type run at the same instant: one 202, one 409 type_busy."""
        engine_server = await make_engine_server(journal=SlowJournal())
        jobs = [await engine_server.create("test.block") for _ in range(2)]

        async def run(job_id: str) -> tuple[int, dict[str, Any]]:
            resp = await engine_server.client.post(f"/api/jobs/{job_id}/run", headers=auth())
            return resp.status, await resp.json()

        answers = await asyncio.gather(*(run(j["id"]) for j in jobs))
        assert sorted(status for status, _ in answers) == [202, 409]
        assert [body["code"] for status, body in answers if status == 409] == ["type_busy"]
        winner = next(body["jobId"] for status, body in answers if status == 202)
        await engine_server.client.post(f"/api/jobs/{winner}/cancel", headers=auth())
        await engine_server.wait_for(winner)

    async def test_non_exclusive_type_runs_in_parallel(self, engine_server: EngineServer, tmp_path: Path) -> None:
        """Jobs of a non-exclusive type may run at the same time."""
        jobs = [await engine_server.create("demo.sleep", {"seconds": 30}) for _ in range(2)]
        for job in jobs:
            await engine_server.run(job["id"])
        for job in jobs:
            await engine_server.client.post(f"/api/jobs/{job['id']}/cancel", headers=auth())
            assert (await engine_server.wait_for(job["id"]))["error"] == "cancelled by admin"


class TestCancel:
    async def test_cancel_kills_job_and_grandchild(self, engine_server: EngineServer, tmp_path: Path) -> None:
        """Cancel via HTTP ends the whole process group and records FAILED "cancelled by <actor>"."""
        pidfile = tmp_path / "gc.pid"
        job = await engine_server.create("test.family", {"pidfile": str(pidfile)})
        await engine_server.run(job["id"])
        await wait_until(lambda: pidfile.exists() and pidfile.read_text() != "", what="grandchild started")
        grandchild = int(pidfile.read_text())
        assert _pid_alive(grandchild)
        resp = await engine_server.client.post(f"/api/jobs/{job['id']}/cancel", headers=auth(actor="alice"))
        assert resp.status == 202
        body = await resp.json()
        assert body["status"] == "accepted" and body["jobId"] == job["id"]
        done = await engine_server.wait_for(job["id"])
        assert done["status"] == "FAILED"
        assert done["error"] == "cancelled by alice"
        assert done["history"][-1]["by"] == "alice"
        assert done["endedAt"] is not None
        await wait_until(lambda: not _pid_alive(grandchild), what="grandchild gone")
        actions = [(r.action, r.actor) for r in (await engine_server.records()) if r.job_id == job["id"]]
        assert ("cancel_requested", "alice") in actions

    async def test_cancel_right_after_run_is_delivered(self, engine_server: EngineServer) -> None:
        """A cancel sent immediately after the run request (before the process exists) still ends the run."""
        job = await engine_server.create("test.block")
        run, cancel = await asyncio.gather(
            engine_server.client.post(f"/api/jobs/{job['id']}/run", headers=auth()),
            engine_server.client.post(f"/api/jobs/{job['id']}/cancel", headers=auth(actor="bob")),
        )
        assert run.status == 202
        if cancel.status == 409:  # the cancel won the race to the engine: the job was still READY
            assert (await cancel.json())["code"] == "not_running"
            cancel = await engine_server.client.post(f"/api/jobs/{job['id']}/cancel", headers=auth(actor="bob"))
        assert cancel.status == 202
        done = await engine_server.wait_for(job["id"])
        assert done["error"] == "cancelled by bob"

    async def test_cancel_of_ready_and_finished_jobs_is_refused(self, engine_server: EngineServer) -> None:
        """Cancel answers 409 not_running for READY and 400 not_ready for a finished job."""
        job = await engine_server.create("demo.echo")
        resp = await engine_server.client.post(f"/api/jobs/{job['id']}/cancel", headers=auth())
        assert (resp.status, (await resp.json())["code"]) == (409, "not_running")
        await engine_server.run(job["id"])
        await engine_server.wait_for(job["id"])
        resp = await engine_server.client.post(f"/api/jobs/{job['id']}/cancel", headers=auth())
        assert (resp.status, (await resp.json())["code"]) == (400, "not_ready")

    async def test_failing_job_records_exit_code(self, engine_server: EngineServer) -> None:
        """A job exiting non-zero ends FAILED with its exit code, a reason and a JobResult."""
        job = await engine_server.create("demo.fail", {"code": 3})
        await engine_server.run(job["id"])
        done = await engine_server.wait_for(job["id"])
        assert (done["status"], done["exitCode"]) == ("FAILED", 3)
        assert done["error"]
        results = await (await engine_server.client.get("/api/jobs/results", headers=auth())).json()
        assert results[-1]["jobId"] == job["id"]
        assert results[-1]["output"] == f"Job failed: {done['error']}"
        logs = await (await engine_server.client.get("/logs", headers=auth())).json()
        assert {"level": "ERROR", "message": f"Job failed: {done['error']}"}.items() <= logs[-1].items()


class TestLegacyRoutes:
    async def test_legacy_create_makes_ready_job_and_never_runs_it(
        self, engine_server: EngineServer, tmp_path: Path
    ) -> None:
        """POST /engines/jobs/run answers 202 with a READY job (defaults filled in) and nothing runs."""
        resp = await engine_server.client.post(
            "/engines/jobs/run", json={"engine": "test.count", "name": "nightly"}, headers=auth(actor="carol")
        )
        assert resp.status == 202
        job = await resp.json()
        assert (job["status"], job["engine"], job["type"], job["name"]) == (
            "READY",
            "test.count",
            "test.count",
            "nightly",
        )
        assert job["params"] == {"counter": str(tmp_path / "count.txt")}
        assert job["createdBy"] == "carol"
        listed = await (await engine_server.client.get("/engines/jobs", headers=auth())).json()
        assert [j["id"] for j in listed] == [job["id"]]
        assert not any(r.action == "run_requested" for r in (await engine_server.records()))
        # Let the loop turn a few times: a background auto-run would have appended by now.
        for _ in range(20):
            await asyncio.sleep(0)
        assert (await engine_server.job(job["id"]))["status"] == "READY"
        assert not (tmp_path / "count.txt").exists()

    async def test_legacy_create_with_required_param_is_refused(self, engine_server: EngineServer) -> None:
        """The legacy route cannot supply params: a type with a required param is a 400."""
        resp = await engine_server.client.post(
            "/engines/jobs/run", json={"engine": "test.required", "name": "x"}, headers=auth()
        )
        assert resp.status == 400
        body = await resp.json()
        assert body["code"] == "invalid_param"
        assert "target" in body["error"]


class TestRestart:
    async def test_restart_replays_state_and_fails_interrupted_runs(
        self, make_engine_server: MakeEngineServer, tmp_path: Path
    ) -> None:
        """Records of a crashed engine are replayed: READY stays READY (never run at boot), RUNNING becomes FAILED."""
        journal = MemoryJournal()
        now = utcnow()
        jobs = []
        for _ in range(2):
            job = Job(
                id=new_job_id(),
                type="test.count",
                name="n",
                params={"counter": str(tmp_path / "boot.txt")},
                created_at=now,
                created_by="admin",
                history=(HistoryEntry(status=JobStatus.READY, at=now, by="admin"),),
            )
            await journal.append(
                action="job_created", actor="admin", source="127.0.0.1", job_id=job.id, data=job.to_json()
            )
            jobs.append(job)
        await journal.append(
            action="run_requested",
            actor="dave",
            source="127.0.0.1",
            job_id=jobs[1].id,
            data={"runBy": "dave", "reason": "before the crash"},
        )
        engine_server = await make_engine_server(journal=journal)
        ready, running = await engine_server.job(jobs[0].id), await engine_server.job(jobs[1].id)
        assert ready["status"] == "READY"
        assert running["status"] == "FAILED"
        assert running["error"] == INTERRUPTED_ERROR
        assert running["runBy"] == "dave"
        assert [(h["status"], h["by"]) for h in running["history"]] == [
            ("READY", "admin"),
            ("RUNNING", "dave"),
            ("FAILED", "system"),
        ]
        last = journal.recent()[-1]
        assert (last.action, last.actor, last.job_id) == ("job_interrupted", "system", jobs[1].id)
        listed = await (await engine_server.client.get("/api/jobs", headers=auth())).json()
        assert [j["id"] for j in listed] == [jobs[1].id, jobs[0].id]
        assert not (tmp_path / "boot.txt").exists()

    async def test_second_engine_on_same_journal_sees_identical_jobs(
        self, make_engine_server: MakeEngineServer
    ) -> None:
        """Replaying the journal rebuilds byte-identical job JSON."""
        journal = MemoryJournal()
        first = await make_engine_server(journal=journal)
        job = await first.create("demo.echo", {"message": "replay me"}, headers=auth(actor="erin"))
        await first.run(job["id"], reason="check")
        done = await first.wait_for(job["id"])
        second = await make_engine_server(journal=journal)
        resp = await second.client.get(f"/api/jobs/{job['id']}", headers=auth())
        assert await resp.json() == done
        assert sum(r.action == "job_interrupted" for r in journal.recent()) == 0


class FlakyJournal(MemoryJournal):
    """A journal whose storage can be made to fail (a stand-in for a full or broken disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.refused: list[str] = []

    @property
    def healthy(self) -> bool:
        return not self.failing

    async def append(self, *, action: str, actor: str, source: str, job_id: str | None, data: dict[str, Any]) -> Record:
        if self.failing:
            self.refused.append(action)
            raise JournalUnavailable("disk full")
        return await super().append(action=action, actor=actor, source=source, job_id=job_id, data=data)


class TestJournalUnavailable:
    async def test_no_change_without_the_journal(self, make_engine_server: MakeEngineServer) -> None:
        """While the journal fails, create and run answer 503 and nothing changes; afterwards both work."""
        journal = FlakyJournal()
        engine_server = await make_engine_server(journal=journal)
        job = await engine_server.create("demo.echo")
        journal.failing = True
        resp = await engine_server.client.post("/api/jobs", json={"type": "demo.echo"}, headers=auth())
        assert (resp.status, (await resp.json())["code"]) == (503, "journal_unavailable")
        resp = await engine_server.client.post(f"/api/jobs/{job['id']}/run", headers=auth())
        assert (resp.status, (await resp.json())["code"]) == (503, "journal_unavailable")
        assert (await engine_server.job(job["id"]))["status"] == "READY"
        listed = await (await engine_server.client.get("/api/jobs", headers=auth())).json()
        assert len(listed) == 1
        health = await engine_server.client.get("/healthz")
        assert (health.status, (await health.json())["status"]) == (200, "degraded")
        journal.failing = False
        await engine_server.run(job["id"])
        assert (await engine_server.wait_for(job["id"]))["status"] == "DONE"
        assert await (await engine_server.client.get("/healthz")).json() == {"status": "ok"}

    async def test_finish_waits_for_the_journal_and_is_never_lost(
        self, make_engine_server: MakeEngineServer, tmp_path: Path
    ) -> None:
        """A run that ends while the journal fails stays RUNNING (retrying) and becomes DONE once it heals."""
        journal = FlakyJournal()
        engine_server = await make_engine_server(journal=journal)
        counter = tmp_path / "finish.txt"
        job = await engine_server.create("test.count", {"counter": str(counter)})
        journal.failing = True
        resp = await engine_server.client.post(f"/api/jobs/{job['id']}/run", headers=auth())
        assert resp.status == 503 and not counter.exists()
        journal.failing = False
        await engine_server.run(job["id"])
        journal.failing = True
        await wait_until(lambda: journal.refused.count("job_finished") >= 2, what="the finish retried")
        assert counter.read_text() == "ran\n"
        assert (await engine_server.job(job["id"]))["status"] == "RUNNING"
        resp = await engine_server.client.post(f"/api/jobs/{job['id']}/run", headers=auth())
        assert resp.status == 409  # still RUNNING: it can never be started again meanwhile
        journal.failing = False
        done = await engine_server.wait_for(job["id"], timeout=20)
        assert (done["status"], done["exitCode"]) == ("DONE", 0)
        assert counter.read_text() == "ran\n"
        assert [r.action for r in journal.recent() if r.job_id == job["id"]][-1] == "job_finished"


class TestLogs:
    async def test_job_output_is_captured_and_paged(self, engine_server: EngineServer) -> None:
        """Output lines are numbered from 1; ``after`` pages through them and ``next`` is the cursor."""
        job = await engine_server.create("test.chatty", {"lines": 5})
        await engine_server.run(job["id"])
        await engine_server.wait_for(job["id"])
        page = await (await engine_server.client.get(f"/api/jobs/{job['id']}/logs", headers=auth())).json()
        assert [(line["seq"], line["stream"], line["text"]) for line in page["lines"]] == [
            (i + 1, "stdout", f"line {i}") for i in range(5)
        ]
        assert page["next"] == 5 and page["truncated"] is False
        page = await (await engine_server.client.get(f"/api/jobs/{job['id']}/logs?after=3", headers=auth())).json()
        assert [line["seq"] for line in page["lines"]] == [4, 5]
        page = await (await engine_server.client.get(f"/api/jobs/{job['id']}/logs?after=5", headers=auth())).json()
        assert page == {"lines": [], "next": 5, "truncated": False}

    async def test_long_output_keeps_the_tail_and_says_so(self, engine_server: EngineServer) -> None:
        """Past the per-job line cap the oldest lines go, the page says truncated and the journal records it once."""
        if engine_server.store_url is not None:
            pytest.skip("in-memory logs only: a PostgreSQL node keeps the head under a byte cap (test_pg_logs.py)")
        job = await engine_server.create("test.chatty", {"lines": 10_050})
        await engine_server.run(job["id"])
        await engine_server.wait_for(job["id"])
        page = await (await engine_server.client.get(f"/api/jobs/{job['id']}/logs?limit=2", headers=auth())).json()
        assert page["truncated"] is True
        assert [(line["seq"], line["text"]) for line in page["lines"]] == [(51, "line 50"), (52, "line 51")]
        tail = await (await engine_server.client.get(f"/api/jobs/{job['id']}/logs?after=10049", headers=auth())).json()
        assert [line["text"] for line in tail["lines"]] == ["line 10049"]

        async def recorded() -> bool:
            return any(r.action == "log_truncated" for r in await engine_server.records())

        await wait_until(recorded, what="log_truncated recorded")
        assert [r.job_id for r in (await engine_server.records()) if r.action == "log_truncated"] == [job["id"]]

    async def test_job_receives_params_and_id_in_environment(self, engine_server: EngineServer) -> None:
        """demo.echo prints its ``message`` param: params reach the process."""
        job = await engine_server.create("demo.echo", {"message": "from the test"})
        await engine_server.run(job["id"])
        await engine_server.wait_for(job["id"])
        page = await (await engine_server.client.get(f"/api/jobs/{job['id']}/logs", headers=auth())).json()
        assert "from the test" in [line["text"] for line in page["lines"]]


class TestShutdown:
    async def test_engine_shutdown_fails_running_jobs(
        self, make_engine_server: MakeEngineServer, tmp_path: Path
    ) -> None:
        """Stopping the engine ends running jobs (grandchildren too) and records them FAILED."""
        journal = MemoryJournal()
        engine_server = await make_engine_server(journal=journal)
        pidfile = tmp_path / "sd.pid"
        job = await engine_server.create("test.family", {"pidfile": str(pidfile)})
        await engine_server.run(job["id"])
        await wait_until(lambda: pidfile.exists() and pidfile.read_text() != "", what="grandchild started")
        grandchild = int(pidfile.read_text())
        await engine_server.client.close()  # runs the app's cleanup: runner shutdown
        await wait_until(lambda: not _pid_alive(grandchild), what="grandchild gone")
        finished = [r for r in journal.recent() if r.action == "job_finished"]
        assert [(r.job_id, r.data["status"]) for r in finished] == [(job["id"], "FAILED")]
        assert ADMIN_TOKEN not in repr(journal.recent())
