"""Cold jobs kept packed: byte-exact reads on every path, changes after going cold, replay and snapshots."""

from __future__ import annotations

import hashlib
import json
import random
import re
import zlib
from pathlib import Path
from typing import Any, Final

import pytest

from engine_hub.errors import StartupError
from engine_hub.http.app import PACK_SLICE, pack_cold_jobs
from engine_hub.store.embedded import BULK_OPEN_JOBS, JobStore
from engine_hub.store.packing import PACKING, is_packed, pack, unpack, wire_bytes
from engine_hub.store.snapshots import (
    FORMAT,
    FORMAT_LINES,
    jobs_file_name,
    load_snapshot,
    snapshot_state,
    write_jobs_file,
)
from shared.contract import JobStatus
from shared.journal.chain import Record, Snapshot
from tests.unit.engine.chains import Chain

#: A small hot window, so that a few dozen jobs have cold ones.
HOT = 4
#: A window no test fills: a store that never packs, the reference for byte-exact reads.
NEVER = 10**9


def _lifecycle(count: int, seed: int = 3) -> Chain:
    """Records of ``count`` jobs of two types: some left READY, some RUNNING, some DONE or FAILED."""
    chain, rng = Chain(), random.Random(seed)
    ids: list[str] = []
    for i in range(count):
        rec = chain.created(rng.choice(["t.a", "t.b"]), params={"note": f"job {i} – café ☕", "n": i})
        assert rec.job_id is not None
        ids.append(rec.job_id)
        # Move an earlier job along too, so that jobs change while cold.
        for job_id in (rec.job_id, rng.choice(ids)):
            step = rng.random()
            if step < 0.6:
                _advance(chain, job_id, rng)
    return chain


def _advance(chain: Chain, job_id: str, rng: random.Random) -> None:
    done = {r.job_id for r in chain.records if r.action == "job_finished"}
    ran = {r.job_id for r in chain.records if r.action == "run_requested"}
    if job_id in done:
        return
    if job_id not in ran:
        chain.add("run_requested", job_id, {"runBy": "bob", "reason": "ticket OPS-1"})
    elif rng.random() < 0.5:
        chain.add("job_finished", job_id, {"status": "DONE", "exitCode": 0, "error": None}, actor="system")
    else:
        # Every kind of failure, so that each outcome is packed, snapshotted and upgraded (no rng draw: the
        # sequence of the other steps stays as it was).
        failed = sum(1 for r in chain.records if r.action == "job_finished" and r.data["status"] == "FAILED")
        error = _FAILURES[failed % len(_FAILURES)]
        chain.add("job_finished", job_id, {"status": "FAILED", "exitCode": 1, "error": error}, actor="system")


_FAILURES: Final = (
    "exited with code 1",
    "cancelled by alice",
    "timed out after 5s",
    "interrupted: engine restarted",
    "cancelled by engine shutdown",
)
_NEW_FIELDS: Final = re.compile(rb',"outcome":(null|"[a-z_]+"),"copyOf":null,"copies":\[\]}$')


def _applied(records: list[Record], hot_jobs: int) -> JobStore:
    store = JobStore(hot_jobs=hot_jobs)
    for rec in records:
        store.apply(rec)
    return store


def _reads(store: JobStore) -> dict[str, Any]:
    """What every reader of the store returns: single jobs, all pages of every filter, legacy views."""
    ids = [json.loads(b)["id"] for b in _all_pages(store, None, None)]
    pages = {
        f"{status}/{type_name}": _all_pages(store, status, type_name)
        for status in (None, *JobStatus)
        for type_name in (None, "t.a", "t.b")
    }
    singles = {}
    for job_id in ids:
        entry = store.get(job_id)
        assert entry is not None
        singles[job_id] = (
            entry.encoded,
            entry.wire(),
            entry.job,
            entry.pid,
            entry.cancel_requested_by,
            entry.log_truncated,
            entry.status,
        )
    return {"pages": pages, "singles": singles, "results": store.results(1000), "logs": store.engine_logs(500)}


def _all_pages(store: JobStore, status: JobStatus | None, type_name: str | None) -> list[bytes]:
    out: list[bytes] = []
    items, more = store.page(limit=3, status=status, type_name=type_name)
    out += items
    while more is not None:
        items, more = store.page(limit=3, status=status, type_name=type_name, before=more)
        out += items
    return out


def _assert_packing_rule(store: JobStore, hot_jobs: int) -> None:
    """Exactly the jobs older than the newest ``hot_jobs`` hold packed bytes."""
    entries = store.cut().entries
    packed = [is_packed(e.stored) for e in entries]
    cold = max(0, len(entries) - hot_jobs)
    assert packed == [True] * cold + [False] * (len(entries) - cold)


