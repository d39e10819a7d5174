"""Job output buffers: numbering, cursors, and the per-job and global memory bounds."""

from __future__ import annotations

from engine_hub.run.logs import CUT_MARKER, MAX_LINE_CHARS, JobLogs


async def _texts(logs: JobLogs, job_id: str, after: int = 0) -> list[str]:
    return [line["text"] for line in (await logs.read(job_id, after=after)).lines]


class TestJobLogs:
    async def test_lines_are_numbered_and_paged(self) -> None:
        """Lines get seq 1.., ``after`` skips, ``limit`` caps and ``next`` is the last seq returned."""
        logs = JobLogs()
        for i in range(5):
            logs.append("j", "stdout" if i % 2 else "stderr", f"l{i}")
        page = await logs.read("j", after=1, limit=2)
        assert [(line["seq"], line["stream"], line["text"]) for line in page.lines] == [
            (2, "stdout", "l1"),
            (3, "stderr", "l2"),
        ]
        assert page.next == 3
        assert (await logs.read("j", after=5)).to_json()["lines"] == []
        assert (await logs.read("j", after=99)).next == 5  # a cursor past the end snaps back to the newest line
        assert (await logs.read("unknown")).to_json() == {"lines": [], "next": 0, "truncated": False}

    async def test_line_cap_drops_oldest_and_marks_truncation_once(self) -> None:
        """Past max_lines the oldest lines go; numbering continues and the first drop is reported once."""
        logs = JobLogs(max_lines=3)
        reports = [logs.append("j", "stdout", f"l{i}") for i in range(6)]
        assert reports == [False, False, False, True, False, False]
        page = await logs.read("j")
        assert [line["seq"] for line in page.lines] == [4, 5, 6]
        assert page.truncated
        assert [line["seq"] for line in (await logs.read("j", after=2)).lines] == [4, 5, 6]

    async def test_byte_cap_and_long_lines(self) -> None:
        """Over-long lines are cut with a marker, and a job's buffer stays under max_bytes."""
        logs = JobLogs(max_bytes=100_000)
        logs.append("j", "stdout", "x" * (MAX_LINE_CHARS * 2))
        (line,) = (await logs.read("j")).lines
        assert line["text"].endswith(CUT_MARKER) and len(line["text"]) == MAX_LINE_CHARS + len(CUT_MARKER)
        for _ in range(20):
            logs.append("j", "stdout", "y" * 10_000)
        assert logs.total_bytes <= 100_000
        assert (await logs.read("j")).truncated

    async def test_global_cap_evicts_finished_jobs_first(self) -> None:
        """Over the global cap, the buffers of runs that finished longest ago are dropped, never a running one."""
        logs = JobLogs(max_total_bytes=3_000)
        for job in ("old", "newer"):
            logs.append(job, "stdout", "a" * 1000)
            await logs.finish(job)
        logs.append("running", "stdout", "b" * 1000)
        assert await _texts(logs, "old") == []
        assert (await logs.read("old")).truncated and (await logs.read("old")).next == 1
        assert await _texts(logs, "newer") == ["a" * 1000]
        assert await _texts(logs, "running") == ["b" * 1000]
        assert logs.total_bytes <= 3_000
