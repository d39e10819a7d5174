"""``engine-hub db import``: a real embedded engine's data directory moved into a real PostgreSQL.

The data directory is built once per module by a real ``engine-hub serve``:
a job run to DONE, one FAILED, one cancelled while it ran, one left READY,
then a clean stop. Each test imports it (or a copy) into a fresh migrated
database and checks what the import promises.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest

from engine_hub.store.pg_rows import JOB_COLUMNS, wire_from_row
from shared.journal.format import segment_name
from shared.journal.tools import prune_segments
from tests.integration.engine.cli_server import assert_one_line_error, cli
from tests.integration.engine.process import EngineProcess, MakeEngineProcess, wait_until
from tests.postgres import PostgresServer


@attrs.frozen(kw_only=True)
class Embedded:
    """A stopped embedded engine's data directory and what its API served before the stop."""

    data_dir: Path
    bodies: dict[str, dict[str, Any]]  # GET /api/jobs/{id}, by id
    listed: list[str]  # the ids as the list serves them, newest first


def _finished(engine: EngineProcess, job_id: str, status: str) -> None:
    wait_until(
        lambda: engine.ok("GET", f"/api/jobs/{job_id}")["status"] == status, timeout=20, what=f"{job_id} {status}"
    )


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Embedded:
    """Run a real engine: DONE, FAILED, cancelled and READY jobs, an open and an approved run request; stop it."""
    engine = EngineProcess(tmp_path_factory.mktemp("embedded") / "data")
    try:
        engine.start()
        ids = {}
        for name, body in {
            "done": {"type": "demo.echo", "params": {"message": "héllo wörld"}},
            "failed": {"type": "demo.fail", "params": {"code": 3}},
            "cancelled": {"type": "demo.sleep", "params": {"seconds": 60}},
            "ready": {"type": "demo.sleep", "params": {"seconds": 1}},
            "requested": {"type": "demo.guarded"},
            "approved": {"type": "demo.guarded"},
        }.items():
            ids[name] = engine.ok("POST", "/api/jobs", body, status=201)["id"]
        # Run requests (issue 15): one left open, one approved (it ran).
        for name in ("requested", "approved"):
            got, _, _ = engine.request(
                "POST", f"/api/jobs/{ids[name]}/run", {"reason": "OPS-1"}, headers={"X-Engine-Actor": "alice"}
            )
            assert got == 202
        got, _, _ = engine.request(
            "POST", f"/api/jobs/{ids['approved']}/approve", {}, headers={"X-Engine-Actor": "bob"}
        )
        assert got == 202
        _finished(engine, ids["approved"], "DONE")
        engine.ok("POST", f"/api/jobs/{ids['done']}/run", {"reason": "import test"}, status=202)
        engine.ok("POST", f"/api/jobs/{ids['failed']}/run", status=202)
        engine.ok("POST", f"/api/jobs/{ids['cancelled']}/run", status=202)
        _finished(engine, ids["done"], "DONE")
        _finished(engine, ids["failed"], "FAILED")
        _finished(engine, ids["cancelled"], "RUNNING")
        engine.ok("POST", f"/api/jobs/{ids['cancelled']}/cancel", status=202)
        _finished(engine, ids["cancelled"], "FAILED")
        bodies = {job_id: engine.ok("GET", f"/api/jobs/{job_id}") for job_id in ids.values()}
        listed = [job["id"] for job in engine.ok("GET", "/api/jobs?limit=100")]
        assert engine.stop() == 0
    finally:
        engine.kill()
    return Embedded(data_dir=engine.data_dir, bodies=bodies, listed=listed)


def db_import(data_dir: Path, url: str) -> Any:
    """Run ``engine-hub db import --data-dir DATA_DIR --store URL``."""
    return cli("db", "import", "--data-dir", str(data_dir), "--store", url, timeout=60)


def imported_jobs(url: str) -> list[dict[str, Any]]:
    """The wire JSON of every job row, newest first (the list's order)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY seq DESC").fetchall()
    return [wire_from_row(row) for row in rows]


def count_rows(url: str) -> tuple[int, int]:
    """How many jobs and engine audit records the database holds."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM audit_events WHERE chain = 'engine')"
        ).fetchone()
    assert row is not None
    return row[0], row[1]


