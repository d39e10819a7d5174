"""Audit tools on copies of a real journal: verify detects tampering, export, head and the CLI."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.journal.chain import GENESIS, JournalCorrupt, Record, canonical_json, record_hash
from shared.journal.cli import main as audit_main
from shared.journal.file import FileJournal
from shared.journal.format import list_segments
from shared.journal.tools import export, head, verify


async def write_journal(directory: Path, n: int, *, segment_bytes: int = 1500, start: int = 0) -> list[Record]:
    """Write ``n`` records with the real journal (one at a time, so segments rotate)."""
    journal = FileJournal.open(directory, segment_bytes=segment_bytes)
    list(journal.replay())
    out = []
    for i in range(start, start + n):
        out.append(
            await journal.append(
                action="run_requested",
                actor="=cmd|calc" if i == 2 else "alice",
                source="10.0.0.7",
                job_id=f"job-{i}",
                data={"i": i},
            )
        )
    await journal.close()
    return out


@pytest.fixture
def original(tmp_path: Path) -> tuple[Path, list[Record]]:
    """A real 30-record journal over several segments (tests tamper with copies of it)."""
    directory = tmp_path / "original" / "journal"
    records = asyncio.run(write_journal(directory, 30))
    assert len(list_segments(directory)) >= 3
    return directory, records


def copy(original: tuple[Path, list[Record]], tmp_path: Path) -> Path:
    """A fresh copy of the original journal directory."""
    target = tmp_path / "copy" / "journal"
    shutil.copytree(original[0], target)
    return target


def locate(directory: Path, seq: int) -> tuple[Path, int, list[bytes]]:
    """Return the segment holding ``seq``, the line index and the segment's lines."""
    for seg in list_segments(directory):
        lines = seg.path.read_bytes().split(b"\n")
        for i, line in enumerate(lines):
            if line and json.loads(line)["seq"] == seq:
                return seg.path, i, lines
    raise AssertionError(seq)


def inner(directory: Path, near: int) -> int:
    """A seq at or after ``near`` that is neither the first nor the last line of its segment."""
    for seq in range(near, near + 10):
        _, i, lines = locate(directory, seq)
        if i > 0 and lines[i + 1]:
            return seq
    raise AssertionError(near)


