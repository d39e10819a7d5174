"""Log retention on a real engine: finished jobs' log files go (journaled), live ones stay, /metrics counts bytes."""

from __future__ import annotations

import http.client
import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.engine.cli_server import assert_one_line_error, cli
from tests.integration.engine.process import TOKEN, EngineProcess, MakeEngineProcess, mark_catalog, wait_until

#: Retention of 1.7 s (sweeps every second): the test sees logs expire without waiting days.
RETENTION_DAYS = "0.00002"


def metric(engine: EngineProcess, name: str) -> int:
    """One un-labelled value from the engine's ``/metrics`` (fails if absent)."""
    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    match = re.search(rf"^{name} (\d+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return int(match.group(1))


def run_mark(engine: EngineProcess, tag: str, seconds: int) -> str:
    """Create and run a ``mark`` job; return its id once its first line is in its log."""
    job = engine.ok("POST", "/api/jobs", {"type": "mark", "params": {"tag": tag, "seconds": seconds}}, status=201)
    engine.ok("POST", f"/api/jobs/{job['id']}/run", {}, status=202)
    wait_until(lambda: engine.ok("GET", f"/api/jobs/{job['id']}/logs")["lines"], timeout=15, what=f"{tag}'s output")
    return str(job["id"])


def wait_status(engine: EngineProcess, job_id: str, status: str) -> None:
    """Wait until the job has ``status``."""
    wait_until(
        lambda: engine.ok("GET", f"/api/jobs/{job_id}")["status"] == status, timeout=15, what=f"job {job_id} {status}"
    )


def logs_answer(engine: EngineProcess, job_id: str) -> tuple[int, Any]:
    """``GET /api/jobs/{id}/logs``: status and body."""
    status, body, _ = engine.request("GET", f"/api/jobs/{job_id}/logs")
    return status, body


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """The demo types plus ``mark``."""
    return mark_catalog(tmp_path)


class TestLogRetention:
    def test_finished_logs_expire_running_and_ready_jobs_are_kept(
        self, tmp_path: Path, catalog: Path, engine_process: MakeEngineProcess
    ) -> None:
        """Past the retention a finished job's log is deleted after a system log_expired record; 404 log_expired."""
        engine = engine_process(tmp_path / "data", "--config", str(catalog), "--log-retention-days", RETENTION_DAYS)
        logs_dir = tmp_path / "data" / "logs"
        engine.start()
        done1 = run_mark(engine, "done1", 0)
        wait_status(engine, done1, "DONE")
        long = run_mark(engine, "long", 60)
        done2 = run_mark(engine, "done2", 0)  # written after long's only line: its expiry follows long's age
        wait_status(engine, done2, "DONE")
        ready = engine.ok("POST", "/api/jobs", {"type": "mark", "params": {"tag": "ready"}}, status=201)["id"]
        sizes = {job_id: (logs_dir / f"{job_id}.log").stat().st_size for job_id in (done1, done2)}
        # One sweep deletes both, one after the other (each after its journal record), in no set order.
        wait_until(
            lambda: not any((logs_dir / f"{job_id}.log").exists() for job_id in (done1, done2)),
            timeout=20,
            what="done1's and done2's logs deleted",
        )
        for job_id in (done1, done2):
            status, body = logs_answer(engine, job_id)
            assert (status, body["code"]) == (404, "log_expired"), body
            status, body, _ = engine.request("GET", f"/api/jobs/{job_id}/logs.txt")  # the download says the same
            assert (status, body["code"]) == (404, "log_expired"), body
            assert engine.ok("GET", f"/api/jobs/{job_id}")["status"] == "DONE"  # the job itself stays
            records = engine.ok("GET", f"/api/audit?jobId={job_id}&actor=system")
            expired = [r for r in records if r["action"] == "log_expired"]
            assert [(r["source"], r["data"]) for r in expired] == [
                ("engine", {"bytes": sizes[job_id], "retentionDays": float(RETENTION_DAYS)})
            ]
        # The RUNNING job's file was as old as done1's and is untouched; READY has none to touch.
        assert [line["text"] for line in engine.ok("GET", f"/api/jobs/{long}/logs")["lines"]] == ["marked long"]
        assert logs_answer(engine, ready) == (200, {"lines": [], "next": 0, "truncated": False})
        assert metric(engine, "engine_job_logs_expired_total") == 2
        assert metric(engine, "engine_job_log_expired_bytes_total") == sum(sizes.values())
        assert metric(engine, "engine_job_log_bytes") == (logs_dir / f"{long}.log").stat().st_size
        result = cli("jobs", "logs", done1, "--url", f"http://127.0.0.1:{engine.port}", env={"ENGINE_HUB_TOKEN": TOKEN})
        assert_one_line_error(result, 1, "deleted by log retention", "log_expired", "HTTP 404")
        # After a crash (journal replay) and after a clean stop (snapshot), the expiry holds.
        engine.kill()
        engine.extra = ["--config", str(catalog), "--snapshot-records", "100"]
        for restart in ("after a kill", "from the snapshot of a clean stop"):
            engine.start()
            status, body = logs_answer(engine, done1)
            assert (status, body["code"]) == (404, "log_expired"), restart
            assert engine.stop() == 0
        assert any(e["event"] == "journal_replayed" and e["snapshot_seq"] for e in engine.events())

    def test_log_bytes_gauge_follows_writes_and_restarts(
        self, tmp_path: Path, catalog: Path, engine_process: MakeEngineProcess
    ) -> None:
        """engine_job_log_bytes is the size of the log files: it grows with output and is found again at start."""
        engine = engine_process(tmp_path / "data", "--config", str(catalog))
        engine.start()
        assert metric(engine, "engine_job_log_bytes") == 0
        first = run_mark(engine, "one", 0)
        wait_status(engine, first, "DONE")
        size = (tmp_path / "data" / "logs" / f"{first}.log").stat().st_size
        assert size > 0 and metric(engine, "engine_job_log_bytes") == size
        assert metric(engine, "engine_job_logs_expired_total") == 0
        assert engine.stop() == 0
        engine.start()
        assert metric(engine, "engine_job_log_bytes") == size

    @pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "36501", "soon"])
    def test_bad_retention_is_a_usage_error(self, tmp_path: Path, value: str) -> None:
        """--log-retention-days takes a number of days above 0 and at most 36500."""
        result = cli("serve", "--port", "0", "--data-dir", str(tmp_path), f"--log-retention-days={value}")
        assert_one_line_error(result, 2, "argument --log-retention-days:")
