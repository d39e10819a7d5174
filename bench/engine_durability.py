"""Benchmark: the durable engine against ``--ephemeral``, start-up replay, and memory per job.

    .venv/bin/python -m bench.engine_durability [--records 1000000] [--jobs 100000] [--rounds 3]
        [--only throughput|replay|memory]

Everything is measured on real ``engine-hub serve`` processes:

1. **Request throughput**, durable journal (fsync before every answer, group
   commit) vs ``--ephemeral``, side by side: both engines run at once and
   are loaded alternately, ``--rounds`` times, by 32 concurrent aiohttp
   clients: ``POST /api/jobs`` (create), then ``POST /api/jobs/{id}/run`` of
   jobs created for it (each run starts a real, immediately exiting job
   process). The median rate of each is reported and the ratio (target
   durable >= 0.7x ephemeral).
2. **Start-up replay** of a journal of ``--records`` engine-shaped records
   (job_created with the full job JSON, run_requested, job_started,
   job_finished: 4 per job), written quickly with the library's record
   builder. Timed from process start to ``/healthz`` answering: with a
   snapshot covering all but the last 1,000 records (target < 2 s) and
   without one (target < 15 s), plus an empty engine for the fixed cost.
3. **Memory**: VmRSS of an engine holding ``--jobs`` jobs (from a journal,
   replayed at start, once the background packing of cold jobs that follows
   start-up is done) minus VmRSS of an empty engine, per job (target
   < 1 KiB): finished jobs with short user names (``alice``, as the gateway
   sends its login names), finished jobs with e-mail addresses as user
   names, and READY jobs.

Prints a Markdown table for ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from shared.contract import format_time, utcnow
from shared.journal.chain import GENESIS, make_record_line
from shared.journal.file import DEFAULT_SEGMENT_BYTES
from shared.journal.format import segment_name

TOKEN = "bench-durability-token-0123456789"
CATALOG = """include_demo = false

[[types]]
name = "bench.true"
command = ["/bin/true"]
timeout = 60

[[types.params]]
name = "note"
type = "str"
default = "nightly"
"""
CONCURRENCY = 32
TAIL = 1_000


# -- engine processes ----------------------------------------------------------------


class Engine:
    """One ``engine-hub serve`` subprocess."""

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log = data_dir.parent / f"{data_dir.name}.log"

    def start(self, probe: str = "/healthz") -> float:
        """Start the engine; return seconds from process start to ``probe`` (a path) answering 200."""
        env = {**os.environ, "ENGINE_HUB_TOKEN": TOKEN, **self.env}
        env.pop("ENGINE_PORT", None)
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("ab") as out:
            began = time.perf_counter()
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "engine_hub",
                    "serve",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(self.data_dir),
                    "--log-level",
                    "warning",
                    *self.extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + probe, timeout=1) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - began
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.005)

    def rss_kib(self) -> int:
        """The process's VmRSS in KiB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- throughput ------------------------------------------------------------------------


