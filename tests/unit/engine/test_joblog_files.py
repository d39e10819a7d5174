"""Job logs in files: numbering, seeking reads, the size cap and its marker, reads after a restart."""

from __future__ import annotations

from pathlib import Path

from engine_hub.run.log_files import FileJobLogs
from engine_hub.run.logs import MARKER_STREAM


async def texts(logs: FileJobLogs, job_id: str, after: int = 0, limit: int = 5000) -> list[str]:
    return [line["text"] for line in (await logs.read(job_id, after=after, limit=limit)).lines]


async def torn_log(directory: Path) -> None:
    """Write job ``j``'s log: one whole line, then part of a second one (a crash mid-write)."""
    logs = FileJobLogs(directory)
    logs.open()
    logs.append("j", "stdout", "whole")
    await logs.finish("j")
    with open(directory / "j.log", "ab") as f:
        f.write(b"2\t2025-01-01T00:00:00.000Z\tstdout\thal")


class TestFileJobLogs:
    async def test_lines_survive_a_new_instance_and_reads_seek(self, tmp_path: Path) -> None:
        """600 lines: after=N/limit page correctly, live and from a fresh instance (a restart)."""
        logs = FileJobLogs(tmp_path)
        logs.open()
        for i in range(600):
            logs.append("j1", "stderr" if i % 7 == 0 else "stdout", f"line {i}\twith a tab")
        assert await texts(logs, "j1", after=299, limit=3) == [f"line {i}\twith a tab" for i in (299, 300, 301)]
        await logs.finish("j1")
        again = FileJobLogs(tmp_path)
        page = await again.read("j1", after=512, limit=2)
        assert [(line["seq"], line["stream"], line["text"]) for line in page.lines] == [
            (513, "stdout", "line 512\twith a tab"),
            (514, "stdout", "line 513\twith a tab"),
        ]
        assert page.next == 514 and page.truncated is False
        assert (await again.read("j1", after=600)).to_json() == {"lines": [], "next": 600, "truncated": False}
        assert (await again.read("j1", after=10_000)).next == 600
        assert (await again.read("nope")).to_json() == {"lines": [], "next": 0, "truncated": False}

    async def test_cap_writes_one_marker_and_drops_the_rest(self, tmp_path: Path) -> None:
        """Past max_bytes one marker line ends the log; append reports the cap once; the flag survives."""
        logs = FileJobLogs(tmp_path, max_bytes=4096)
        logs.open()
        reports = [logs.append("j", "stdout", "x" * 100) for _ in range(100)]
        assert reports.count(True) == 1
        page = await logs.read("j")
        assert page.truncated is True
        assert page.lines[-1]["stream"] == MARKER_STREAM and "truncated" in page.lines[-1]["text"]
        assert (tmp_path / "j.log").stat().st_size <= 4096 + 200
        await logs.finish("j")
        assert (await FileJobLogs(tmp_path).read("j")).truncated is True

    async def test_torn_last_line_is_not_served(self, tmp_path: Path) -> None:
        """A last line without its newline (a crash mid-write) is ignored."""
        await torn_log(tmp_path)
        assert await texts(FileJobLogs(tmp_path), "j") == ["whole"]


class TestTornTail:
    async def test_append_after_a_torn_line_starts_a_new_line(self, tmp_path: Path) -> None:
        """A torn last line is cut before the next append, so the new line is not glued onto it."""
        await torn_log(tmp_path)
        again = FileJobLogs(tmp_path)
        again.open()
        again.append("j", "stderr", "next")
        await again.finish("j")
        page = await FileJobLogs(tmp_path).read("j")
        assert [(line["seq"], line["stream"], line["text"]) for line in page.lines] == [
            (1, "stdout", "whole"),
            (2, "stderr", "next"),
        ]

    async def test_repair_cuts_the_fragment_and_counts_it(self, tmp_path: Path) -> None:
        """repair() cuts the bytes after the last line break, returns how many, and keeps disk_bytes exact."""
        logs = FileJobLogs(tmp_path)
        logs.open()
        logs.append("j", "stdout", "x" * 70_000)  # longer than one look-back block
        await logs.finish("j")
        whole = (tmp_path / "j.log").read_bytes()
        with open(tmp_path / "j.log", "ab") as f:
            f.write(b"2\t2025-01-01T00:00:00.000Z\tstdout\t" + b"y" * 100_000)
        again = FileJobLogs(tmp_path)
        again.open()
        assert again.disk_bytes == len(whole) + 100_034
        assert again.repair("j") == 100_034
        assert (tmp_path / "j.log").read_bytes() == whole and again.disk_bytes == len(whole)
        assert again.repair("j") == 0 and again.repair("missing") == 0
