"""The product as its clients meet it: real engine and gateway processes, plain HTTP clients.

A legacy system with a submit-scope token talks to the engine directly; an
admin signs in to a gateway through its login form and works through the
admin API, once with SAFE_MODE on and once with it off (two gateway
processes in front of the same engine).
"""

from __future__ import annotations

import time

from tests.e2e.harness import (
    CLIENT_NAME,
    CLIENT_TOKEN,
    TOUCH_TYPE,
    USER,
    Stack,
    job_pids,
    poll,
)

#: How long a job created by the legacy route is watched for any sign that it ran.
QUIET_WINDOW = 1.5


class TestLegacyClient:
    def test_legacy_run_route_creates_a_ready_job_that_never_runs(self, stack: Stack) -> None:
        """``POST /engines/jobs/run`` answers 202 with a READY job that stays READY and runs nothing."""
        client = stack.engine_api(CLIENT_TOKEN)
        reply = client.request("POST", "/engines/jobs/run", {"engine": TOUCH_TYPE, "name": "nightly-sync"})
        assert reply.status == 202, reply
        job = reply.json()
        assert (job["status"], job["type"], job["engine"], job["name"]) == (
            "READY",
            TOUCH_TYPE,
            TOUCH_TYPE,
            "nightly-sync",
        )
        assert job["createdBy"] == CLIENT_NAME
        assert job["startedAt"] is None and job["runBy"] is None

        admin = stack.engine_api()
        deadline = time.monotonic() + QUIET_WINDOW
        while time.monotonic() < deadline:
            assert admin.job(job["id"])["status"] == "READY"
            assert not stack.ran(job["id"]), "the legacy route ran the job"
            assert not job_pids(job["id"])
            time.sleep(0.1)

        listed = client.request("GET", "/engines/jobs")
        assert listed.status == 200, listed
        assert [j["status"] for j in listed.json() if j["id"] == job["id"]] == ["READY"]

    def test_submit_token_cannot_run_but_an_admin_can(self, stack: Stack) -> None:
        """The client token gets 403 on run and nothing runs; the admin token's run leaves the marker."""
        client = stack.engine_api(CLIENT_TOKEN)
        job = client.request("POST", "/engines/jobs/run", {"engine": TOUCH_TYPE, "name": "sync"}).json()
        for path in (f"/api/jobs/{job['id']}/run", f"/api/jobs/{job['id']}/cancel"):
            refused = client.request("POST", path, {})
            assert refused.status == 403, refused
            assert set(refused.json()) == {"error", "code"}
        admin = stack.engine_api()
        assert admin.job(job["id"])["status"] == "READY"
        assert not stack.ran(job["id"])

        # The marker is a live witness: a real run leaves it.
        admin.run(job["id"], reason="e2e control")
        assert admin.wait_status(job["id"])["status"] == "DONE"
        assert stack.ran(job["id"])

    def test_plain_create_route_without_run_does_not_run(self, stack: Stack) -> None:
        """``POST /api/jobs/{id}`` (no ``/run``) never runs the job, whatever the token."""
        admin = stack.engine_api()
        job = admin.create(TOUCH_TYPE)
        for token_api in (admin, stack.engine_api(CLIENT_TOKEN)):
            reply = token_api.request("POST", f"/api/jobs/{job['id']}", {})
            assert 400 <= reply.status < 500, reply
        assert admin.job(job["id"])["status"] == "READY"
        assert not stack.ran(job["id"])


