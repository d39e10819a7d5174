"""AuditQuery's action, outcome and actor-prefix filters on the memory and file journals (from disk too)."""

from __future__ import annotations

from pathlib import Path

from shared.journal.chain import AuditQuery, Journal, MemoryJournal
from shared.journal.file import FileJournal

#: (actor, action, outcome) of the records appended, oldest first.
ROWS = [
    ("alice", "job_run", "accepted"),
    ("alicia", "job_run", "refused"),
    ("bob", "job_cancel", "accepted"),
    ("al%_ice", "login_failed", "refused"),
    ("ALICE", "job_run", "accepted"),
    ("alice", "job_create", None),
]


async def fill(journal: Journal) -> None:
    """Append :data:`ROWS` (a record without an outcome has no ``outcome`` key)."""
    for actor, action, outcome in ROWS:
        data = {} if outcome is None else {"outcome": outcome, "note": "outcome"}
        await journal.append(action=action, actor=actor, source="127.0.0.1", job_id=None, data=data)


async def seqs(journal: Journal, **filters: str) -> list[int]:
    """Seqs of the records matching ``filters``, newest first."""
    return [r.seq for r in await journal.query(AuditQuery(limit=100, **filters))]  # type: ignore[arg-type]


async def check_filters(journal: Journal) -> None:
    """Fill ``journal`` and check each filter and their combination against :data:`ROWS`."""
    await fill(journal)
    assert await seqs(journal, actor_prefix="ali") == [6, 2, 1]
    assert await seqs(journal, actor_prefix="al%") == [4]  # no LIKE wildcards
    assert await seqs(journal, action="job_run") == [5, 2, 1]
    assert await seqs(journal, outcome="refused") == [4, 2]
    assert await seqs(journal, actor_prefix="ali", action="job_run", outcome="accepted") == [1]
    assert await seqs(journal, outcome="outcome") == []


class TestAuditFilters:
    async def test_memory_journal_filters(self) -> None:
        """actor_prefix is a case-sensitive prefix, action and outcome exact, all combinable."""
        await check_filters(MemoryJournal())

    async def test_file_journal_filters_read_from_disk(self, tmp_path: Path) -> None:
        """Past the in-memory window the byte screens keep every match and no other record."""
        journal = FileJournal.open(tmp_path / "j", recent_limit=1)
        list(journal.replay())
        try:
            await check_filters(journal)
        finally:
            await journal.close()