class TestImport:
    def test_import_then_verify_with_the_same_head(self, embedded: Embedded, postgres_url: str) -> None:
        """After an import, `audit verify --store` passes and `audit head --store` equals the data dir's head."""
        result = db_import(embedded.data_dir, postgres_url)
        assert result.returncode == 0, result
        assert "imported" in result.stdout and "6 jobs" in result.stdout
        assert "job logs were not moved" in result.stdout and str(embedded.data_dir / "logs") in result.stdout
        verify = cli("audit", "verify", "--store", postgres_url)
        assert verify.returncode == 0, verify
        assert verify.stdout.startswith("ok: ") and "seq 1.." in verify.stdout
        from_files = json.loads(cli("audit", "head", "--json", "--data-dir", str(embedded.data_dir)).stdout)
        from_store = json.loads(cli("audit", "head", "--json", "--store", postgres_url).stdout)
        assert from_store == from_files and from_files["seq"] > 4
        assert cli("audit", "verify", "--store", postgres_url, "--expected-head", from_files["hash"]).returncode == 0

    def test_every_job_row_is_the_engine_body(self, embedded: Embedded, postgres_url: str) -> None:
        """Each imported row's wire JSON equals the embedded engine's GET body, in the list's order."""
        assert db_import(embedded.data_dir, postgres_url).returncode == 0
        jobs = imported_jobs(postgres_url)
        assert [job["id"] for job in jobs] == embedded.listed
        assert {job["id"]: job for job in jobs} == embedded.bodies
        assert {job["status"] for job in jobs} == {"DONE", "FAILED", "READY"}

    def test_sequences_continue_past_the_import(self, embedded: Embedded, postgres_url: str) -> None:
        """A job inserted after the import gets a higher seq than any imported one."""
        assert db_import(embedded.data_dir, postgres_url).returncode == 0
        with psycopg.connect(postgres_url) as conn:
            max_seq = conn.execute("SELECT max(seq) FROM jobs").fetchone()
            new = conn.execute(
                "INSERT INTO jobs (id, type, name, created_at, created_by) "
                "VALUES (gen_random_uuid(), 'demo.echo', 'x', now(), 'admin') RETURNING seq"
            ).fetchone()
        assert max_seq is not None and new is not None
        assert new[0] > max_seq[0]

    def test_export_from_the_store_equals_the_files(self, embedded: Embedded, postgres_url: str) -> None:
        """`audit export --store` prints byte for byte what `audit export --data-dir` prints, JSON Lines and CSV."""
        assert db_import(embedded.data_dir, postgres_url).returncode == 0
        for fmt in ("jsonl", "csv"):
            files = cli("audit", "export", "--format", fmt, "--data-dir", str(embedded.data_dir))
            store = cli("audit", "export", "--format", fmt, "--store", postgres_url)
            assert files.returncode == store.returncode == 0, (files, store)
            assert store.stdout == files.stdout and store.stdout

    def test_a_pruned_journal_imports_from_its_first_kept_record(
        self, embedded: Embedded, postgres_url: str, tmp_path: Path
    ) -> None:
        """After retention pruned the first segment, the import starts there and verify --store says so."""
        data_dir = tmp_path / "data"
        shutil.copytree(embedded.data_dir, data_dir)
        journal = data_dir / "journal"
        (segment,) = journal.glob("segment-*.jsonl")
        lines = segment.read_bytes().splitlines(keepends=True)
        # Two segments, as a journal past the segment size has; then a prune a year later drops the first.
        kept = 4
        segment.write_bytes(b"".join(lines[: kept - 1]))
        (journal / segment_name(kept)).write_bytes(b"".join(lines[kept - 1 :]))
        now = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
        assert prune_segments(journal, retention=dt.timedelta(days=1), now=now, keep=None) == [segment.name]
        assert cli("audit", "verify", "--data-dir", str(data_dir)).returncode == 0
        assert db_import(data_dir, postgres_url).returncode == 0
        verify = cli("audit", "verify", "--store", postgres_url)
        assert verify.returncode == 0, verify
        assert f"records intact, seq {kept}.." in verify.stdout and f"starts at seq {kept}" in verify.stdout
        assert {job["id"]: job for job in imported_jobs(postgres_url)} == embedded.bodies

    def test_a_failed_import_writes_nothing(self, embedded: Embedded, postgres_url: str) -> None:
        """A statement failing after the audit records were copied rolls everything back: one line, exit 1."""
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
            )
            conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION refuse()")
        assert_one_line_error(db_import(embedded.data_dir, postgres_url), 1, "refused by the test")
        assert count_rows(postgres_url) == (0, 0)
        with psycopg.connect(postgres_url) as conn:
            assert conn.execute("SELECT seq FROM audit_head WHERE chain = 'engine'").fetchone() == (0,)


