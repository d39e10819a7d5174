"""The engine goes away under a running gateway: outages, restarts and a crash in the middle of a run.

Each test has an engine and a gateway (SAFE_MODE off) of its own, since it
kills the engine.

The engine keeps its jobs in its durable journal, so a restarted engine on
the same data dir has every job back, and an interrupted run is FAILED.
"""

from __future__ import annotations

import time

from tests.e2e.harness import USER, Stack, StackFactory, job_pids, poll

#: After a restart, how long to watch for any sign that an interrupted job started again.
QUIET_WINDOW = 1.5


def _survivor(stack: Stack, job_id: str) -> dict[str, object]:
    """The job as the restarted engine has it (it must still know it)."""
    reply = stack.engine_api().request("GET", f"/api/jobs/{job_id}")
    assert reply.status == 200, f"the restarted engine does not know job {job_id}: {reply}"
    job: dict[str, object] = reply.json()
    return job


class TestOutage:
    def test_engine_down_then_back(self, make_stack: StackFactory) -> None:
        """Engine killed: the list is 200 ``engine:"down"`` without jobs, a run 502; after a restart, jobs are back."""
        stack = make_stack(gateways={"open": False})
        panel = stack.panel("open")
        ready = panel.create("demo.echo", {"message": "before the outage"})
        done = panel.create("demo.echo", {"message": "ran before the outage"})
        assert panel.run(done["id"]).status == 202
        assert panel.wait_status(done["id"])["status"] == "DONE"

        stack.engine.kill()
        listed = panel.jobs()
        assert listed.status == 200, listed
        body = listed.json()
        assert body["engine"] == "down" and body["jobs"] == []
        assert body["warning"]
        refused = panel.run(ready["id"])
        assert refused.status == 502, refused
        assert refused.json()["code"] == "engine_unavailable"
        # The session survives the outage: nobody has to sign in again.
        assert panel.request("GET", "/api/admin/config").status == 200

        stack.start_engine()
        listed = panel.jobs()
        assert listed.status == 200, listed
        assert listed.json()["engine"] == "up"
        ids = {job["id"] for job in listed.json()["jobs"]}
        assert {ready["id"], done["id"]} <= ids
        assert _survivor(stack, ready["id"])["status"] == "READY"
        assert _survivor(stack, done["id"])["status"] == "DONE"
        assert panel.log_texts(done["id"]) == ["ran before the outage"]


class TestShutdown:
    def test_sigterm_stops_everything_cleanly(self, make_stack: StackFactory) -> None:
        """SIGTERM (systemd's stop) ends gateway and engine with status 0 and ends a running job's processes."""
        stack = make_stack(gateways={"open": False})
        panel = stack.panel("open")
        job = panel.create("demo.sleep", {"seconds": 600})
        assert panel.run(job["id"]).status == 202
        poll(lambda: panel.log_texts(job["id"]), bool, timeout=30, what="the job's first log line")
        assert job_pids(job["id"])

        assert stack.gateways["open"].stop() == 0, stack.log_tails()
        assert stack.engine.stop() == 0, stack.log_tails()
        assert not job_pids(job["id"]), "a job process outlived its engine's shutdown"


class TestRestartMidRun:
    def test_sigkill_during_a_run(self, make_stack: StackFactory) -> None:
        """SIGKILL mid-run: the job's processes die with it; after a restart it is FAILED/interrupted, not re-run."""
        stack = make_stack(gateways={"open": False})
        panel = stack.panel("open")
        job = panel.create("demo.sleep", {"seconds": 600})
        assert panel.run(job["id"], reason="crash test").status == 202
        poll(lambda: panel.log_texts(job["id"]), bool, timeout=30, what="the job's first log line")
        assert job_pids(job["id"]), "the running job's process is not visible"

        stack.engine.kill()
        poll(
            lambda: job_pids(job["id"]),
            lambda pids: not pids,
            timeout=20,
            what="the job's processes to end with their engine",
        )

        stack.start_engine()
        survivor = _survivor(stack, job["id"])
        assert survivor["status"] == "FAILED"
        assert survivor["error"] == "interrupted: engine restarted"
        history = survivor["history"]
        assert isinstance(history, list)
        assert [entry["status"] for entry in history] == ["READY", "RUNNING", "FAILED"]
        assert history[1]["by"] == USER and history[2]["by"] == "system"

        deadline = time.monotonic() + QUIET_WINDOW
        while time.monotonic() < deadline:
            assert not job_pids(job["id"]), "the interrupted job was started again"
            assert panel.job(job["id"])["status"] == "FAILED"
            time.sleep(0.1)
        lines = panel.log_texts(job["id"])
        assert sum(line.startswith("sleeping ") for line in lines) <= 1, lines