class TestAdminFlow:
    def test_login_form_config_and_list(self, stack: Stack) -> None:
        """Signing in through the form (CSRF token included) gives a session that reads config and jobs."""
        panel = stack.panel("safe", login=False)
        anonymous = panel.request("GET", "/api/admin/config")
        assert anonymous.status == 401, anonymous
        answer = panel.login()
        assert answer.status == 303, answer
        assert answer.headers["Location"] == "/admin/engine/jobs"

        config = panel.request("GET", "/api/admin/config").json()
        assert config["user"] == USER and config["isSuperAdmin"] is True
        assert config["userRole"] == "super_admin" and config["safeMode"] is True
        assert config["csrfToken"]

        job = stack.engine_api().create("demo.echo", {"message": "listed"})
        listed = panel.jobs()
        assert listed.status == 200, listed
        body = listed.json()
        assert body["engine"] == "up" and body["safeMode"] is True
        assert job["id"] in [j["id"] for j in body["jobs"]]

    def test_login_without_csrf_token_is_refused(self, stack: Stack) -> None:
        """A login POST that lacks the form's CSRF token does not sign in."""
        panel = stack.panel("safe", login=False)
        answer = panel.request("POST", "/login", form={"username": USER, "password": "correct horse battery staple"})
        assert answer.status == 403, answer
        assert panel.request("GET", "/api/admin/config").status == 401

    def test_safe_mode_refuses_run_and_the_job_stays_ready(self, stack: Stack) -> None:
        """With SAFE_MODE on a run is 403 ``safe_mode`` and the engine's job is still READY."""
        panel = stack.panel("safe")
        job = panel.create("demo.sleep", {"seconds": 1})
        assert job["status"] == "READY" and job["createdBy"] == USER
        refused = panel.run(job["id"], reason="should not start")
        assert refused.status == 403, refused
        assert refused.json()["code"] == "safe_mode"
        engine_job = stack.engine_api().job(job["id"])
        assert engine_job["status"] == "READY" and engine_job["startedAt"] is None
        assert not job_pids(job["id"])

    def test_run_goes_running_then_done_with_its_log(self, stack: Stack) -> None:
        """With SAFE_MODE off a run is 202, then RUNNING, then DONE; the log and history show it."""
        panel = stack.panel("open")
        job = panel.create("demo.sleep", {"seconds": 1})
        accepted = panel.run(job["id"], reason="e2e: nightly check")
        assert accepted.status == 202, accepted
        assert accepted.json()["status"] == "accepted" and accepted.json()["jobId"] == job["id"]

        seen: list[str] = []

        def status() -> str:
            current = str(panel.job(job["id"])["status"])
            if not seen or seen[-1] != current:
                seen.append(current)
            return current

        poll(status, lambda s: s in ("DONE", "FAILED"), timeout=30, interval=0.05, what="the run to end")
        assert seen[0] == "RUNNING" and seen[-1] == "DONE", seen
        done = panel.job(job["id"])
        assert done["exitCode"] == 0 and done["error"] is None
        assert done["runBy"] == USER and done["runReason"] == "e2e: nightly check"
        assert [h["status"] for h in done["history"]] == ["READY", "RUNNING", "DONE"]

        lines = panel.log_texts(job["id"])
        assert lines[0] == f"sleeping 1s (job {job['id']})"
        assert lines[1:] == ["slept 1/1s", "done"]

        again = panel.run(job["id"])
        assert again.status == 400, again
        assert again.json()["code"] == "not_ready"

    def test_cancel_stops_the_whole_job(self, stack: Stack) -> None:
        """Cancelling a long job ends it FAILED "cancelled by <user>" and leaves none of its processes."""
        panel = stack.panel("open")
        job = panel.create("demo.sleep", {"seconds": 600})
        assert panel.run(job["id"]).status == 202
        poll(lambda: panel.log_texts(job["id"]), bool, timeout=30, what="the job's first log line")
        assert job_pids(job["id"]), "the running job's process is not visible"

        cancelled = panel.cancel(job["id"])
        assert cancelled.status == 202, cancelled
        failed = panel.wait_status(job["id"])
        assert failed["status"] == "FAILED"
        assert failed["error"] == f"cancelled by {USER}"
        assert failed["history"][-1]["by"] == USER
        poll(lambda: job_pids(job["id"]), lambda pids: not pids, timeout=15, what="the job's processes to end")

        assert panel.cancel(job["id"]).status in (400, 409)
