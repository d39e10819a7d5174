"""Job logs in PostgreSQL: written in batches by the running node, read by any node, capped, kept across a restart.

Each test has a fresh migrated database in the session's throwaway cluster
(:mod:`tests.postgres`). Node A writes with one pool, node B reads with its own.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool
from structlog.testing import capture_logs

from engine_hub.run.log_pg import PostgresJobLogs
from engine_hub.run.logs import MARKER_STREAM, LogPage
from engine_hub.store.pg_rows import row_from_wire
from shared.contract import Job, new_job_id, utcnow
from tests.postgres import PostgresServer

Pool = AsyncConnectionPool[Any]
AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def _open_pool(url: str) -> Pool:
    # check_connection: after a server restart, a dead pooled connection is replaced, not handed out.
    pool: Pool = AsyncConnectionPool(
        url, min_size=1, max_size=4, open=False, timeout=0.5, check=AsyncConnectionPool.check_connection
    )
    await pool.open(wait=True)
    return pool


@pytest.fixture
async def node_a(postgres_url: str) -> AsyncIterator[Pool]:
    """The writing node's pool."""
    pool = await _open_pool(postgres_url)
    yield pool
    await pool.close()


@pytest.fixture
async def node_b(postgres_url: str) -> AsyncIterator[Pool]:
    """Another node's pool, for reads."""
    pool = await _open_pool(postgres_url)
    yield pool
    await pool.close()


async def _new_job(pool: Pool) -> str:
    """Insert a READY job row (job_log_lines references jobs); return its id."""
    job = Job(id=new_job_id(), type="demo.echo", name="j", created_at=utcnow(), created_by="tester")
    row = row_from_wire(job.to_json())
    columns = ", ".join(row)
    values = ", ".join(f"%({name})s" for name in row)
    async with pool.connection() as conn:
        await conn.execute(f"INSERT INTO jobs ({columns}) VALUES ({values})", row)
    return job.id


Writer = Callable[..., Awaitable[PostgresJobLogs]]


@pytest.fixture
async def start_writer(node_a: Pool) -> AsyncIterator[Writer]:
    """Start a PostgresJobLogs on node A's pool with the given options; every one started is closed after the test."""
    started: list[PostgresJobLogs] = []

    async def start(**options: Any) -> PostgresJobLogs:
        logs = PostgresJobLogs(node_a, **options)
        await logs.start()
        started.append(logs)
        return logs

    yield start
    for logs in started:
        await logs.close()


async def _wait_for_lines(logs: PostgresJobLogs, job_id: str, count: int, timeout: float) -> LogPage:
    deadline = time.monotonic() + timeout
    while True:
        page = await logs.read(job_id)
        if len(page.lines) >= count or time.monotonic() > deadline:
            return page
        await asyncio.sleep(0.01)


class TestPostgresJobLogs:
    async def test_another_node_reads_the_lines_within_half_a_second(
        self, node_a: Pool, node_b: Pool, start_writer: Writer
    ) -> None:
        """Lines appended on node A are read, in order and numbered from 1, by node B within 0.5 s."""
        job_id = await _new_job(node_a)
        writer, reader = await start_writer(), PostgresJobLogs(node_b)
        started = time.monotonic()
        for i in range(100):
            writer.append(job_id, "stderr" if i % 3 == 0 else "stdout", f"line {i}\twith a tab")
        page = await _wait_for_lines(reader, job_id, 100, timeout=0.5)
        assert time.monotonic() - started < 0.5
        assert [(line["seq"], line["stream"], line["text"]) for line in page.lines] == [
            (i + 1, "stderr" if i % 3 == 0 else "stdout", f"line {i}\twith a tab") for i in range(100)
        ]
        assert all(AT.match(line["at"]) for line in page.lines)
        assert page.next == 100 and page.truncated is False

    async def test_finish_makes_every_line_visible_before_it_returns(
        self, node_a: Pool, node_b: Pool, start_writer: Writer
    ) -> None:
        """With the timer far off, finish() itself writes the job's lines: all are readable when it returns."""
        job_id = await _new_job(node_a)
        writer = await start_writer(flush_interval=60.0)
        for i in range(500):
            writer.append(job_id, "stdout", f"l{i}")
        await writer.finish(job_id)
        page = await PostgresJobLogs(node_b).read(job_id)
        assert [line["seq"] for line in page.lines] == list(range(1, 501))

    async def test_a_full_batch_is_written_before_the_interval(
        self, node_a: Pool, node_b: Pool, start_writer: Writer
    ) -> None:
        """A batch of more than 64 KiB is written at once: within 250 ms, though the timer is set to 10 s."""
        job_id = await _new_job(node_a)
        writer, reader = await start_writer(flush_interval=10.0), PostgresJobLogs(node_b)
        started = time.monotonic()
        for _ in range(100):
            writer.append(job_id, "stdout", "x" * 1023)  # 1 KiB with its newline: 100 KiB in all
        page = await _wait_for_lines(reader, job_id, 100, timeout=0.25)
        assert len(page.lines) == 100 and time.monotonic() - started < 0.25

    async def test_cap_writes_one_marker_and_append_reports_it_once(
        self, node_a: Pool, node_b: Pool, start_writer: Writer
    ) -> None:
        """Past max_bytes one engine marker ends the log, append returns True once; truncated is the job's column."""
        job_id = await _new_job(node_a)
        writer, reader = await start_writer(max_bytes=4096), PostgresJobLogs(node_b)
        reports = [writer.append(job_id, "stdout", "x" * 99) for _ in range(100)]
        assert reports.count(True) == 1 and reports.index(True) == 40  # 40 lines of 100 bytes fit
        await writer.finish(job_id)
        page = await reader.read(job_id)
        assert len(page.lines) == 41
        assert [line["stream"] for line in page.lines].count(MARKER_STREAM) == 1
        assert page.lines[-1]["stream"] == MARKER_STREAM and "4096 bytes limit" in page.lines[-1]["text"]
        assert page.truncated is False  # the store sets the column when the service records log_truncated
        async with node_a.connection() as conn:
            await conn.execute("UPDATE jobs SET log_truncated = true WHERE id = %s", (job_id,))
        assert (await reader.read(job_id)).truncated is True

    async def test_read_pages_with_after_and_limit(self, node_a: Pool, start_writer: Writer) -> None:
        """after/limit page like the in-memory logs; next never runs ahead; unknown ids read as empty."""
        job_id = await _new_job(node_a)
        logs = await start_writer()
        for i in range(10):
            logs.append(job_id, "stdout", f"l{i}")
        await logs.finish(job_id)
        page = await logs.read(job_id, after=3, limit=4)
        assert [line["text"] for line in page.lines] == ["l3", "l4", "l5", "l6"] and page.next == 7
        assert (await logs.read(job_id, after=10)).to_json() == {"lines": [], "next": 10, "truncated": False}
        assert (await logs.read(job_id, after=99)).next == 10  # a cursor past the end snaps back
        empty = {"lines": [], "next": 0, "truncated": False}
        assert (await logs.read(str(uuid.uuid4()))).to_json() == empty
        assert (await logs.read("not-a-uuid")).to_json() == empty

    async def test_a_job_the_database_refuses_does_not_hold_up_the_others(
        self, node_a: Pool, start_writer: Writer
    ) -> None:
        """Lines of a job without a jobs row are refused alone; another job's lines in the same batch are written."""
        job_id = await _new_job(node_a)
        logs = await start_writer()
        logs.append(str(uuid.uuid4()), "stdout", "orphan")
        logs.append(job_id, "stdout", "kept")
        await logs.finish(job_id)
        assert [line["text"] for line in (await logs.read(job_id)).lines] == ["kept"]


