"""The durable engine as a real process: restarts, snapshots, tampering, start-up refusals, token file.

Each test runs ``engine-hub serve`` on its own data directory (see
:mod:`tests.integration.engine.process`) and checks what survives a clean
stop (SIGTERM) or a crash (SIGKILL), and what ``engine-hub audit`` says
about the journal the engine wrote.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine_hub.http.app import restore
from engine_hub.settings import Settings
from engine_hub.store.embedded import ENGINE_LOG_SIZE, JobStore
from shared.contract import JobStatus
from shared.journal.file import FileJournal
from tests.integration.engine.process import (
    TOKEN,
    EngineProcess,
    MakeEngineProcess,
    cli,
    mark_catalog,
    one_line_error,
    wait_until,
)

INTERRUPTED = "interrupted: engine restarted"


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A catalog with the demo types and ``mark``."""
    return mark_catalog(tmp_path)


def create(engine: EngineProcess, tag: str, seconds: int = 0, **headers: str) -> dict[str, Any]:
    """Create a ``mark`` job (201) and return it."""
    status, job, _ = engine.request(
        "POST", "/api/jobs", {"type": "mark", "params": {"tag": tag, "seconds": seconds}}, headers=headers
    )
    assert status == 201, job
    return dict(job)


def wait_status(engine: EngineProcess, job_id: str, *statuses: str) -> dict[str, Any]:
    """Poll a job until its status is one of ``statuses``."""
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(engine.ok("GET", f"/api/jobs/{job_id}"))
        return found["status"] in statuses

    wait_until(reached, timeout=20, what=f"job {job_id} {statuses}")
    return found


def segment_lines(data_dir: Path) -> tuple[Path, list[bytes]]:
    """The first journal segment and its lines (newline kept)."""
    segment = sorted((data_dir / "journal").glob("segment-*.jsonl"))[0]
    return segment, segment.read_bytes().splitlines(keepends=True)


class TestRestart:
    def test_clean_stop_and_crash_keep_jobs_history_logs_and_interrupt_running_jobs(
        self, tmp_path: Path, catalog: Path, engine_process: MakeEngineProcess
    ) -> None:
        """Jobs, history and logs survive SIGTERM and SIGKILL; a RUNNING job comes back FAILED by system, not re-run."""
        engine = engine_process(tmp_path / "data", "--config", str(catalog)).start()
        done = create(engine, "done")
        chatty = engine.ok("POST", "/api/jobs", {"type": "demo.sleep", "params": {"seconds": 1}}, status=201)
        engine.ok("POST", f"/api/jobs/{done['id']}/run", {"reason": "first"}, status=202)
        engine.ok("POST", f"/api/jobs/{chatty['id']}/run", status=202)
        done = wait_status(engine, done["id"], "DONE")
        chatty = wait_status(engine, chatty["id"], "DONE")
        ready = create(engine, "ready")
        assert engine.stop() == 0

        engine.start()
        assert engine.ok("GET", f"/api/jobs/{done['id']}") == done
        assert engine.ok("GET", f"/api/jobs/{chatty['id']}") == chatty
        assert engine.ok("GET", f"/api/jobs/{ready['id']}")["status"] == "READY"
        logs = engine.ok("GET", f"/api/jobs/{chatty['id']}/logs?after=1")
        assert [line["text"] for line in logs["lines"]] == ["slept 1/1s", "done"]
        assert logs["next"] == 3 and logs["truncated"] is False
        long = create(engine, "long", seconds=120)
        engine.ok("POST", f"/api/jobs/{long['id']}/run", status=202)
        # Nobody reads the log: the line reaches the file by the engine's periodic flush alone.
        log_file = tmp_path / "data" / "logs" / f"{long['id']}.log"
        wait_until(
            lambda: log_file.exists() and b"marked long" in log_file.read_bytes(),
            timeout=20,
            what="the running job's output on disk",
        )
        engine.kill()

        engine.start()
        job = engine.ok("GET", f"/api/jobs/{long['id']}")
        assert (job["status"], job["error"], job["exitCode"]) == ("FAILED", INTERRUPTED, None)
        assert [(h["status"], h["by"]) for h in job["history"]] == [
            ("READY", "admin"),
            ("RUNNING", "admin"),
            ("FAILED", "system"),
        ]
        audit = engine.ok("GET", f"/api/audit?jobId={long['id']}")
        assert [r["action"] for r in audit] == ["job_interrupted", "job_started", "run_requested", "job_created"]
        assert (audit[0]["actor"], audit[0]["source"]) == ("system", "engine")
        assert audit[0]["data"] == {"status": "FAILED", "error": INTERRUPTED}
        logs = engine.ok("GET", f"/api/jobs/{long['id']}/logs")
        assert [line["text"] for line in logs["lines"]] == ["marked long"]
        assert engine.ok("GET", f"/api/jobs/{ready['id']}")["status"] == "READY"  # nothing runs at boot
        assert engine.stop() == 0
        assert (tmp_path / "runs" / long["id"]).read_text() == "ran\n"
        assert not (tmp_path / "runs" / ready["id"]).exists()