class TestRefusals:
    def test_importing_twice_is_refused(self, embedded: Embedded, postgres_url: str) -> None:
        """A second import into the same database is refused in one line and changes nothing."""
        assert db_import(embedded.data_dir, postgres_url).returncode == 0
        before = count_rows(postgres_url)
        assert_one_line_error(db_import(embedded.data_dir, postgres_url), 1, "already has jobs")
        assert count_rows(postgres_url) == before

    def test_engine_records_already_there_are_refused(self, embedded: Embedded, postgres_url: str) -> None:
        """A database whose engine chain already has records (no jobs) is refused too."""
        assert db_import(embedded.data_dir, postgres_url).returncode == 0
        with psycopg.connect(postgres_url) as conn:
            conn.execute("DELETE FROM jobs")
        assert_one_line_error(db_import(embedded.data_dir, postgres_url), 1, "already has engine audit records")

    def test_a_running_engines_data_dir_is_refused(
        self, embedded: Embedded, postgres_url: str, tmp_path: Path, engine_process: MakeEngineProcess
    ) -> None:
        """While an engine holds the data directory's journal, the import is refused and writes nothing."""
        data_dir = tmp_path / "data"
        shutil.copytree(embedded.data_dir, data_dir)
        engine = engine_process(data_dir).start()
        assert_one_line_error(db_import(data_dir, postgres_url), 1, "in use by another process")
        assert count_rows(postgres_url) == (0, 0)
        assert engine.stop() == 0

    def test_a_job_left_running_is_refused_until_the_engine_records_it(
        self, postgres_url: str, tmp_path: Path, engine_process: MakeEngineProcess
    ) -> None:
        """A crash mid-run leaves a job RUNNING: refused with the remedy; after a start and stop it imports."""
        engine = engine_process(tmp_path / "data").start()
        job = engine.ok("POST", "/api/jobs", {"type": "demo.sleep", "params": {"seconds": 60}}, status=201)
        engine.ok("POST", f"/api/jobs/{job['id']}/run", status=202)
        _finished(engine, job["id"], "RUNNING")
        engine.kill()
        refused = db_import(engine.data_dir, postgres_url)
        assert_one_line_error(refused, 1, job["id"], "RUNNING", "start and stop the embedded engine once")
        assert count_rows(postgres_url) == (0, 0)
        engine.start()
        assert engine.stop() == 0
        assert db_import(engine.data_dir, postgres_url).returncode == 0
        (row,) = imported_jobs(postgres_url)
        assert row["status"] == "FAILED" and row["error"] == "interrupted: engine restarted"

    def test_a_journal_that_does_not_verify_is_refused(
        self, embedded: Embedded, postgres_url: str, tmp_path: Path
    ) -> None:
        """An edited journal record: refused naming the record's seq, nothing written."""
        data_dir = tmp_path / "data"
        shutil.copytree(embedded.data_dir, data_dir)
        (segment,) = (data_dir / "journal").glob("segment-*.jsonl")
        segment.write_bytes(segment.read_bytes().replace(b"h\xc3\xa9llo", b"hallo", 1))
        assert_one_line_error(db_import(data_dir, postgres_url), 1, "does not verify", "seq 1:")
        assert count_rows(postgres_url) == (0, 0)

    def test_an_unmigrated_database_is_refused(self, embedded: Embedded, postgres_server: PostgresServer) -> None:
        """A database without the schema: one line naming `db migrate`, exit 1."""
        assert_one_line_error(
            db_import(embedded.data_dir, postgres_server.create_database()), 1, "engine-hub db migrate"
        )

    def test_no_journal_is_refused(self, postgres_url: str, tmp_path: Path) -> None:
        """A directory without journal/: one line, and no journal is created there."""
        assert_one_line_error(db_import(tmp_path, postgres_url), 1, "no journal in")
        assert not (tmp_path / "journal").exists()

    def test_unreachable_store_never_shows_the_password(self, embedded: Embedded) -> None:
        """Nothing listening: one line naming the store without its password, exit 1."""
        result = db_import(embedded.data_dir, "postgresql://admin:s3cret-Pa55@127.0.0.1:1/engine")
        assert_one_line_error(result, 1, "postgresql://admin@127.0.0.1:1/engine")
        assert "s3cret-Pa55" not in result.stderr
