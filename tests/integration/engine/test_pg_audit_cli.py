"""``engine-hub audit verify|head|export --store URL`` (and ``admin-gateway audit … --store``) on a real PostgreSQL.

The chains are written by :class:`shared.journal.postgres.PostgresJournal`,
as a node or a gateway writes them; the commands run as an operator runs them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import psycopg

from shared.journal.chain import GENESIS, make_record
from shared.journal.postgres import PostgresJournal, copy_records
from shared.journal.tools import CSV_COLUMNS
from shared.pg import connect
from tests.integration.engine.cli_server import assert_one_line_error, cli
from tests.integration.engine.process import CLEAN_ENV
from tests.postgres import PostgresServer

ADMIN_GATEWAY = str(Path(sys.executable).parent / "admin-gateway")
SECRET = "s3cret-Pa55"


async def write_chain(url: str, chain: str, count: int) -> str:
    """Append ``count`` records to ``chain`` (one with a non-ASCII actor); return the head."""
    journal = await PostgresJournal.open(url, chain)
    try:
        for i in range(count):
            await journal.append(
                action="job_created", actor="zoë" if i == 1 else "admin", source="127.0.0.1", job_id=None, data={"i": i}
            )
        return journal.head
    finally:
        await journal.close()


def gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the venv's ``admin-gateway ARGS``."""
    return subprocess.run([ADMIN_GATEWAY, *args], capture_output=True, text=True, env=CLEAN_ENV, timeout=60)


def recipe_verifies(lines: list[str]) -> str:
    """Check exported JSON Lines with the recipe of docs/journal.md, verbatim but for the input; return the head."""
    prev = "0" * 64
    for line in lines:
        rec = json.loads(line)
        digest = rec.pop("hash")
        body = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert rec["prev"] == prev and hashlib.sha256(prev.encode() + body).hexdigest() == digest
        prev = digest
    return prev


def edit_row(url: str, chain: str, seq: int) -> None:
    """Change one row's data behind the journal's back."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""UPDATE audit_events SET data = '{"i": 99}' WHERE chain = %s AND seq = %s""", (chain, seq))


class TestStoreCommands:
    async def test_verify_head_export(self, postgres_url: str) -> None:
        """verify prints the file variant's text and JSON; head is the chain's; export passes the docs' recipe."""
        head = await write_chain(postgres_url, "engine", 5)
        text = cli("audit", "verify", "--store", postgres_url)
        assert text.returncode == 0, text
        assert text.stdout == f"ok: 5 records intact, seq 1..5, head {head}\n"
        as_json = json.loads(cli("audit", "verify", "--json", "--store", postgres_url).stdout)
        assert as_json == {
            "ok": True,
            "count": 5,
            "firstSeq": 1,
            "lastSeq": 5,
            "head": head,
            "firstBad": None,
            "tornTail": False,
        }
        shown = cli("audit", "head", "--store", postgres_url)
        assert shown.returncode == 0 and shown.stdout.startswith(f"{head} seq 5 at 20")
        info = json.loads(cli("audit", "head", "--json", "--store", postgres_url).stdout)
        assert info["seq"] == 5 and info["hash"] == head
        exported = cli("audit", "export", "--store", postgres_url)
        assert exported.returncode == 0, exported
        assert recipe_verifies(exported.stdout.splitlines()) == head
        csv_out = cli("audit", "export", "--format", "csv", "--store", postgres_url).stdout.splitlines()
        assert csv_out[0] == ",".join(CSV_COLUMNS) and len(csv_out) == 6

    async def test_export_to_a_file_with_a_time_range(self, postgres_url: str, tmp_path: Path) -> None:
        """--output writes the file; --until before every record exports nothing."""
        await write_chain(postgres_url, "engine", 3)
        out = tmp_path / "audit.jsonl"
        assert cli("audit", "export", "--store", postgres_url, "--output", str(out)).returncode == 0
        assert len(out.read_text().splitlines()) == 3
        early = cli("audit", "export", "--store", postgres_url, "--until", "2000-01-01")
        assert early.returncode == 0 and early.stdout == ""

    async def test_empty_chain(self, postgres_url: str) -> None:
        """A migrated database with no engine record: verify ok with 0 records, head is genesis at seq 0."""
        assert (
            cli("audit", "verify", "--store", postgres_url).stdout
            == f"ok: 0 records intact, seq 0..0, head {GENESIS}\n"
        )
        assert cli("audit", "head", "--store", postgres_url).stdout == f"{GENESIS} seq 0 at -\n"

    async def test_chain_option_picks_the_chain(self, postgres_url: str) -> None:
        """--chain reads another chain; each verifies on its own."""
        engine_head = await write_chain(postgres_url, "engine", 2)
        other_head = await write_chain(postgres_url, "gw-1", 3)
        assert f"head {engine_head}" in cli("audit", "verify", "--store", postgres_url).stdout
        other = cli("audit", "verify", "--store", postgres_url, "--chain", "gw-1")
        assert other.stdout == f"ok: 3 records intact, seq 1..3, head {other_head}\n"

    async def test_gateway_reads_its_own_chain_by_default(self, postgres_url: str) -> None:
        """`admin-gateway audit verify --store` reads the chain named gateway unless told otherwise."""
        head = await write_chain(postgres_url, "gateway", 2)
        result = gateway_cli("audit", "verify", "--store", postgres_url)
        assert result.returncode == 0, result
        assert result.stdout == f"ok: 2 records intact, seq 1..2, head {head}\n"

    async def test_a_chain_imported_from_a_pruned_journal(self, postgres_url: str) -> None:
        """A chain starting at seq 40 verifies from its first row's prev, and says so."""
        anchor = hashlib.sha256(b"pruned").hexdigest()
        records, prev = [], anchor
        for seq in range(40, 43):
            rec = make_record(seq=seq, prev=prev, action="a", actor="admin", source="cli", job_id=None, data={})
            records.append(rec)
            prev = rec.hash
        conn = await connect(postgres_url)
        try:
            async with conn.transaction():
                await copy_records(conn, "engine", records)
        finally:
            await conn.close()
        text = cli("audit", "verify", "--store", postgres_url)
        assert text.returncode == 0, text
        assert "3 records intact, seq 40..42" in text.stdout and "starts at seq 40" in text.stdout
        assert json.loads(cli("audit", "verify", "--json", "--store", postgres_url).stdout)["firstSeq"] == 40
        assert cli("audit", "export", "--store", postgres_url).stdout.count("\n") == 3