class TestDatabaseRestart:
    async def test_a_restart_loses_no_buffered_line(
        self, postgres_server: PostgresServer, node_a: Pool, node_b: Pool, start_writer: Writer
    ) -> None:
        """Lines appended while the server is down stay buffered (append never waits), written once it is back."""
        job_id = await _new_job(node_a)
        writer = await start_writer()
        for i in range(50):
            writer.append(job_id, "stdout", f"l{i}")
        await _wait_for_lines(PostgresJobLogs(node_b), job_id, 50, timeout=5)
        with capture_logs() as events:
            await asyncio.to_thread(postgres_server.halt)
            try:
                started = time.monotonic()
                for i in range(50, 100):
                    writer.append(job_id, "stdout", f"l{i}")
                assert time.monotonic() - started < 0.05
                await asyncio.sleep(1.5)  # attempts fail (the pool gives up after 0.5 s) and are retried
            finally:
                assert (await asyncio.to_thread(postgres_server.start)).returncode == 0
            for i in range(100, 150):
                writer.append(job_id, "stdout", f"l{i}")
            await asyncio.wait_for(writer.finish(job_id), timeout=30)
        seen = [event["event"] for event in events]
        assert "job_log_store_unavailable" in seen and "job_log_store_recovered" in seen
        page = await PostgresJobLogs(node_b).read(job_id)
        assert [(line["seq"], line["text"]) for line in page.lines] == [(i + 1, f"l{i}") for i in range(150)]

    async def test_lines_past_the_buffer_bound_are_dropped_and_counted(
        self, postgres_server: PostgresServer, node_a: Pool, node_b: Pool, start_writer: Writer
    ) -> None:
        """While the server is down, lines past the buffer bound are dropped; one marker counts them once it is back."""
        job_id = await _new_job(node_a)
        writer = await start_writer(buffer_bytes=1000)
        await asyncio.to_thread(postgres_server.halt)
        try:
            for i in range(30):
                writer.append(job_id, "stdout", f"{i:099d}")  # 100 bytes: 10 fit in the buffer
            await asyncio.sleep(1.0)  # the flusher tries, and fails, while it is down
        finally:
            assert (await asyncio.to_thread(postgres_server.start)).returncode == 0
        await asyncio.wait_for(writer.finish(job_id), timeout=30)
        page = await PostgresJobLogs(node_b).read(job_id)
        assert [line["text"] for line in page.lines[:10]] == [f"{i:099d}" for i in range(10)]
        assert [line["seq"] for line in page.lines] == list(range(1, 12))
        marker = page.lines[10]
        assert marker["stream"] == MARKER_STREAM and marker["text"].startswith("[20 lines of output dropped")

    async def test_close_during_an_outage_writes_the_lines_once_the_server_is_back(
        self, postgres_server: PostgresServer, node_a: Pool, node_b: Pool, start_writer: Writer
    ) -> None:
        """close() interrupts the flusher mid-retry without losing its batch, and writes it when the server returns."""
        job_id = await _new_job(node_a)
        writer = await start_writer()

        async def start_later() -> int:
            await asyncio.sleep(1.2)  # while close() is trying
            return (await asyncio.to_thread(postgres_server.start)).returncode

        await asyncio.to_thread(postgres_server.halt)
        back = asyncio.create_task(start_later())
        try:
            for i in range(20):
                writer.append(job_id, "stdout", f"l{i}")
            await asyncio.sleep(0.8)  # the flusher holds the batch, retrying
            await writer.close()
        finally:
            assert await back == 0
        page = await PostgresJobLogs(node_b).read(job_id)
        assert [line["text"] for line in page.lines] == [f"l{i}" for i in range(20)]