def restored(data_dir: Path) -> tuple[JobStore, int, bool]:
    """Rebuild a store from ``data_dir`` the way the engine starts; return it, records replayed, snapshot used."""
    settings = Settings(data_dir=data_dir)
    journal = FileJournal.open(data_dir / "journal")
    store = JobStore()
    try:
        count = restore(journal, store, settings)
        return store, count, journal.snapshot is not None
    finally:
        journal._release_lock()


class TestSnapshots:
    def test_snapshot_plus_tail_equals_full_replay(
        self, tmp_path: Path, catalog: Path, engine_process: MakeEngineProcess
    ) -> None:
        """The store from the newest snapshot and the tail is identical to one replayed from record 1."""
        engine = engine_process(
            tmp_path / "data", "--config", str(catalog), "--snapshot-records", "100", "--log-max-bytes", "4096"
        ).start()
        for i in range(40):
            job = create(engine, f"a{i}", seconds=30 if i % 10 == 3 else 0)
            if i % 4:
                engine.ok("POST", f"/api/jobs/{job['id']}/run", {"reason": f"r{i}"}, status=202)
            if i % 10 == 3:
                wait_status(engine, job["id"], "RUNNING")
                engine.ok("POST", f"/api/jobs/{job['id']}/cancel", status=202)
        chatty = engine.ok("POST", "/api/jobs", {"type": "demo.echo", "params": {"message": "x" * 4090}}, status=201)
        engine.ok("POST", f"/api/jobs/{chatty['id']}/run", status=202)
        wait_until(
            lambda: not any(j["status"] == "RUNNING" for j in engine.all_jobs().values()),
            timeout=30,
            what="every run over",
        )
        assert engine.stop() == 0  # writes a snapshot at the clean stop
        engine.start()
        running = ""
        for i in range(15):  # the tail: after the last snapshot, then a crash
            job = create(engine, f"b{i}", seconds=60 if i == 7 else 0)
            if i % 3 == 1:
                engine.ok("POST", f"/api/jobs/{job['id']}/run", status=202)
                running = job["id"] if i == 7 else running
        wait_until(
            lambda: any(r["action"] == "job_started" for r in engine.ok("GET", f"/api/audit?jobId={running}")),
            timeout=20,
            what="the long run's pid journaled",
        )
        engine.kill()
        with_snapshot, without = tmp_path / "with", tmp_path / "without"
        shutil.copytree(tmp_path / "data", with_snapshot)
        shutil.copytree(tmp_path / "data", without)
        shutil.rmtree(without / "journal" / "snapshots")

        fast, tail, used = restored(with_snapshot)
        full, everything, used_none = restored(without)
        assert used and not used_none and 0 < tail < everything
        assert (fast.seq, fast.head) == (full.seq, full.head)
        assert fast.cut().entries == full.cut().entries  # every field, and the JSON byte for byte
        assert fast.engine_logs(ENGINE_LOG_SIZE) == full.engine_logs(ENGINE_LOG_SIZE)
        assert fast.results(1000) == full.results(1000) and len(full.results(1000)) > 20
        for status in JobStatus:
            assert fast.count(status) == full.count(status)
            assert fast.page(limit=1000, status=status) == full.page(limit=1000, status=status)
        truncated = fast.get(chatty["id"])
        assert truncated is not None and truncated.log_truncated and truncated.status is JobStatus.DONE
        assert any(e.cancel_requested_by == "admin" for e in fast.cut().entries)
        assert any(e.pid is not None for e in fast.cut().entries)