class TestStoreFailures:
    async def test_an_edited_row_fails_verify_and_export(self, postgres_url: str) -> None:
        """UPDATE of one row's data: verify exits 1 naming its seq; export stops with one line."""
        await write_chain(postgres_url, "engine", 5)
        edit_row(postgres_url, "engine", 3)
        text = cli("audit", "verify", "--store", postgres_url)
        assert text.returncode == 1
        assert text.stdout.startswith("FAILED: first bad record at audit_events chain 'engine' line 3 (seq 3): ")
        assert text.stdout.endswith("; 2 records before it are intact\n")
        bad = json.loads(cli("audit", "verify", "--json", "--store", postgres_url).stdout)["firstBad"]
        assert bad["seq"] == 3
        exported = cli("audit", "export", "--store", postgres_url)
        assert exported.returncode == 1 and len(exported.stdout.splitlines()) == 2
        assert_one_line_error(exported, 1, "seq 3")

    async def test_deleted_first_rows_fail_verify_and_export(self, postgres_url: str) -> None:
        """DELETE of the oldest rows: the chain no longer starts where audit_head says, so verify exits 1."""
        await write_chain(postgres_url, "engine", 5)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("DELETE FROM audit_events WHERE chain = 'engine' AND seq <= 2")
        text = cli("audit", "verify", "--store", postgres_url)
        assert text.returncode == 1, text
        assert "(seq 3): records before seq 3 are missing: the chain starts at seq 1" in text.stdout
        assert_one_line_error(cli("audit", "export", "--store", postgres_url), 1, "records before seq 3 are missing")

    async def test_a_saved_head_no_longer_in_the_chain(self, postgres_url: str) -> None:
        """--expected-head that is not in the chain: verify exits 1 saying so."""
        await write_chain(postgres_url, "engine", 2)
        result = cli("audit", "verify", "--store", postgres_url, "--expected-head", "ab" * 32)
        assert result.returncode == 1 and "the saved head" in result.stdout

    async def test_an_edited_newest_row_fails_head(self, postgres_url: str) -> None:
        """head checks the newest record's own hash: one line naming its seq, exit 1."""
        await write_chain(postgres_url, "engine", 2)
        edit_row(postgres_url, "engine", 2)
        assert_one_line_error(cli("audit", "head", "--store", postgres_url), 1, "seq 2")

    def test_unreachable_store(self) -> None:
        """Nothing listening: each command prints one line without the password, exit 1."""
        url = f"postgresql://admin:{SECRET}@127.0.0.1:1/engine"
        for command in ("verify", "head", "export"):
            result = cli("audit", command, "--store", url)
            assert_one_line_error(result, 1, "postgresql://admin@127.0.0.1:1/engine", "Connection refused")
            assert SECRET not in result.stdout + result.stderr

    def test_malformed_url_and_both_sources(self, tmp_path: Path) -> None:
        """A URL that is not postgresql:// is a usage error (2); --store with --data-dir too."""
        assert_one_line_error(cli("audit", "head", "--store", "http://example.org"), 2, "not a postgresql:// URL")
        both = cli("audit", "verify", "--store", "postgresql://h/db", "--data-dir", str(tmp_path))
        assert_one_line_error(both, 2, "not allowed with argument")

    def test_an_unmigrated_database(self, postgres_server: PostgresServer) -> None:
        """A database without the audit tables: one line, exit 1."""
        result = cli("audit", "verify", "--store", postgres_server.create_database())
        assert_one_line_error(result, 1, 'relation "audit_head" does not exist')