def _assert_window_plain(store: JobStore, hot_jobs: int) -> None:
    """No job among the newest ``hot_jobs`` is packed (what the newest pages rely on)."""
    assert not any(is_packed(e.stored) for e in store.cut().entries[-hot_jobs:])


def _pack_all(store: JobStore) -> None:
    """Run pack_cold to the end, as the engine's background task does after start-up."""
    while store.pack_cold(7):
        pass


class TestPacking:
    def test_round_trip_is_byte_exact(self) -> None:
        """unpack(pack(b)) is b for job JSON of any size and text, and the two forms tell themselves apart."""
        samples = _applied(_lifecycle(5).records, NEVER).page(limit=5)[0]
        samples += [
            json.dumps({"name": "é" * 3000, "params": {"blob": "x" * 5000}}, ensure_ascii=False).encode(),
            b"{}",
        ]
        for wire in samples:
            packed = pack(wire)
            assert is_packed(packed) and not is_packed(wire)
            assert unpack(packed) == wire_bytes(packed) == wire
            assert wire_bytes(wire) is wire

    def test_a_finished_job_packs_to_under_half(self) -> None:
        """A finished job's JSON packs to less than half its size (what keeps a job under 1 KiB)."""
        chain = Chain()
        rec = chain.created("db.backup", params={"db": "orders"})
        chain.add("run_requested", rec.job_id, {"runBy": "bob", "reason": "ticket OPS-1234"})
        chain.add("job_finished", rec.job_id, {"status": "DONE", "exitCode": 0, "error": None}, actor="system")
        wire = _applied(chain.records, NEVER).page(limit=1)[0][0]
        assert len(pack(wire)) < len(wire) / 2

    @pytest.mark.parametrize("damage", [lambda p: p[:-3], lambda p: p + b"\x00", lambda p: b"{" + p[1:]])
    def test_damaged_bytes_are_refused(self, damage: Any) -> None:
        """Truncated, extended or unmarked packed bytes raise zlib.error rather than give wrong JSON."""
        with pytest.raises(zlib.error):
            unpack(damage(pack(b'{"id":"x","status":"DONE"}')))


