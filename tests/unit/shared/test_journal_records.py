"""Journal records and lines: the chain format, line checks, queries and the memory journal."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from shared.journal.chain import (
    GENESIS,
    AuditQuery,
    MemoryJournal,
    Record,
    canonical_json,
    make_record,
    make_record_line,
    record_hash,
)
from shared.journal.format import LineError, iter_lines_reversed, parse_line


def line_for(
    seq: int = 1, prev: str = GENESIS, actor: str = "alice", data: dict[str, object] | None = None
) -> tuple[Record, bytes]:
    """Build one record and its journal line (newline stripped)."""
    rec, line = make_record_line(
        seq=seq,
        prev=prev,
        action="job_created",
        actor=actor,
        source="10.0.0.1",
        job_id="j1",
        data=data if data is not None else {"type": "backup"},
    )
    return rec, line[:-1]


class TestRecordLine:
    def test_line_is_the_whole_record_as_json(self) -> None:
        """A line parses to exactly the record's wire shape."""
        rec, line = line_for()
        assert json.loads(line) == rec.to_json()

    def test_hash_is_sha256_over_prev_and_canonical_body(self) -> None:
        """The documented formula holds, so third parties can verify with any JSON library."""
        rec, _ = line_for(prev="ab" * 32)
        expected = hashlib.sha256(("ab" * 32).encode() + canonical_json(rec.body())).hexdigest()
        assert rec.hash == expected == record_hash("ab" * 32, rec.body())
        again = make_record(
            seq=1,
            prev="ab" * 32,
            action="job_created",
            actor="alice",
            source="10.0.0.1",
            job_id="j1",
            data={"type": "backup"},
            at=rec.at,
        )
        assert again == rec

    def test_user_strings_cannot_forge_lines(self) -> None:
        """Newlines and separators in user input stay inside one escaped JSON string."""
        evil = 'x"}\n{"hash":"' + "0" * 64 + '","seq":2}\u2028'
        rec, line = line_for(actor=evil, data={"note": evil})
        assert b"\n" not in line
        assert parse_line(line, expected_seq=1, expected_prev=GENESIS, strict=True) == rec

    def test_nan_is_not_json(self) -> None:
        """NaN or infinity would not be reproducible by other verifiers, so they are refused."""
        with pytest.raises(ValueError, match="not JSON compliant"):
            canonical_json({"x": float("inf")})


class TestParseLine:
    def test_next_record_parses(self) -> None:
        """A valid line after the expected head yields the same record."""
        rec, line = line_for(seq=7, prev="cd" * 32)
        assert parse_line(line, expected_seq=7, expected_prev="cd" * 32, strict=True) == rec

    @pytest.mark.parametrize(
        ("seq", "prev", "reason"),
        [
            (8, "cd" * 32, "expected seq 8"),
            (7, "ef" * 32, "chain broken"),
        ],
    )
    def test_wrong_position_is_reported(self, seq: int, prev: str, reason: str) -> None:
        """A record in the wrong place names what is wrong, and its own seq."""
        _, line = line_for(seq=7, prev="cd" * 32)
        with pytest.raises(LineError, match=reason) as err:
            parse_line(line, expected_seq=seq, expected_prev=prev, strict=False)
        assert err.value.seq == 7

    def test_non_canonical_body_with_matching_raw_hash_fails_strict_only(self) -> None:
        """Strict mode insists on canonical bytes so every verifier computes the same hash."""
        rec, _ = line_for()
        body = json.dumps(rec.body(), sort_keys=True, separators=(", ", ":")).encode()
        digest = hashlib.sha256(GENESIS.encode() + body).hexdigest()
        forged = b'{"hash":"' + digest.encode() + b'",' + body[1:]
        parse_line(forged, expected_seq=1, expected_prev=GENESIS, strict=False)
        with pytest.raises(LineError, match="canonical"):
            parse_line(forged, expected_seq=1, expected_prev=GENESIS, strict=True)

    @pytest.mark.parametrize("junk", [b"", b"{", b"[1,2]", b'{"hash":"zz"}', b"\x00" * 80])
    def test_junk_is_unparsable_without_a_seq(self, junk: bytes) -> None:
        """Bytes that are not a record report no seq (which is what marks a torn tail)."""
        with pytest.raises(LineError) as err:
            parse_line(junk, expected_seq=1, expected_prev=GENESIS, strict=False)
        assert err.value.seq is None


class TestLinesReversed:
    @pytest.mark.parametrize("block", [1, 3, 7, 64, 1 << 20])
    def test_complete_lines_newest_first_whatever_the_block(self, tmp_path: Path, block: int) -> None:
        """Lines come back last first; a trailing fragment without newline is skipped."""
        path = tmp_path / "f"
        path.write_bytes(b"one\ntwo\nthree\nfour\nfrag")
        assert list(iter_lines_reversed(path, block=block)) == [b"four", b"three", b"two", b"one"]
        path.write_bytes(b"only-fragment")
        assert list(iter_lines_reversed(path, block=block)) == []


class TestAuditQuery:
    def test_memory_journal_answers_newest_first_with_filters(self) -> None:
        """Filters combine, before pages backwards, limit caps the answer."""

        async def run() -> None:
            journal = MemoryJournal()
            for i in range(10):
                await journal.append(
                    action="run_requested", actor="alice" if i % 2 else "bob", source="s", job_id=f"j{i % 3}", data={}
                )
            got = await journal.query(AuditQuery(actor="alice", limit=3))
            assert [r.seq for r in got] == [10, 8, 6]
            got = await journal.query(AuditQuery(actor="alice", job_id="j0", before=10))
            assert [r.seq for r in got] == [4]

        asyncio.run(run())

    def test_time_bounds_compare_as_times(self) -> None:
        """since is inclusive, until exclusive, in UTC whatever the offset given."""
        rec = make_record(
            seq=1, prev=GENESIS, action="a", actor="b", source="c", job_id=None, data={}, at="2024-05-01T10:00:00.000Z"
        )
        at = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        assert AuditQuery(since=at).predicate()(rec)
        assert not AuditQuery(until=at).predicate()(rec)
        assert AuditQuery(until=at + dt.timedelta(milliseconds=1)).predicate()(rec)

    def test_limit_must_be_positive(self) -> None:
        """A zero limit is a programming error caught at construction."""
        with pytest.raises(ValueError, match="'limit' must be >= 1"):
            AuditQuery(limit=0)
