"""A real ``engine-hub serve`` subprocess on a durable data directory, for restart and crash tests.

The engine listens on port 0; its URL comes from its ``engine_listening``
log line. :func:`mark_catalog` writes a catalog whose ``mark`` job records
each run in a file named after the job id (so a test can count runs) and
then sleeps.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

TOKEN = "durable-test-token-0123456789abcdef"
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("ENGINE_HUB_TOKEN", "ENGINE_HUB_URL", "ENGINE_PORT")}

_MARK = (
    "import os, sys, time\n"
    "with open(os.path.join(os.environ['JOB_PARAM_RUNS'], os.environ['JOB_ID']), 'a') as f:\n"
    "    f.write('ran\\n')\n"
    "print('marked', os.environ['JOB_PARAM_TAG'], flush=True)\n"
    "time.sleep(int(os.environ['JOB_PARAM_SECONDS']))\n"
    "print('slept', flush=True)\n"
)


def mark_catalog(directory: Path) -> Path:
    """Write a catalog with the demo types and ``mark`` (params ``tag``, ``seconds``, ``runs``); return it."""
    runs = directory / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    path = directory / "catalog.toml"
    path.write_text(
        "include_demo = true\n\n"
        "[[types]]\n"
        'name = "mark"\n'
        f"command = {json.dumps([sys.executable, '-c', _MARK])}\n"
        "timeout = 300\n\n"
        "[[types.params]]\n"
        'name = "tag"\n'
        'type = "str"\n'
        "required = true\n\n"
        "[[types.params]]\n"
        'name = "seconds"\n'
        'type = "int"\n'
        "default = 0\n"
        "min = 0\n"
        "max = 300\n\n"
        "[[types.params]]\n"
        'name = "runs"\n'
        'type = "str"\n'
        f"default = {json.dumps(str(runs))}\n"
    )
    return path


class EngineProcess:
    """One ``engine-hub serve`` process; use :meth:`start`, then :meth:`kill` or :meth:`stop`."""

    def __init__(self, data_dir: Path, *extra: str, env: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra = list(extra)
        self.env = {**CLEAN_ENV, "ENGINE_HUB_TOKEN": TOKEN, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = data_dir.parent / f"{data_dir.name}-serve.log"
        self._log: IO[bytes] | None = None

    def argv(self) -> list[str]:
        """The command line."""
        return [
            sys.executable,
            "-m",
            "engine_hub",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
            "--kill-grace",
            "0.5",
            *self.extra,
        ]

    def start(self, *, timeout: float = 30.0) -> EngineProcess:
        """Start the engine and wait until it listens (raises with its log if it exits first)."""
        # New output starts after the last whole line: the engine cuts off a torn one a kill left.
        offset = self.log_path.read_bytes().rfind(b"\n") + 1 if self.log_path.exists() else 0
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv(), stdout=self._log, stderr=subprocess.STDOUT, env=self.env, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                for line in f.read().splitlines():
                    if b'"engine_listening"' in line:
                        self.port = int(_json_line(line)["url"].rsplit(":", 1)[1])
                        return self
            if self.proc.poll() is not None:
                raise AssertionError(f"engine exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"engine did not start within {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the engine (a crash) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_log()

    def stop(self) -> int:
        """SIGTERM the engine, wait for it and return its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()
        return self.proc.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        """The end of the engine's output (for failure messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log event the engine printed so far."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                out.append(_json_line(line.encode()))
        return out

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        """Make one HTTP request; return ``(status, parsed JSON body, headers)``. Raises ``OSError``."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            sent = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                sent["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=sent)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None, dict(resp.headers)
        finally:
            conn.close()

    def ok(self, method: str, path: str, body: Any = None, *, status: int = 200) -> Any:
        """Make a request that must answer ``status``; return its body."""
        got, answer, _ = self.request(method, path, body)
        assert got == status, (method, path, got, answer)
        return answer

    def all_jobs(self) -> dict[str, dict[str, Any]]:
        """Every job, by id, following the list's pages."""
        jobs: dict[str, dict[str, Any]] = {}
        path = "/api/jobs?limit=1000"
        while True:
            status, page, headers = self.request("GET", path)
            assert status == 200, page
            jobs.update((j["id"], j) for j in page)
            link = headers.get("Link")
            if not link:
                return jobs
            path = link[1 : link.index(">")]


class MakeEngineProcess(Protocol):
    """The ``engine_process`` fixture: ``EngineProcess``'s signature; the fixture kills what is left at teardown."""

    def __call__(self, data_dir: Path, *extra: str, env: Mapping[str, str] | None = None) -> EngineProcess: ...


def _json_line(line: bytes) -> dict[str, Any]:
    """Parse one JSON log line strictly: a torn fragment left by a SIGKILL is cut off by the next engine."""
    value = json.loads(line)
    assert isinstance(value, dict), line
    return value


def job_processes(job_ids: set[str]) -> Iterator[int]:
    """Yield pids of live processes whose environment has a ``JOB_ID`` in ``job_ids``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state == b"Z":
            continue  # a zombie is already dead, just not reaped yet
        for item in env.split(b"\0"):
            if item.startswith(b"JOB_ID=") and item[7:].decode(errors="replace") in job_ids:
                yield int(entry)
                break


def wait_until(predicate: Any, *, timeout: float, what: str) -> None:
    """Poll ``predicate()`` every 20 ms until it is truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.02)


def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m engine_hub ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "engine_hub", *args], capture_output=True, text=True, env=CLEAN_ENV, timeout=timeout
    )


def one_line_error(result: subprocess.CompletedProcess[str], status: int, *needles: str) -> str:
    """Assert the command failed with ``status`` and one ``engine-hub: error:`` line naming ``needles``."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("engine-hub: error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Traceback" not in result.stdout + result.stderr
    return errors[0]


def runs_of(directory: Path) -> dict[str, int]:
    """How many times each job id ran (the ``mark`` job's side-effect files)."""
    return {p.name: len(p.read_text().splitlines()) for p in (directory / "runs").iterdir()}


def jobs_sequence(values: Sequence[str]) -> str:
    """Format ids for assertion messages."""
    return ", ".join(sorted(values)[:5]) + (" …" if len(values) > 5 else "")