class TestColdJobs:
    def test_every_reader_sees_the_bytes_of_a_store_that_never_packs(self) -> None:
        """Pages of every filter, single reads, wire(), job and legacy results equal an unpacked store's."""
        chain = _lifecycle(40)
        packed, plain = _applied(chain.records, HOT), _applied(chain.records, NEVER)
        _assert_packing_rule(packed, HOT)
        assert _reads(packed) == _reads(plain)

    def test_job_changes_after_going_cold(self) -> None:
        """A job packed while READY runs, starts, is truncated, cancelled and fails: each step as unpacked."""
        chain = Chain()
        first = chain.created()
        job_id = first.job_id
        assert job_id is not None
        for _ in range(HOT):
            chain.created()
        steps: list[tuple[str, dict[str, Any], str]] = [
            ("run_requested", {"runBy": "bob", "reason": "late run"}, "bob"),
            ("job_started", {"pid": 4242}, "system"),
            ("log_truncated", {"reason": "cap"}, "system"),
            ("cancel_requested", {}, "carol"),
            ("job_finished", {"status": "FAILED", "exitCode": -15, "error": "cancelled by carol"}, "system"),
        ]
        packed, plain = _applied(chain.records, HOT), _applied(chain.records, NEVER)
        cold = packed.get(job_id)
        assert cold is not None and is_packed(cold.stored)
        for action, data, actor in steps:
            rec = chain.add(action, job_id, data, actor=actor)
            got, want = packed.apply(rec), plain.apply(rec)
            assert is_packed(got.stored)  # still outside the window: re-encoded and packed again
            assert (got.encoded, got.pid, got.cancel_requested_by, got.log_truncated, got.status) == (
                want.encoded,
                want.pid,
                want.cancel_requested_by,
                want.log_truncated,
                want.status,
            )
        assert _reads(packed) == _reads(plain)
        assert packed.results(1)[0]["output"] == "Job failed: cancelled by carol"

    def test_a_creation_packs_the_job_it_pushes_out_of_the_window(self) -> None:
        """Each new job packs the one that leaves the hot window, whatever its status, and nothing else."""
        chain = Chain()
        store = JobStore(hot_jobs=HOT)
        for i in range(HOT * 3):
            rec = chain.created()
            store.apply(rec)
            if i % 2:
                store.apply(chain.add("run_requested", rec.job_id, {}))
            _assert_packing_rule(store, HOT)

    def test_newest_page_takes_the_stored_bytes_without_unpacking(self) -> None:
        """A page inside the hot window returns the stored bytes objects themselves; an older page unpacks."""
        chain = _lifecycle(20)
        packed, plain = _applied(chain.records, HOT), _applied(chain.records, NEVER)
        items, more = packed.page(limit=HOT)
        assert more is not None
        stored = []
        for item in items:
            entry = packed.get(json.loads(item)["id"])
            assert entry is not None
            stored.append(entry.stored)
        assert all(a is b for a, b in zip(items, stored, strict=True))
        older, _ = packed.page(limit=HOT, before=more)
        assert not any(is_packed(b) for b in older)
        assert older == plain.page(limit=HOT, before=plain.get(more.id))[0]

    def test_replay_reads_the_same_before_and_after_packing(self) -> None:
        """A replayed store reads like the live one while its cold jobs are plain and once pack_cold packed them."""
        chain = _lifecycle(40, seed=5)
        live = _applied(chain.records, NEVER)
        replayed = JobStore(hot_jobs=HOT)
        assert replayed.replay(chain.records) == len(chain.records)
        _assert_window_plain(replayed, HOT)
        assert _reads(replayed) == _reads(live)
        _pack_all(replayed)
        _assert_packing_rule(replayed, HOT)
        assert _reads(replayed) == _reads(live)

    def test_pack_cold_goes_in_bounded_slices_while_jobs_change(self) -> None:
        """pack_cold looks at `limit` jobs a call, resumes where it stopped, and copes with live changes between."""
        chain = _lifecycle(30, seed=9)
        replayed = JobStore(hot_jobs=HOT)
        replayed.replay(chain.records)
        cold = len(replayed) - HOT
        before = replayed.cut().entries
        plain_in_slice = sum(not is_packed(e.stored) for e in before[:5])
        assert plain_in_slice > 0  # finished jobs: a replay leaves them to pack_cold
        assert replayed.pack_cold(5) is True
        after = replayed.cut().entries
        assert all(is_packed(e.stored) for e in after[:5])
        assert [e.stored for e in after[5:]] == [e.stored for e in before[5:]]
        # New jobs push more out of the window (packed at once); an old job finishes meanwhile.
        open_job = next(e for e in replayed.cut().entries[:cold] if e.status is JobStatus.RUNNING)
        more = [
            chain.created(),
            chain.created(),
            chain.add("job_finished", open_job.id, {"status": "DONE", "exitCode": 0, "error": None}),
        ]
        for rec in more:
            replayed.apply(rec)
        calls = 2  # the first one, and the last (which says nothing is left)
        while replayed.pack_cold(5):
            calls += 1
        assert calls == -(-(cold + 2) // 5)  # 5 jobs a call, over all 28 cold jobs
        _assert_packing_rule(replayed, HOT)
        assert _reads(replayed) == _reads(_applied(chain.records, NEVER))

    def test_replay_of_many_open_jobs_reparses_the_ones_it_encoded_early(self) -> None:
        """Past BULK_OPEN_JOBS open jobs, a replay encodes the oldest; running one later still replays exactly."""
        chain = Chain()
        first = chain.created()
        for _ in range(2 * BULK_OPEN_JOBS + 5):
            chain.created()
        chain.add("run_requested", first.job_id, {"runBy": "late", "reason": "after the others"})
        chain.add("job_finished", first.job_id, {"status": "DONE", "exitCode": 0, "error": None}, actor="system")
        live = _applied(chain.records, NEVER)
        replayed = JobStore()
        replayed.replay(chain.records)
        assert first.job_id is not None
        want, got = live.get(first.job_id), replayed.get(first.job_id)
        assert want is not None and got is not None
        assert got.encoded == want.encoded and got.status is JobStatus.DONE
        assert _all_pages(replayed, None, None) == _all_pages(live, None, None)


class TestBackgroundPacking:
    async def test_the_start_up_task_packs_every_cold_job_in_slices(self) -> None:
        """pack_cold_jobs, run by the engine after start-up, leaves a replayed store fully packed."""
        chain = Chain()
        for _ in range(PACK_SLICE * 2 + HOT):
            rec = chain.created()
            chain.add("run_requested", rec.job_id, {})
            chain.add("job_finished", rec.job_id, {"status": "DONE", "exitCode": 0, "error": None})
        store = JobStore(hot_jobs=HOT)
        store.replay(chain.records)
        assert not any(is_packed(e.stored) for e in store.cut().entries)
        await pack_cold_jobs(store)
        _assert_packing_rule(store, HOT)
        assert _all_pages(store, None, None) == _all_pages(_applied(chain.records, NEVER), None, None)


def _snapshot_of(store: JobStore, directory: Path) -> Snapshot:
    cut = store.cut()
    jobs = write_jobs_file(directory, cut)
    return Snapshot(seq=cut.seq, head=cut.head, at="2026-01-01T00:00:00.000Z", state=snapshot_state(cut, jobs))


def _write_format_2(store: JobStore, directory: Path) -> Snapshot:
    """A snapshot as the engine wrote it before packing: columns, then one wire JSON line per job."""
    cut = store.cut()
    entries = cut.entries
    types = sorted({e.type for e in entries})
    statuses = list(JobStatus)
    columns = {
        "types": types,
        "statuses": [str(s) for s in statuses],
        "seq": [e.seq for e in entries],
        "id": [e.id for e in entries],
        "type": [types.index(e.type) for e in entries],
        "status": [statuses.index(e.status) for e in entries],
        "pid": [e.pid for e in entries],
        "canceller": [e.cancel_requested_by for e in entries],
        "truncated": [int(e.log_truncated) for e in entries],
    }
    # Jobs as an engine of that time wrote them: without the fields of issue 16.
    raw = json.dumps(columns).encode() + b"\n" + b"".join(_NEW_FIELDS.sub(b"}", e.encoded) + b"\n" for e in entries)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / jobs_file_name(cut.seq)).write_bytes(raw)
    state = {
        "format": FORMAT_LINES,
        "jobsFile": jobs_file_name(cut.seq),
        "jobsSha256": hashlib.sha256(raw).hexdigest(),
        "jobsBytes": len(raw),
        "jobCount": len(entries),
        "results": cut.results,
        "engineLog": cut.engine_logs,
    }
    return Snapshot(seq=cut.seq, head=cut.head, at="2026-01-01T00:00:00.000Z", state=state)


