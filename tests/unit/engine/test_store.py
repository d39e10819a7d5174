"""The job store: one apply function, strict transitions, replay, and indexed pages."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from engine_hub.store.embedded import ENGINE_LOG_SIZE, RESULT_OK, JobStore, StoreError
from engine_hub.store.snapshots import _build
from shared.contract import JobStatus, new_job_id
from tests.unit.engine.chains import Chain


def _snapshot(store: JobStore) -> list[bytes]:
    items, _ = store.page(limit=1000)
    return items


class TestApply:
    def test_lifecycle_sets_fields_and_history(self) -> None:
        """created -> run_requested -> job_finished fills times, runBy, exit code and three history entries."""
        store, chain = JobStore(), Chain()
        created = chain.created()
        job_id = created.job_id
        assert job_id is not None
        store.apply(created)
        store.apply(chain.add("run_requested", job_id, {"runBy": "bob", "reason": "why"}, actor="bob"))
        assert store.apply(chain.add("job_started", job_id, {"pid": 4242}, actor="system")).pid == 4242
        entry = store.apply(
            chain.add("job_finished", job_id, {"status": "DONE", "exitCode": 0, "error": None}, actor="system")
        )
        job = entry.job
        assert (job.status, job.run_by, job.run_reason, job.exit_code, entry.pid) == (
            JobStatus.DONE,
            "bob",
            "why",
            0,
            None,
        )  # the pid is kept while the run lasts
        assert [(h.status, h.by) for h in job.history] == [
            (JobStatus.READY, "admin"),
            (JobStatus.RUNNING, "bob"),
            (JobStatus.DONE, "system"),
        ]
        assert json.loads(entry.encoded) == job.to_json()
        assert store.results(10)[-1]["output"] == RESULT_OK
        assert [e["message"] for e in store.engine_logs(10)] == ["Job created", "Job started", "Job finished"]

    @pytest.mark.parametrize(
        "steps",
        [
            [("run_requested", {"runBy": "a"}), ("run_requested", {"runBy": "b"})],
            [("job_finished", {"status": "DONE", "exitCode": 0})],
            [("run_requested", {}), ("job_finished", {"status": "READY"})],
            [
                ("run_requested", {}),
                ("job_finished", {"status": "DONE", "exitCode": 0}),
                ("job_finished", {"status": "FAILED", "error": "again"}),
            ],
            [("run_requested", {}), ("job_finished", {"status": "FAILED"})],  # FAILED needs an error
            [("run_requested", {}), ("job_finished", {"status": "BOGUS"})],
            [("job_interrupted", {"error": "x"})],
            [("log_expired", {"bytes": 1})],  # a READY job's log is never expired
            [("run_requested", {}), ("log_expired", {"bytes": 1})],  # nor a RUNNING one's
            [("no_such_action", {})],
        ],
    )
    def test_forbidden_records_raise_and_change_nothing(self, steps: list[tuple[str, dict[str, Any]]]) -> None:
        """A record that breaks TRANSITIONS (or is malformed) raises StoreError and leaves the job as it was."""
        store, chain = JobStore(), Chain()
        created = chain.created()
        job_id = created.job_id
        assert job_id is not None
        store.apply(created)
        *ok, (bad_action, bad_data) = steps
        for action, data in ok:
            store.apply(chain.add(action, job_id, data))
        before = (_snapshot(store), store.engine_logs(100), store.results(100))
        with pytest.raises(StoreError):
            store.apply(chain.add(bad_action, job_id, bad_data))
        assert (_snapshot(store), store.engine_logs(100), store.results(100)) == before

    def test_log_expired_marks_a_finished_job_only(self) -> None:
        """log_expired sets log_expired on a finished job and leaves its wire JSON and status alone."""
        store, chain = JobStore(), Chain()
        created = chain.created()
        job_id = created.job_id
        assert job_id is not None
        store.apply(created)
        store.apply(chain.add("run_requested", job_id, {"runBy": "bob"}))
        done = store.apply(chain.add("job_finished", job_id, {"status": "DONE", "exitCode": 0, "error": None}))
        expired = store.apply(chain.add("log_expired", job_id, {"bytes": 10, "retentionDays": 30}, actor="system"))
        assert (done.log_expired, expired.log_expired) == (False, True)
        assert (expired.status, expired.encoded) == (JobStatus.DONE, done.encoded)

    def test_created_must_be_new_ready_and_consistent(self) -> None:
        """job_created is refused for a duplicate id, a non-READY job, mismatched ids or missing fields."""
        store, chain = JobStore(), Chain()
        rec = chain.created()
        store.apply(rec)
        with pytest.raises(StoreError, match="already exists"):
            store.apply(chain.add("job_created", rec.job_id, rec.data))
        with pytest.raises(StoreError, match="READY"):
            store.apply(chain.created(status=JobStatus.RUNNING))
        other = chain.created()
        with pytest.raises(StoreError, match="differs"):
            store.apply(chain.add("job_created", new_job_id(), other.data))
        with pytest.raises(StoreError, match="lacks"):
            store.apply(chain.add("job_created", "x", {"id": "x"}))
        with pytest.raises(StoreError, match="unknown job"):
            store.apply(chain.add("run_requested", new_job_id(), {}))
        assert len(store) == 1

    def test_late_cancel_request_is_audit_only(self) -> None:
        """A cancel_requested record applied after the run ended changes nothing (the request raced the exit)."""
        store, chain = JobStore(), Chain()
        rec = chain.created()
        assert rec.job_id is not None
        store.apply(rec)
        store.apply(chain.add("run_requested", rec.job_id, {}))
        entry = store.apply(chain.add("job_finished", rec.job_id, {"status": "DONE", "exitCode": 0}))
        encoded = entry.encoded
        store.apply(chain.add("cancel_requested", rec.job_id, {}, actor="late"))
        after = store.get(rec.job_id)
        assert after is not None and after.encoded == encoded
        assert after.cancel_requested_by is None

    def test_replay_rebuilds_identical_state(self) -> None:
        """Replaying the records of a live store gives byte-identical jobs, logs and results."""
        live, chain = JobStore(), Chain()
        rng = random.Random(7)
        for i in range(60):
            rec = chain.created(rng.choice(["a.x", "b.y"]))
            live.apply(rec)
            if i % 3:
                live.apply(chain.add("run_requested", rec.job_id, {"runBy": f"u{i}", "reason": None}))
            if i % 3 == 2:
                status = rng.choice(["DONE", "FAILED"])
                live.apply(
                    chain.add(
                        "job_finished",
                        rec.job_id,
                        {
                            "status": status,
                            "exitCode": 0 if status == "DONE" else 1,
                            "error": None if status == "DONE" else "exited with code 1",
                        },
                    )
                )
        replayed = JobStore()
        assert replayed.replay(chain.records) == len(chain.records)
        assert _snapshot(replayed) == _snapshot(live)
        assert replayed.engine_logs(ENGINE_LOG_SIZE) == live.engine_logs(ENGINE_LOG_SIZE)
        assert replayed.results(1000) == live.results(1000)
        for status in JobStatus:
            assert replayed.count(status) == live.count(status)


class TestPages:
    def test_pages_match_a_brute_force_listing(self) -> None:
        """Every filter and cursor gives what sorting and filtering the whole store would give."""
        store, chain = JobStore(), Chain()
        rng = random.Random(11)
        ids: list[str] = []
        for _ in range(300):
            rec = chain.created(rng.choice(["t.a", "t.b", "t.c"]))
            store.apply(rec)
            assert rec.job_id is not None
            ids.append(rec.job_id)
            # Move some older jobs along, so status indexes change under the cursor.
            victim = store.get(rng.choice(ids))
            assert victim is not None
            if victim.job.status is JobStatus.READY and rng.random() < 0.5:
                store.apply(chain.add("run_requested", victim.job.id, {}))
            elif victim.job.status is JobStatus.RUNNING and rng.random() < 0.5:
                store.apply(chain.add("job_finished", victim.job.id, {"status": "FAILED", "error": "e"}))

        def brute(status: JobStatus | None, type_name: str | None, before: str | None) -> list[str]:
            out = []
            for job_id in reversed(ids[: ids.index(before)] if before else ids):
                job = store.get(job_id)
                assert job is not None
                if (status is None or job.job.status is status) and (type_name is None or job.job.type == type_name):
                    out.append(job_id)
            return out

        for status in (None, *JobStatus):
            for type_name in (None, "t.a", "t.c", "t.none"):
                for before in (None, ids[0], ids[1], ids[150], ids[-1]):
                    expected = brute(status, type_name, before)
                    for limit in (1, 7, 1000):
                        items, more = store.page(
                            limit=limit,
                            status=status,
                            type_name=type_name,
                            before=store.get(before) if before else None,
                        )
                        got = [json.loads(b)["id"] for b in items]
                        assert got == expected[:limit]
                        assert (more.job.id if more else None) == (got[-1] if len(expected) > limit else None)

    def test_counts_follow_transitions(self) -> None:
        """count() per status and per (status, type) tracks every change."""
        store, chain = JobStore(), Chain()
        recs = [chain.created("t.a"), chain.created("t.a"), chain.created("t.b")]
        for rec in recs:
            store.apply(rec)
        store.apply(chain.add("run_requested", recs[0].job_id, {}))
        assert (store.count(JobStatus.READY), store.count(JobStatus.RUNNING)) == (2, 1)
        assert (store.count(JobStatus.RUNNING, "t.a"), store.count(JobStatus.RUNNING, "t.b")) == (1, 0)
        assert store.running_job_ids() == [recs[0].job_id]


class TestLegacyViews:
    def test_engine_log_keeps_newest_500(self) -> None:
        """The EngineLog ring keeps the newest ENGINE_LOG_SIZE entries, oldest first."""
        store, chain = JobStore(), Chain()
        last = None
        for _ in range(ENGINE_LOG_SIZE + 20):
            last = chain.created()
            store.apply(last)
        logs = store.engine_logs(1000)
        assert len(logs) == ENGINE_LOG_SIZE
        assert last is not None and logs[-1]["jobId"] == last.job_id
        assert store.engine_logs(3) == logs[-3:]


class TestSnapshotColumns:
    def test_snapshot_without_log_expired_column_loads(self) -> None:
        """A job table written before log retention existed (no logExpired column) loads with no log expired."""
        columns: dict[str, Any] = {
            "types": ["t"],
            "statuses": [str(s) for s in JobStatus],
            "seq": [1, 2],
            "id": ["a", "b"],
            "type": [0, 0],
            "status": [2, 3],
            "pid": [None, None],
            "canceller": [None, None],
            "truncated": [0, 1],
        }
        jobs = [b'{"name":"Nightly"}', b'{"name":"STRASSE"}']
        assert [e.log_expired for e in _build(columns, jobs)] == [False, False]
        assert [e.log_expired for e in _build({**columns, "logExpired": [0, 1]}, jobs)] == [False, True]
        with pytest.raises(ValueError, match="differ in length"):
            _build({**columns, "logExpired": [1]}, jobs)
        # Nor a nameKey column (before issue 16): each job's name is read from its JSON.
        assert [e.name_key for e in _build(columns, jobs)] == ["nightly", "strasse"]
        assert [e.name_key for e in _build({**columns, "nameKey": ["n", "s"]}, jobs)] == ["n", "s"]


class TestRunRequests:
    def test_open_requests_follow_records_replay_and_snapshots(self) -> None:
        """The store knows its open requests live, after a replay, and after loading a snapshot's cut."""
        live, chain = JobStore(), Chain()
        ids = []
        for _ in range(3):
            rec = chain.created("t.guarded")
            assert rec.job_id is not None
            live.apply(rec)
            opened = {
                "requestId": f"r-{rec.job_id}",
                "reason": None,
                "at": "2026-01-01T00:00:00.000Z",
                "expiresAt": "2026-01-01T01:00:00.000Z",
                "required": 1,
            }
            live.apply(chain.add("run_request_opened", rec.job_id, opened, actor="alice"))
            ids.append(rec.job_id)
        closing = {"requestId": f"r-{ids[0]}", "at": "2026-01-01T00:05:00.000Z", "reason": "no"}
        live.apply(chain.add("run_request_rejected", ids[0], closing, actor="bob"))
        approval = {
            "runBy": "alice",
            "reason": None,
            "requestId": f"r-{ids[1]}",
            "approvalsBefore": 0,
            "approvedAt": "2026-01-01T00:06:00.000Z",
        }
        live.apply(chain.add("run_requested", ids[1], approval, actor="bob"))
        assert live.open_requests() == {ids[2]: "2026-01-01T01:00:00.000Z"}
        replayed = JobStore()
        replayed.replay(chain.records)
        assert replayed.open_requests() == live.open_requests()
        assert _snapshot(replayed) == _snapshot(live)
        cut = live.cut()
        loaded = JobStore()
        loaded.load(entries=cut.entries, results=cut.results, engine_logs=cut.engine_logs, seq=cut.seq, head=cut.head)
        assert loaded.open_requests() == live.open_requests()

    def test_request_records_of_a_job_that_is_not_ready_are_refused(self) -> None:
        """A run request record for a RUNNING job does not apply and changes nothing."""
        store, chain = JobStore(), Chain()
        rec = chain.created()
        assert rec.job_id is not None
        store.apply(rec)
        entry = store.apply(chain.add("run_requested", rec.job_id, {"runBy": "bob", "reason": None}))
        data = {"requestId": "r", "at": "2026-01-01T00:00:00.000Z", "expiresAt": "2026-01-01T01:00:00.000Z"}
        with pytest.raises(StoreError, match="not READY"):
            store.apply(chain.add("run_request_opened", rec.job_id, {**data, "required": 1}))
        assert store.get(rec.job_id) == entry
