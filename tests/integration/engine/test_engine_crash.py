"""Crash loop: a real engine SIGKILLed at random moments under load, restarted each time.

After every restart: each acknowledged creation and run is there; no job the
test never sent appears; jobs that were RUNNING are FAILED ``interrupted:
engine restarted`` by ``system`` and nothing is RUNNING; no job ran twice (a
side-effect file per job id counts runs); no job process outlives its
engine; no log file (the engine's own output, read strictly by
:meth:`Engine.events`, or a job's) ends in a torn line. Requests in flight at
the kill may or may not have landed: that is the contract (see
docs/journal.md), so they are only checked for "at most".
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import attrs

from tests.integration.engine.process import (
    EngineProcess,
    MakeEngineProcess,
    job_processes,
    jobs_sequence,
    mark_catalog,
    runs_of,
    wait_until,
)

CYCLES = 30
SEED = 20251128
INTERRUPTED = "interrupted: engine restarted"


@attrs.define
class Ledger:
    """What the client sent and what the engine acknowledged, across all cycles."""

    sent_tags: set[str] = attrs.Factory(set)
    acked: dict[str, str] = attrs.Factory(dict)  # tag -> job id
    run_sent: set[str] = attrs.Factory(set)
    run_acked: set[str] = attrs.Factory(set)
    lock: threading.Lock = attrs.Factory(threading.Lock)


def workload(engine: EngineProcess, ledger: Ledger, rng: random.Random, stop: threading.Event, prefix: str) -> None:
    """Create ``mark`` jobs and run READY ones until ``stop`` (or the engine dies)."""
    n = 0
    while not stop.is_set():
        job_id = None
        if rng.random() < 0.5:
            with ledger.lock:  # pick and mark in one step: each job gets exactly one run request
                runnable = [i for i in ledger.acked.values() if i not in ledger.run_sent]
                if runnable:
                    job_id = rng.choice(runnable)
                    ledger.run_sent.add(job_id)
        try:
            if job_id is not None:
                status, body, _ = engine.request("POST", f"/api/jobs/{job_id}/run", {"reason": "crash loop"}, timeout=5)
                assert status == 202, (status, body)
                if status == 202:
                    with ledger.lock:
                        ledger.run_acked.add(job_id)
            else:
                n += 1
                tag = f"{prefix}-{n}"
                with ledger.lock:
                    ledger.sent_tags.add(tag)
                params = {"tag": tag, "seconds": rng.choice([0, 0, 1, 3, 30])}
                status, body, _ = engine.request("POST", "/api/jobs", {"type": "mark", "params": params}, timeout=5)
                assert status == 201, (status, body)
                with ledger.lock:
                    ledger.acked[tag] = body["id"]
        except OSError:
            return  # the engine was killed under us: this request may or may not have landed


def check_after_restart(engine: EngineProcess, ledger: Ledger, runs_dir: Path) -> dict[str, dict[str, object]]:
    """Assert every invariant of a restarted engine; return its jobs."""
    jobs = engine.all_jobs()
    tags = {str(j["params"]["tag"]): job_id for job_id, j in jobs.items()}
    unsent = set(tags) - ledger.sent_tags
    assert not unsent, f"jobs nobody sent appeared: {jobs_sequence(list(unsent))}"
    lost = {tag for tag, job_id in ledger.acked.items() if tags.get(tag) != job_id}
    assert not lost, f"acknowledged creations lost: {jobs_sequence(list(lost))}"
    running = [job_id for job_id, j in jobs.items() if j["status"] == "RUNNING"]
    assert not running, f"jobs RUNNING right after a restart: {running}"
    not_ready = {job_id for job_id, j in jobs.items() if j["status"] != "READY"}
    assert ledger.run_acked <= not_ready, "an acknowledged run was lost"
    assert not_ready <= ledger.run_sent, "a job ran that nobody asked to run"
    for job_id in not_ready:
        job = jobs[job_id]
        history = job["history"]
        assert [h["status"] for h in history][:2] == ["READY", "RUNNING"]
        if job["error"] == INTERRUPTED:
            assert history[-1]["by"] == "system" and history[-1]["status"] == "FAILED"
    # A file is created when a job process starts and gets a line right after: an empty file is a
    # process killed in between (it did start once); two lines would be a second start.
    runs = runs_of(runs_dir.parent)
    twice = {job_id: n for job_id, n in runs.items() if n > 1}
    assert not twice, f"jobs that ran more than once: {twice}"
    assert set(runs) <= not_ready, "a job process started without a durable run request"
    torn = [
        p.name
        for p in (engine.data_dir / "logs").glob("*.log")
        if not p.read_bytes().endswith(b"\n") and p.stat().st_size
    ]
    assert not torn, f"job logs ending in a torn line after a restart: {torn}"
    return jobs


class TestCrashLoop:
    def test_sigkill_at_random_moments_keeps_every_promise(
        self, tmp_path: Path, engine_process: MakeEngineProcess
    ) -> None:
        """30 start/load/SIGKILL cycles: nothing acknowledged is lost, nothing runs twice, no orphans."""
        rng = random.Random(SEED)
        catalog = mark_catalog(tmp_path)
        engine = engine_process(tmp_path / "data", "--config", str(catalog), "--snapshot-records", "100")
        ledger = Ledger()
        self.cycles(engine, ledger, rng, tmp_path)
        engine.start()
        jobs = check_after_restart(engine, ledger, tmp_path / "runs")
        assert engine.stop() == 0
        interrupted_seen = sum(j["error"] == INTERRUPTED for j in jobs.values())
        # The load was real: many jobs, many runs, and some were cut short by a kill.
        assert len(jobs) > 100 and len(ledger.run_acked) > 30
        assert interrupted_seen > 3
        snapshots = [e for e in engine.events() if e["event"] == "journal_replayed" and e["snapshot_seq"]]
        assert snapshots, "no restart started from a snapshot"

    @staticmethod
    def cycles(engine: EngineProcess, ledger: Ledger, rng: random.Random, tmp_path: Path) -> None:
        """Run CYCLES start/check/load/SIGKILL cycles."""
        for cycle in range(CYCLES):
            engine.start()
            check_after_restart(engine, ledger, tmp_path / "runs")
            stop = threading.Event()
            workers = [
                threading.Thread(
                    target=workload, args=(engine, ledger, random.Random(rng.random()), stop, f"c{cycle}w{w}")
                )
                for w in range(2)
            ]
            for worker in workers:
                worker.start()
            time.sleep(rng.uniform(0.05, 0.6))
            engine.kill()
            stop.set()
            for worker in workers:
                worker.join(timeout=10)
            ids = set(ledger.acked.values())
            wait_until(
                lambda ids=ids: not list(job_processes(ids)),
                timeout=15,
                what="every job process of the killed engine gone",
            )