class TestTampering:
    @pytest.fixture
    def journal_copy(self, tmp_path: Path, catalog: Path, engine_process: MakeEngineProcess) -> tuple[Path, str]:
        """A data dir written by a real engine (7 records, a clean stop) and its `audit head` hash."""
        engine = engine_process(tmp_path / "data", "--config", str(catalog)).start()
        first = create(engine, "one")
        create(engine, "two")
        engine.ok("POST", f"/api/jobs/{first['id']}/run", status=202)
        wait_status(engine, first["id"], "DONE")
        create(engine, "three")
        assert engine.stop() == 0
        head = cli("audit", "head", "--data-dir", str(tmp_path / "data"), "--json")
        assert head.returncode == 0, head.stderr
        saved = json.loads(head.stdout)
        assert saved["seq"] == 6
        return tmp_path / "data", saved["hash"]

    def tampered(self, source: Path, name: str, change: Any, *, drop_snapshots: bool = False) -> Path:
        """A copy of ``source`` whose first segment's lines went through ``change``."""
        copy = source.parent / name
        shutil.copytree(source, copy)
        segment, lines = segment_lines(copy)
        segment.write_bytes(b"".join(change(lines)))
        if drop_snapshots:
            shutil.rmtree(copy / "journal" / "snapshots")
        return copy

    def verify(self, data_dir: Path, *extra: str) -> tuple[int, str]:
        result = cli("audit", "verify", "--data-dir", str(data_dir), *extra)
        assert "Traceback" not in result.stderr
        return result.returncode, result.stdout.strip()

    def test_every_kind_of_tampering_is_detected_at_the_first_bad_record(self, journal_copy: tuple[Path, str]) -> None:
        """A changed byte, a deleted record, two swapped records and a cut tail each fail verify, naming the record."""
        source, head = journal_copy
        assert self.verify(source) == (0, f"ok: 6 records intact, seq 1..6, head {head}")

        def flip(lines: list[bytes]) -> list[bytes]:
            lines[2] = lines[2].replace(b'"actor":"admin"', b'"actor":"admim"')
            return lines

        def delete(lines: list[bytes]) -> list[bytes]:
            return lines[:3] + lines[4:]

        def swap(lines: list[bytes]) -> list[bytes]:
            return [lines[0], lines[2], lines[1], *lines[3:]]

        def cut(lines: list[bytes]) -> list[bytes]:
            return lines[:-2]

        cases = [
            (flip, False, (), "line 3 (seq 3): hash mismatch"),
            (delete, False, (), "line 4 (seq 5): expected seq 4"),
            (swap, False, (), "line 2 (seq 3): expected seq 2"),
            (cut, False, (), "snapshot snapshot-000000000006.json covers seq 6 but the journal ends at seq 4"),
            (cut, True, ("--expected-head", head), f"the saved head {head} is not in the chain"),
        ]
        for change, drop, extra, needle in cases:
            copy = self.tampered(source, f"{change.__name__}{int(drop)}", change, drop_snapshots=drop)
            status, out = self.verify(copy, *extra)
            assert status == 1 and out.startswith("FAILED: first bad record at segment-000000000001.jsonl"), out
            assert needle in out, out
        # Without the saved head, a cut tail whose snapshots went too is undetectable: that is why heads are kept.
        assert self.verify(source.parent / "cut1")[0] == 0

    def test_engine_refuses_to_start_on_a_broken_chain(self, journal_copy: tuple[Path, str], catalog: Path) -> None:
        """A broken chain stops the start: exit 1, one line naming the record and `audit verify`."""
        source, _ = journal_copy
        copy = self.tampered(source, "broken", lambda lines: lines[:3] + lines[4:], drop_snapshots=True)
        result = cli("serve", "--port", "0", "--data-dir", str(copy), "--config", str(catalog))
        one_line_error(result, 1, "segment-000000000001.jsonl line 4 (seq 5)", "engine-hub audit verify")

    def test_appends_by_the_engine_keep_the_chain_and_the_saved_head(
        self, journal_copy: tuple[Path, str], catalog: Path, engine_process: MakeEngineProcess
    ) -> None:
        """A pure append by the engine itself passes verify, also against the head saved before it."""
        source, head = journal_copy
        engine = engine_process(source, "--config", str(catalog)).start()
        create(engine, "four")
        assert engine.stop() == 0
        status, out = self.verify(source, "--expected-head", head)
        assert (status, out.split(",")[0]) == (0, "ok: 7 records intact")

    def test_torn_last_line_is_cut_with_a_warning(
        self, journal_copy: tuple[Path, str], catalog: Path, engine_process: MakeEngineProcess
    ) -> None:
        """A half-written last record (a crash mid-write) is cut off at start; everything before it is kept."""
        source, _ = journal_copy
        segment, lines = segment_lines(source)
        segment.write_bytes(b"".join(lines) + lines[-1][:40])
        engine = engine_process(source, "--config", str(catalog)).start()
        assert len(engine.all_jobs()) == 3
        assert engine.stop() == 0
        assert "journal_torn_tail_truncated" in {e["event"] for e in engine.events()}
        assert self.verify(source)[0] == 0