class TestVerifyTampering:
    def test_intact_journal_verifies_with_count_and_head(self, original: tuple[Path, list[Record]]) -> None:
        """An untouched journal passes, with the right count and head."""
        result = verify(original[0])
        assert result.ok and result.count == 30 and result.head == original[1][-1].hash
        assert result.first_bad is None

    def test_one_changed_byte_is_named(self, original: tuple[Path, list[Record]], tmp_path: Path) -> None:
        """Changing one byte of one record's content names exactly that record."""
        target = copy(original, tmp_path)
        seg, i, lines = locate(target, 12)
        pos = lines[i].index(b'"source":"10.0.0.7"') + 17
        lines[i] = lines[i][:pos] + b"8" + lines[i][pos + 1 :]
        seg.write_bytes(b"\n".join(lines))
        result = verify(target)
        assert not result.ok and result.count == 11
        assert result.first_bad is not None
        assert (result.first_bad.segment, result.first_bad.line, result.first_bad.seq) == (seg.name, i + 1, 12)
        assert "hash mismatch" in result.first_bad.reason

    def test_recomputed_hash_still_breaks_the_next_link(
        self, original: tuple[Path, list[Record]], tmp_path: Path
    ) -> None:
        """A forger who rehashes the altered record is caught by the record after it."""
        target = copy(original, tmp_path)
        seg, i, lines = locate(target, 12)
        obj = json.loads(lines[i])
        obj["actor"] = "mallory"
        del obj["hash"]
        digest = record_hash(obj["prev"], obj)
        lines[i] = b'{"hash":"' + digest.encode() + b'",' + canonical_json(obj)[1:]
        seg.write_bytes(b"\n".join(lines))
        result = verify(target)
        assert result.first_bad is not None and result.first_bad.seq == 13
        assert "chain broken" in result.first_bad.reason

    def test_deleted_record_is_named(self, original: tuple[Path, list[Record]], tmp_path: Path) -> None:
        """Removing one line shows as a seq gap at the record that follows it."""
        target = copy(original, tmp_path)
        seq = inner(target, 15)
        seg, i, lines = locate(target, seq)
        del lines[i]
        seg.write_bytes(b"\n".join(lines))
        result = verify(target)
        assert result.first_bad is not None
        assert (result.first_bad.line, result.first_bad.seq) == (i + 1, seq + 1)
        assert f"expected seq {seq}" in result.first_bad.reason

    def test_reordered_records_are_named(self, original: tuple[Path, list[Record]], tmp_path: Path) -> None:
        """Swapping two neighbouring records is caught at the first of them."""
        target = copy(original, tmp_path)
        seg, i, lines = locate(target, inner(target, 19))
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
        seg.write_bytes(b"\n".join(lines))
        result = verify(target)
        assert result.first_bad is not None and result.first_bad.line == i + 1
        assert result.first_bad.seq == json.loads(lines[i])["seq"]

    def test_tail_truncation_is_caught_against_a_saved_head(
        self, original: tuple[Path, list[Record]], tmp_path: Path
    ) -> None:
        """Cutting whole records off the end passes a plain verify but not one with the saved head."""
        saved = head(original[0]).hash
        target = copy(original, tmp_path)
        last = list_segments(target)[-1].path
        lines = last.read_bytes().split(b"\n")
        last.write_bytes(b"\n".join(lines[:-3]) + b"\n")
        assert verify(target).ok  # indistinguishable from a shorter journal without a reference
        result = verify(target, expected_head=saved)
        assert not result.ok and result.first_bad is not None
        assert result.first_bad.seq == result.last_seq + 1 and "saved head" in result.first_bad.reason

    def test_deleted_middle_segment_is_named(self, original: tuple[Path, list[Record]], tmp_path: Path) -> None:
        """A whole segment removed shows at the first record after the hole."""
        target = copy(original, tmp_path)
        segments = list_segments(target)
        segments[1].path.unlink()
        result = verify(target)
        assert result.first_bad is not None and result.first_bad.segment == segments[2].name
        assert "missing" in result.first_bad.reason

    def test_deleted_first_segment_without_a_prune_record_fails(
        self, original: tuple[Path, list[Record]], tmp_path: Path
    ) -> None:
        """The oldest records cannot vanish unnoticed: only a logged prune may remove them."""
        target = copy(original, tmp_path)
        list_segments(target)[0].path.unlink()
        result = verify(target)
        assert not result.ok and result.first_bad is not None and "prune" in result.first_bad.reason

    def test_pure_append_by_the_journal_passes_with_the_saved_head(
        self, original: tuple[Path, list[Record]], tmp_path: Path
    ) -> None:
        """Records appended by the journal after the head was saved are no tampering."""
        saved = head(original[0]).hash
        target = copy(original, tmp_path)
        more = asyncio.run(write_journal(target, 5, start=30))
        result = verify(target, expected_head=saved)
        assert result.ok and result.count == 35 and result.head == more[-1].hash

    def test_snapshot_beyond_the_end_reveals_truncation(self, tmp_path: Path) -> None:
        """A snapshot covering records the journal no longer has fails verify even without a saved head."""

        async def build() -> None:
            journal = FileJournal.open(tmp_path / "j")
            list(journal.replay())
            for i in range(6):
                await journal.append(action="a", actor="x", source="s", job_id=None, data={"i": i})
            await journal.write_snapshot({}, seq=6, head=journal.head)
            await journal.close()

        asyncio.run(build())
        seg = list_segments(tmp_path / "j")[0].path
        seg.write_bytes(b"\n".join(seg.read_bytes().split(b"\n")[:4]) + b"\n")
        result = verify(tmp_path / "j")
        assert not result.ok and result.first_bad is not None and "snapshot" in result.first_bad.reason

    def test_empty_journal_verifies(self, tmp_path: Path) -> None:
        """No records is a valid (empty) chain whose head is the genesis hash."""
        (tmp_path / "j").mkdir()
        result = verify(tmp_path / "j")
        assert result.ok and result.count == 0 and result.head == GENESIS