class TestSnapshotTable:
    def test_packed_table_round_trips_without_repacking(self, tmp_path: Path) -> None:
        """A format 3 table loads the very bytes the store held (packed stay packed) and reads the same."""
        chain = _lifecycle(30)
        source = _applied(chain.records, HOT)
        snap = _snapshot_of(source, tmp_path)
        assert snap.state["format"] == FORMAT and snap.state["packing"] == PACKING
        loaded = JobStore(hot_jobs=HOT)
        load_snapshot(loaded, snap, tmp_path)
        assert [e.stored for e in loaded.cut().entries] == [e.stored for e in source.cut().entries]
        assert [e.name_key for e in loaded.cut().entries] == [e.name_key for e in source.cut().entries]
        assert _reads(loaded) == _reads(_applied(chain.records, NEVER))

    def test_a_smaller_window_after_loading_unpacks_and_packs_to_fit(self, tmp_path: Path) -> None:
        """A table written with another window is made to keep this store's rule as it loads."""
        chain = _lifecycle(30)
        snap = _snapshot_of(_applied(chain.records, 12), tmp_path)
        for hot in (2, 20):
            loaded = JobStore(hot_jobs=hot)
            load_snapshot(loaded, snap, tmp_path)
            _assert_window_plain(loaded, hot)
            _pack_all(loaded)
            _assert_packing_rule(loaded, hot)
            assert _reads(loaded) == _reads(_applied(chain.records, NEVER))

    def test_a_table_from_before_run_requests_loads_with_run_request_null(self, tmp_path: Path) -> None:
        """Jobs snapshotted before issue 15 (no runRequest, plain or packed) load as the live store serves them."""
        chain = _lifecycle(30)
        source = _applied(chain.records, HOT)
        cut = source.cut()

        def old(stored: bytes) -> bytes:
            plain = _NEW_FIELDS.sub(b"}", wire_bytes(stored)).replace(b',"runRequest":null', b"")
            return pack(plain) if is_packed(stored) else plain

        before = JobStore(hot_jobs=HOT)
        before.load(
            entries=[e._replace(stored=old(e.stored)) for e in cut.entries],
            results=cut.results,
            engine_logs=cut.engine_logs,
            seq=cut.seq,
            head=cut.head,
        )
        snap = _snapshot_of(before, tmp_path)
        state = {k: v for k, v in snap.state.items() if k not in ("runRequests", "outcomes")}
        assert any(is_packed(e.stored) for e in before.cut().entries)
        assert not any(b"runRequest" in e.encoded for e in before.cut().entries)
        loaded = JobStore(hot_jobs=HOT)
        load_snapshot(loaded, Snapshot(seq=snap.seq, head=snap.head, at=snap.at, state=state), tmp_path)
        assert _reads(loaded) == _reads(source)

    def test_a_table_from_before_outcomes_loads_with_the_derived_outcome(self, tmp_path: Path) -> None:
        """Jobs snapshotted before issue 16 (no outcome, copyOf, copies) load with each outcome as live jobs have it."""
        chain = _lifecycle(60)
        source = _applied(chain.records, HOT)
        outcomes = {json.loads(b)["outcome"] for b in _all_pages(source, None, None)}
        assert outcomes == {None, "succeeded", "failed", "cancelled", "timed_out", "interrupted"}
        cut = source.cut()

        def old(stored: bytes) -> bytes:
            plain, count = _NEW_FIELDS.subn(b"}", wire_bytes(stored))
            assert count == 1
            return pack(plain) if is_packed(stored) else plain

        before = JobStore(hot_jobs=HOT)
        before.load(
            entries=[e._replace(stored=old(e.stored)) for e in cut.entries],
            results=cut.results,
            engine_logs=cut.engine_logs,
            seq=cut.seq,
            head=cut.head,
        )
        snap = _snapshot_of(before, tmp_path)
        state = {k: v for k, v in snap.state.items() if k != "outcomes"}
        assert not any(b'"outcome"' in e.encoded for e in before.cut().entries)
        loaded = JobStore(hot_jobs=HOT)
        load_snapshot(loaded, Snapshot(seq=snap.seq, head=snap.head, at=snap.at, state=state), tmp_path)
        assert _reads(loaded) == _reads(source)

    def test_format_2_table_still_loads_and_packs_cold_jobs(self, tmp_path: Path) -> None:
        """A snapshot of the line format (before packing) loads and reads the same, before and after packing."""
        chain = _lifecycle(30)
        snap = _write_format_2(_applied(chain.records, NEVER), tmp_path)
        loaded = JobStore(hot_jobs=HOT)
        load_snapshot(loaded, snap, tmp_path)
        assert _reads(loaded) == _reads(_applied(chain.records, NEVER))
        # No nameKey column then: each job's name is read from its JSON, so a name search still works.
        assert {e.name_key for e in loaded.cut().entries} == {"t.a", "t.b"}
        _pack_all(loaded)
        _assert_packing_rule(loaded, HOT)
        assert _reads(loaded) == _reads(_applied(chain.records, NEVER))

    @pytest.mark.parametrize(
        ("change", "needle"),
        [
            ({"packing": "deflate11-0123456789abcdef"}, "cannot read"),
            ({"packing": None}, "cannot read"),
            ({"format": 99}, "not an engine snapshot"),
        ],
    )
    def test_unknown_format_or_packing_is_refused_cleanly(
        self, tmp_path: Path, change: dict[str, Any], needle: str
    ) -> None:
        """A snapshot this version cannot read stops the start with a message saying how to go on."""
        snap = _snapshot_of(_applied(_lifecycle(10).records, HOT), tmp_path)
        bad = Snapshot(seq=snap.seq, head=snap.head, at=snap.at, state={**snap.state, **change})
        store = JobStore(hot_jobs=HOT)
        with pytest.raises(StartupError, match=needle) as caught:
            load_snapshot(store, bad, tmp_path)
        assert "start from the journal alone" in str(caught.value)
        assert len(store) == 0

    @pytest.mark.parametrize("edit", ["sizes_short", "size_zero", "not_json_nor_packed"])
    def test_a_table_whose_sizes_do_not_fit_is_refused(self, tmp_path: Path, edit: str) -> None:
        """Sizes that do not add up, an empty job or bytes that are neither JSON nor packed: refused, not misread."""
        snap = _snapshot_of(_applied(_lifecycle(10).records, HOT), tmp_path)
        path = tmp_path / snap.state["jobsFile"]
        head, body = path.read_bytes().split(b"\n", 1)
        columns = json.loads(head)
        if edit == "sizes_short":
            columns["size"][0] -= 1
        elif edit == "size_zero":
            columns["size"][-1] += columns["size"][-2]
            columns["size"][-2] = 0
        else:
            body = b"[" + body[1:]
        raw = json.dumps(columns).encode() + b"\n" + body
        path.write_bytes(raw)
        state = {**snap.state, "jobsSha256": hashlib.sha256(raw).hexdigest(), "jobsBytes": len(raw)}
        with pytest.raises(StartupError, match="not a job table"):
            load_snapshot(JobStore(), Snapshot(seq=snap.seq, head=snap.head, at=snap.at, state=state), tmp_path)