class TestStartup:
    def test_second_engine_on_the_same_data_dir_is_refused(
        self, tmp_path: Path, catalog: Path, engine_process: MakeEngineProcess
    ) -> None:
        """Only one engine may write a journal: the second exits 1 with one line."""
        engine_process(tmp_path / "data", "--config", str(catalog)).start()
        result = cli("serve", "--port", "0", "--data-dir", str(tmp_path / "data"), "--config", str(catalog))
        one_line_error(result, 1, "in use by another process", "only one engine")

    def test_ephemeral_writes_no_files(self, tmp_path: Path, engine_process: MakeEngineProcess) -> None:
        """--ephemeral with a configured token: jobs, runs and audit work and the data dir stays empty."""
        data = tmp_path / "data"
        engine = engine_process(data, "--ephemeral").start()
        job = engine.ok("POST", "/api/jobs", {"type": "demo.echo"}, status=201)
        engine.ok("POST", f"/api/jobs/{job['id']}/run", status=202)
        wait_status(engine, job["id"], "DONE")
        assert [r["action"] for r in engine.ok("GET", "/api/audit")][-1] == "job_created"
        assert engine.stop() == 0
        assert not data.exists() or not list(data.iterdir())


class TestTokenFile:
    def test_token_file_is_the_admin_token(self, tmp_path: Path, engine_process: MakeEngineProcess) -> None:
        """serve --token-file: the file's token (newline ignored) is the admin token; ENGINE_HUB_TOKEN is not used."""
        token_file = tmp_path / "engine-token"
        token_file.write_text("from-a-credential-file-0123456789\n")
        token_file.chmod(0o600)
        engine = engine_process(tmp_path / "data", "--ephemeral", "--token-file", str(token_file))
        engine.start()
        status, _, _ = engine.request("GET", "/api/jobs")
        assert status == 401
        status, _, _ = engine.request(
            "GET", "/api/jobs", headers={"Authorization": "Bearer from-a-credential-file-0123456789"}
        )
        assert status == 200

    @pytest.mark.parametrize(
        ("content", "needle"),
        [
            (None, "does not exist"),
            ("", "is empty"),
            ("\n", "is empty"),
            ("short\n", "16 to 512 characters"),
            ("has spaces in it 0123456789\n", "without spaces"),
        ],
    )
    def test_bad_token_file_refuses_to_start(self, tmp_path: Path, content: str | None, needle: str) -> None:
        """A missing, empty, short or malformed token file: exit 2 with one line naming the file."""
        token_file = tmp_path / "engine-token"
        if content is not None:
            token_file.write_text(content)
        result = cli(
            "serve", "--port", "0", "--data-dir", str(tmp_path), "--ephemeral", "--token-file", str(token_file)
        )
        one_line_error(result, 2, str(token_file), needle)
        assert TOKEN not in result.stderr
        assert not os.path.exists(tmp_path / "token")