async def _load(url: str, requests: list[tuple[str, Any]], expect: int) -> float:
    """Send ``requests`` (path, JSON body) with CONCURRENCY clients; return requests per second."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    queue = list(reversed(requests))
    async with aiohttp.ClientSession(
        url, headers=headers, connector=aiohttp.TCPConnector(limit=CONCURRENCY)
    ) as session:

        async def client() -> None:
            while queue:
                path, body = queue.pop()
                async with session.post(path, json=body) as resp:
                    await resp.read()
                    if resp.status != expect:
                        raise RuntimeError(f"{path}: {resp.status} {await resp.text()}")

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        return len(requests) / (time.perf_counter() - began)


async def _create_ids(url: str, count: int) -> list[str]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    ids: list[str] = []
    async with aiohttp.ClientSession(url, headers=headers) as session:

        async def one() -> None:
            async with session.post("/api/jobs", json={"type": "bench.true"}) as resp:
                ids.append((await resp.json())["id"])

        for start in range(0, count, CONCURRENCY):
            await asyncio.gather(*(one() for _ in range(min(CONCURRENCY, count - start))))
    return ids


def throughput(work: Path, rounds: int, creates: int, runs: int) -> dict[str, dict[str, float]]:
    """Median create and run rates of a durable and an ephemeral engine, loaded alternately."""
    catalog = work / "catalog.toml"
    catalog.write_text(CATALOG)
    engines = {
        "durable": Engine(work / "durable", "--config", str(catalog)),
        "ephemeral": Engine(work / "ephemeral", "--config", str(catalog), "--ephemeral"),
    }
    rates: dict[str, dict[str, list[float]]] = {name: {"create": [], "run": []} for name in engines}
    try:
        for engine in engines.values():
            engine.start()
        for _ in range(rounds):
            for name, engine in engines.items():
                body = {"type": "bench.true", "params": {"note": "quarterly report for the finance team"}}
                rates[name]["create"].append(asyncio.run(_load(engine.url, [("/api/jobs", body)] * creates, 201)))
                ids = asyncio.run(_create_ids(engine.url, runs))
                reqs = [(f"/api/jobs/{i}/run", {"reason": "benchmark"}) for i in ids]
                rates[name]["run"].append(asyncio.run(_load(engine.url, reqs, 202)))
    finally:
        for engine in engines.values():
            engine.stop()
    return {name: {kind: statistics.median(values) for kind, values in kinds.items()} for name, kinds in rates.items()}


# -- journals of engine-shaped records ------------------------------------------------

#: User names as the gateway sends them: short login names, or e-mail addresses.
USERS = {"short": ("alice", "bob"), "email": ("alice.martin@example.com", "robert.lee@example.com")}


def _job_json(job_id: str, at: str, creator: str) -> dict[str, Any]:
    return {
        "id": job_id,
        "type": "db.backup",
        "engine": "db.backup",
        "name": "nightly backup of orders",
        "params": {"db": "orders", "full": True},
        "status": "READY",
        "createdAt": at,
        "createdBy": creator,
        "startedAt": None,
        "runBy": None,
        "runReason": None,
        "endedAt": None,
        "exitCode": None,
        "error": None,
        "history": [{"status": "READY", "at": at, "by": creator, "reason": None}],
    }


def _cycle(kind: int, index: int, job_id: str, at: str, users: tuple[str, str]) -> dict[str, Any]:
    """The kind-th record (0-3) of a created -> run -> started -> finished cycle; index varies the pid."""
    creator, runner = users
    if kind == 0:
        return {
            "action": "job_created",
            "actor": creator,
            "source": "10.20.30.40",
            "data": _job_json(job_id, at, creator),
        }
    if kind == 1:
        return {
            "action": "run_requested",
            "actor": runner,
            "source": "10.20.30.40",
            "data": {"runBy": runner, "reason": "ticket OPS-1234"},
        }
    if kind == 2:
        return {"action": "job_started", "actor": "system", "source": "engine", "data": {"pid": 40000 + index % 20000}}
    return {
        "action": "job_finished",
        "actor": "system",
        "source": "engine",
        "data": {"status": "DONE", "exitCode": 0, "error": None},
    }


class JournalWriter:
    """Appends engine-shaped records to a journal directory's segment files directly (no fsync per record).

    Each job gets the first ``steps`` records of its cycle: 4 for finished jobs, 1 for READY ones.
    """

    def __init__(self, directory: Path, *, users: tuple[str, str] = USERS["short"], steps: int = 4) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.users = users
        self.steps = steps
        segments = sorted(directory.glob("segment-*.jsonl"))
        self.seq, self.prev, self.index = 0, GENESIS, 0
        if segments:
            last = segments[-1].read_bytes().splitlines()[-1]
            rec = json.loads(last)
            self.seq, self.prev = rec["seq"], rec["hash"]
            self.path, self.size = segments[-1], segments[-1].stat().st_size
            self.index = self.seq
        else:
            self.path, self.size = directory / segment_name(1), 0

    def write(self, count: int) -> None:
        """Append ``count`` more records of create/run/start/finish cycles, dated now."""
        at = format_time(utcnow()) or ""
        out = open(self.path, "ab")  # noqa: SIM115 (swapped for the next segment mid-loop)
        buf: list[bytes] = []
        job_id = ""
        for _ in range(count):
            kind = self.index % self.steps
            if kind == 0:
                job_id = str(uuid.uuid4())
            rec, line = make_record_line(
                seq=self.seq + 1,
                prev=self.prev,
                at=at,
                job_id=job_id,
                **_cycle(kind, self.index, job_id, at, self.users),
            )
            if self.size + len(line) > DEFAULT_SEGMENT_BYTES:
                out.writelines(buf)
                buf = []
                out.close()
                self.path, self.size = self.directory / segment_name(rec.seq), 0
                out = open(self.path, "ab")  # noqa: SIM115 (closed after the loop)
            buf.append(line)
            self.size += len(line)
            self.seq, self.prev, self.index = rec.seq, rec.hash, self.index + 1
        out.writelines(buf)
        out.close()


def replay(work: Path, records: int) -> dict[str, float]:
    """Start-up times: empty, with a snapshot + TAIL records, and from the whole journal."""
    data = work / "replay"
    times: dict[str, float] = {}
    empty = Engine(work / "empty")
    times["empty engine"] = empty.start()
    empty.stop()
    writer = JournalWriter(data / "journal")
    writer.write(records - TAIL)
    engine = Engine(data, "--snapshot-records", "100")
    engine.start()  # replays everything, then snapshots at once
    while not list((data / "journal" / "snapshots").glob("snapshot-*.json")):
        time.sleep(0.05)
    engine.stop()
    writer.write(TAIL)
    times[f"snapshot + {TAIL:,} records"] = engine.start()
    engine.stop()
    shutil.rmtree(data / "journal" / "snapshots")
    shutil.rmtree(data / "state")
    engine = Engine(data, "--snapshot-records", "10000000", "--snapshot-seconds", "86400")
    times[f"no snapshot: {records:,} records"] = engine.start()
    engine.stop()
    return times


def memory(work: Path, jobs: int) -> dict[str, tuple[int, int]]:
    """VmRSS (KiB) of an empty engine, and of engines holding ``jobs`` jobs of each shape."""
    empty = Engine(work / "mem-empty", "--snapshot-records", "10000000")
    empty.start()
    time.sleep(0.5)
    base = empty.rss_kib()
    empty.stop()
    out: dict[str, tuple[int, int]] = {}
    shapes = [
        ("finished, short user names", USERS["short"], 4),
        ("finished, e-mail user names", USERS["email"], 4),
        ("READY, short user names", USERS["short"], 1),
    ]
    for name, users, records in shapes:
        data = work / f"mem-{len(out)}"
        JournalWriter(data / "journal", users=users, steps=records).write(jobs * records)
        full = Engine(data, "--snapshot-records", "10000000", "--snapshot-seconds", "86400", "--log-level", "info")
        full.start()
        _wait_for_log(full, b'"cold_jobs_packed"')  # the background packing after start-up is done
        time.sleep(0.5)
        out[name] = (base, full.rss_kib())
        full.stop()
        shutil.rmtree(data)
    return out


def _wait_for_log(engine: Engine, event: bytes, timeout: float = 300.0) -> None:
    """Wait until the engine's log holds ``event``."""
    deadline = time.monotonic() + timeout
    while event not in engine.log.read_bytes():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {event!r} in {engine.log} after {timeout:g} s")
        time.sleep(0.1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the three measurements and print the table; return 0."""
    parser = argparse.ArgumentParser(prog="bench.engine_durability")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--creates", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument(
        "--only",
        choices=("throughput", "replay", "memory"),
        default=None,
        help="run one of the three measurements (default: all)",
    )
    args = parser.parse_args(argv)
    wanted = {args.only} if args.only else {"throughput", "replay", "memory"}
    work = Path(tempfile.mkdtemp(prefix="bench-durability-", dir=args.dir))
    rates: dict[str, dict[str, float]] = {}
    times: dict[str, float] = {}
    mem: dict[str, tuple[int, int]] = {}
    try:
        if "throughput" in wanted:
            rates = throughput(work, args.rounds, args.creates, args.runs)
        if "replay" in wanted:
            times = replay(work, args.records)
        if "memory" in wanted:
            mem = memory(work, args.jobs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if rates:
        print("| measurement | durable | ephemeral | ratio | target |")
        print("|---|---|---|---|---|")
        for kind in ("create", "run"):
            d, e = rates["durable"][kind], rates["ephemeral"][kind]
            print(
                f"| {kind} requests/s ({CONCURRENCY} clients, median of {args.rounds}) | {d:,.0f} | {e:,.0f} "
                f"| {d / e:.2f}x | >= 0.7x |"
            )
        print()
    if times:
        print("| start-up (process start to /healthz 200) | seconds | target |")
        print("|---|---|---|")
        for name, seconds in times.items():
            target = "< 2 s" if "snapshot +" in name else "< 15 s" if "no snapshot" in name else "-"
            print(f"| {name} | {seconds:.2f} | {target} |")
        print()
    if not mem:
        return 0
    print("| memory (VmRSS) | empty engine | with jobs | per job | target |\n|---|---|---|---|---|")
    for name, (base, used) in mem.items():
        print(
            f"| {args.jobs:,} jobs, {name} | {base / 1024:.1f} MiB | {used / 1024:.1f} MiB "
            f"| {(used - base) * 1024 / args.jobs:.0f} bytes | < 1024 |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
