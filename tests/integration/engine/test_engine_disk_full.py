"""A real engine whose disk fills up: it fails closed, keeps serving reads and heals by itself.

The data directory sits on a real 256 KiB tmpfs (root only; skipped with the
reason elsewhere), filled to the last byte while the engine runs.
"""

from __future__ import annotations

from pathlib import Path

from tests.disk import fill
from tests.integration.engine.process import EngineProcess, MakeEngineProcess, job_processes, mark_catalog, wait_until


class TestDiskFull:
    def test_mutations_503_nothing_changes_reads_work_then_recovers(
        self, tiny_fs: Path, tmp_path: Path, engine_process: MakeEngineProcess
    ) -> None:
        """Disk full: 503 journal_unavailable, no state change, no process; reads and healthz work; then heals."""
        catalog = mark_catalog(tmp_path)
        engine = engine_process(tiny_fs / "data", "--config", str(catalog)).start()
        ready = engine.ok("POST", "/api/jobs", {"type": "mark", "params": {"tag": "ready"}}, status=201)
        filler = fill(tiny_fs)
        # Records may still fit in the slack of the segment's last page: create until refused, so
        # what is left is less than one creation, and a run record with a long reason cannot fit.
        acked = {ready["id"]}
        for i in range(20):
            status, body, _ = engine.request("POST", "/api/jobs", {"type": "mark", "params": {"tag": f"n{i}"}})
            if status != 201:
                break
            acked.add(body["id"])
        assert (status, body["code"]) == (503, "journal_unavailable")
        status, body, _ = engine.request("POST", f"/api/jobs/{ready['id']}/run", {"reason": "r" * 1000})
        assert (status, body["code"]) == (503, "journal_unavailable")
        assert engine.ok("GET", f"/api/jobs/{ready['id']}")["status"] == "READY"
        assert set(engine.all_jobs()) == acked
        assert not (tmp_path / "runs" / ready["id"]).exists()
        assert not list(job_processes({ready["id"]}))
        assert engine.ok("GET", "/healthz")["status"] == "degraded"
        assert "engine_journal_healthy 0" in engine_metrics(engine)
        errors = [e for e in engine.events() if e["event"] == "journal_write_failed"]
        assert errors and errors[0]["level"] == "error"

        filler.unlink()
        engine.ok("POST", f"/api/jobs/{ready['id']}/run", status=202)
        engine.ok("POST", "/api/jobs", {"type": "mark", "params": {"tag": "after"}}, status=201)
        assert engine.ok("GET", "/healthz") == {"status": "ok"}
        wait_until(
            lambda: engine.ok("GET", f"/api/jobs/{ready['id']}")["status"] == "DONE",
            timeout=20,
            what="the run after recovery",
        )
        engine.stop()
        assert "journal_recovered" in {e["event"] for e in engine.events()}


def engine_metrics(engine: EngineProcess) -> str:
    """The Prometheus text of ``/metrics``."""
    import http.client

    from tests.integration.engine.process import TOKEN

    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        return conn.getresponse().read().decode()
    finally:
        conn.close()