class TestExport:
    def test_jsonl_export_is_every_record_verifiable_on_its_own(self, original: tuple[Path, list[Record]]) -> None:
        """Each exported line re-hashes to its own hash and links to the previous one."""
        rows = [json.loads(line) for line in export(original[0])]
        assert [r["seq"] for r in rows] == list(range(1, 31))
        prev = GENESIS
        for row in rows:
            digest = row.pop("hash")
            assert row["prev"] == prev and record_hash(prev, row) == digest
            prev = digest

    def test_time_window(self, original: tuple[Path, list[Record]]) -> None:
        """since is inclusive and until exclusive."""
        recs = original[1]
        at = dt.datetime.fromisoformat(recs[10].at.replace("Z", "+00:00"))
        rows = [json.loads(line) for line in export(original[0], since=at)]
        assert [r["seq"] for r in rows] == [r.seq for r in recs if r.at >= recs[10].at]
        assert list(export(original[0], until=at - dt.timedelta(days=1))) == []

    def test_csv_export_neutralises_formulas(self, original: tuple[Path, list[Record]]) -> None:
        """A cell that a spreadsheet would run as a formula is prefixed with a quote."""
        rows = list(csv.reader(io.StringIO("".join(export(original[0], fmt="csv")))))
        assert rows[0] == ["seq", "at", "actor", "source", "action", "jobId", "data", "prev", "hash"]
        assert len(rows) == 31 and rows[3][2] == "'=cmd|calc"
        assert json.loads(rows[1][6]) == {"i": 0}

    def test_export_of_a_tampered_journal_stops_with_an_error(
        self, original: tuple[Path, list[Record]], tmp_path: Path
    ) -> None:
        """An export never silently passes off a broken chain."""
        target = copy(original, tmp_path)
        seg, i, lines = locate(target, 5)
        lines[i] = lines[i].replace(b"alice", b"alicE")
        seg.write_bytes(b"\n".join(lines))
        with pytest.raises(JournalCorrupt) as err:
            list(export(target))
        assert err.value.seq == 5


class TestHead:
    def test_head_is_the_newest_record_and_ignores_a_torn_line(
        self, original: tuple[Path, list[Record]], tmp_path: Path
    ) -> None:
        """head names the last complete record, even while a write is half done."""
        target = copy(original, tmp_path)
        with open(list_segments(target)[-1].path, "ab") as f:
            f.write(b'{"hash":"00')
        info = head(target)
        assert (info.seq, info.hash) == (30, original[1][-1].hash)


class TestAuditCli:
    def test_verify_ok_and_failed_exit_codes(
        self, original: tuple[Path, list[Record]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """verify exits 0 with a count when intact and 1 naming the first bad record when not."""
        data_dir = original[0].parent
        assert (
            audit_main(
                ["audit", "verify", "--data-dir", str(data_dir)], prog="engine-hub", default_data_dir=Path("unused")
            )
            == 0
        )
        assert "ok: 30 records" in capsys.readouterr().out
        target = copy(original, tmp_path)
        seg, i, lines = locate(target, 7)
        lines[i] = lines[i].replace(b"alice", b"alicE")
        seg.write_bytes(b"\n".join(lines))
        assert (
            audit_main(
                ["audit", "verify", "--data-dir", str(target.parent), "--json"],
                prog="engine-hub",
                default_data_dir=Path("unused"),
            )
            == 1
        )
        report = json.loads(capsys.readouterr().out)
        assert report["ok"] is False and report["firstBad"]["seq"] == 7 and report["count"] == 6

    def test_head_export_and_a_missing_journal_from_a_real_process(
        self, original: tuple[Path, list[Record]], tmp_path: Path
    ) -> None:
        """Run as a subprocess: head prints the hash, export writes CSV, a wrong dir is a one-line error."""
        data_dir = original[0].parent
        code = (
            "import sys; from pathlib import Path; from shared.journal.cli import main; "
            "sys.exit(main(sys.argv[1:], prog='engine-hub', default_data_dir=Path('nope')))"
        )

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)

        got = run("audit", "head", "--data-dir", str(data_dir))
        assert got.returncode == 0 and got.stdout.split()[0] == original[1][-1].hash
        out = tmp_path / "out.csv"
        got = run(
            "audit",
            "export",
            "--data-dir",
            str(data_dir),
            "--format",
            "csv",
            "--output",
            str(out),
            "--since",
            "2000-01-01",
        )
        assert got.returncode == 0 and len(out.read_text().splitlines()) == 31
        got = run("audit", "verify", "--data-dir", str(tmp_path / "nowhere"))
        assert got.returncode == 1 and got.stderr.count("\n") == 1 and "no journal" in got.stderr
        got = run("audit", "export", "--data-dir", str(data_dir), "--since", "yesterday")
        assert got.returncode == 2 and "Traceback" not in got.stderr
