"""A SIGKILL can leave part of a line at the end of a log file; the next engine cuts it off, as the journal does."""

from __future__ import annotations

from pathlib import Path

from tests.integration.engine.process import MakeEngineProcess, job_processes, mark_catalog, wait_until

#: What a kill in the middle of writing a line leaves behind.
FRAGMENT = b'{"request_id":"abc","method":"GET","path":"/api/jo'


class TestTornLogs:
    def test_engine_output_torn_by_a_kill_is_cut_at_the_next_start(
        self, tmp_path: Path, engine_process: MakeEngineProcess
    ) -> None:
        """A partial last line in the engine's own log file is cut at the next start: every line parses."""
        engine = engine_process(tmp_path / "data")
        engine.start()
        engine.kill()
        with engine.log_path.open("ab") as f:
            f.write(FRAGMENT)
        engine.start()
        # events() parses every line strictly: a first line glued onto the fragment would fail here.
        torn = [e for e in engine.events() if e["event"] == "log_torn_tail_truncated"]
        assert [(e["level"], e["bytes"]) for e in torn] == [("warning", len(FRAGMENT))]
        assert FRAGMENT not in engine.log_path.read_bytes()
        assert engine.stop() == 0

    def test_job_log_torn_by_a_kill_is_cut_when_the_run_is_recorded_interrupted(
        self, tmp_path: Path, engine_process: MakeEngineProcess
    ) -> None:
        """The log of a run cut by a kill loses its partial last line at the restart, with a warning."""
        engine = engine_process(tmp_path / "data", "--config", str(mark_catalog(tmp_path)))
        engine.start()
        job = engine.ok("POST", "/api/jobs", {"type": "mark", "params": {"tag": "t1", "seconds": 60}}, status=201)
        engine.ok("POST", f"/api/jobs/{job['id']}/run", {}, status=202)
        wait_until(
            lambda: engine.ok("GET", f"/api/jobs/{job['id']}/logs")["lines"],
            timeout=15,
            what="the job's first line",
        )
        engine.kill()
        wait_until(lambda: not list(job_processes({job["id"]})), timeout=15, what="the job process gone")
        path = tmp_path / "data" / "logs" / f"{job['id']}.log"
        whole = path.read_bytes()
        with path.open("ab") as f:
            f.write(b"2\t2026-01-01T00:00:00.000Z\tstdout\tslep")
        engine.start()
        assert path.read_bytes() == whole
        torn = [e for e in engine.events() if e["event"] == "job_log_torn_tail_truncated"]
        assert [(e["job_id"], e["level"]) for e in torn] == [(job["id"], "warning")]
        page = engine.ok("GET", f"/api/jobs/{job['id']}/logs")
        assert [line["text"] for line in page["lines"]] == ["marked t1"]
        assert engine.ok("GET", f"/api/jobs/{job['id']}")["error"] == "interrupted: engine restarted"
