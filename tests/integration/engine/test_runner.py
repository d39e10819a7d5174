"""The job runner against real subprocesses: output, exit codes, timeout, cancel, orphans."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine_hub.jobs.catalog import JobType, ParamSpec, builtin_catalog
from engine_hub.run.runner import MAX_LINE, SUPERVISOR, TRUNCATED_MARK, Outcome, Runner, job_env
from shared.contract import JobStatus

GRACE = 0.3
REPO = Path(__file__).resolve().parents[3]

# A job that starts a helper process and writes "<own pid> <helper pid>" to a file.
#   how:  child  = a plain background child (same process group)
#         double = a double fork whose middle process exits (orphan, same group)
#         escape = a child that calls setsid() (leaves the job's group)
#   then: sleep = keep running; exit = exit 0 at once; stubborn = ignore SIGTERM, keep running
SPAWNER = r"""
import os, signal, sys, time

pidfile, how, then = sys.argv[1], sys.argv[2], sys.argv[3]
if then == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # inherited by the helper too

def helper():
    time.sleep(300)
    os._exit(0)

if how == "double":
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:
        grandchild = os.fork()
        if grandchild == 0:
            helper()
        os.write(write, str(grandchild).encode())
        os._exit(0)
    os.waitpid(middle, 0)
    os.close(write)
    helper_pid = int(os.read(read, 64))
else:
    helper_pid = os.fork()
    if helper_pid == 0:
        if how == "escape":
            os.setsid()
        helper()

with open(pidfile + ".tmp", "w") as fh:
    fh.write(f"{os.getpid()} {helper_pid}")
os.rename(pidfile + ".tmp", pidfile)
print("ready", flush=True)
if then != "exit":
    time.sleep(300)
"""


def py_type(
    code: str,
    *,
    timeout: float = 30,
    name: str = "t.job",
    params: tuple[ParamSpec, ...] = (),
    env: dict[str, str] | None = None,
) -> JobType:
    """A job type that runs ``code`` with this interpreter."""
    return JobType(
        name=name, command=(sys.executable, "-c", textwrap.dedent(code)), timeout=timeout, params=params, env=env or {}
    )


class Lines:
    """Collects (stream, text) output lines."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def __call__(self, stream: str, text: str) -> None:
        self.items.append((stream, text))

    def of(self, stream: str) -> list[str]:
        """The lines of one stream, in order."""
        return [text for s, text in self.items if s == stream]


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.02)


def gone(pid: int) -> bool:
    """Tell whether no process ``pid`` exists any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def runner() -> Runner:
    """A runner with a short kill grace."""
    return Runner(kill_grace=GRACE)


@pytest.fixture
def spawner(tmp_path: Path) -> Callable[[str, str], tuple[JobType, Path]]:
    """Return a factory of spawner job types and the pid file each writes."""
    script = tmp_path / "spawner.py"
    script.write_text(SPAWNER)

    def make(how: str, then: str, timeout: float = 30) -> tuple[JobType, Path]:
        pidfile = tmp_path / f"pids-{how}-{then}"
        job_type = JobType(
            name="t.spawner", command=(sys.executable, str(script), str(pidfile), how, then), timeout=timeout
        )
        return job_type, pidfile

    return make


def read_pids(pidfile: Path) -> tuple[int, int]:
    """Read the spawner's "<job pid> <helper pid>"."""
    main, helper = pidfile.read_text().split()
    return int(main), int(helper)


async def start(
    runner: Runner,
    job_type: JobType,
    job_id: str = "job-1",
    params: dict[str, Any] | None = None,
    lines: Lines | None = None,
) -> asyncio.Task[Outcome]:
    """Start a run in the background."""
    return asyncio.create_task(
        runner.run(
            job_id=job_id, job_type=job_type, params=params or {}, on_line=lines if lines is not None else Lines()
        )
    )


class TestOutput:
    async def test_streams_in_order(self, runner: Runner) -> None:
        """stdout and stderr lines arrive separately, each in order."""
        lines = Lines()
        job_type = py_type("""
            import sys
            for i in range(5):
                print(f"out {i}", flush=True)
                print(f"err {i}", file=sys.stderr, flush=True)
        """)
        outcome = await runner.run(job_id="j", job_type=job_type, params={}, on_line=lines)
        assert outcome == Outcome(status=JobStatus.DONE, exit_code=0, error=None)
        assert lines.of("stdout") == [f"out {i}" for i in range(5)]
        assert lines.of("stderr") == [f"err {i}" for i in range(5)]

    async def test_demo_echo(self, runner: Runner) -> None:
        """The built-in demo.echo runs as a real process and prints its message param."""
        lines = Lines()
        job_type = builtin_catalog().get("demo.echo")
        assert job_type is not None
        outcome = await runner.run(
            job_id="j", job_type=job_type, params=job_type.validate_params({"message": "héllo"}), on_line=lines
        )
        assert outcome.status is JobStatus.DONE
        assert lines.items == [("stdout", "héllo")]

    async def test_long_lines_and_bad_bytes(self, runner: Runner) -> None:
        """Huge lines are capped, invalid UTF-8 is replaced, CRLF and a last unterminated line are handled."""
        lines = Lines()
        job_type = py_type(r"""
            import sys
            sys.stdout.buffer.write(b"a" * 200_000 + b"\nshort\n" + b"\xff\xfebad\r\n" + b"tail")
        """)
        outcome = await runner.run(job_id="j", job_type=job_type, params={}, on_line=lines)
        assert outcome.status is JobStatus.DONE
        assert lines.of("stdout") == ["a" * MAX_LINE + TRUNCATED_MARK, "short", "\ufffd\ufffdbad", "tail"]

    async def test_fast_producer(self, runner: Runner) -> None:
        """Output written faster than it is read is captured completely and in order."""
        lines = Lines()
        job_type = py_type("""
            import sys
            sys.stdout.write("".join(f"line {i}\\n" for i in range(100_000)))
        """)
        outcome = await runner.run(job_id="j", job_type=job_type, params={}, on_line=lines)
        assert outcome.status is JobStatus.DONE
        out = lines.of("stdout")
        assert len(out) == 100_000
        assert out[0] == "line 0" and out[-1] == "line 99999" and out[54_321] == "line 54321"

    async def test_stdout_closed_early(self, runner: Runner) -> None:
        """A job that closes stdout early keeps running and is followed to its end."""
        lines = Lines()
        job_type = py_type("""
            import os, sys, time
            print("before", flush=True)
            os.close(1)
            time.sleep(0.3)
            print("still here", file=sys.stderr, flush=True)
        """)
        outcome = await runner.run(job_id="j", job_type=job_type, params={}, on_line=lines)
        assert outcome.status is JobStatus.DONE
        assert lines.items == [("stdout", "before"), ("stderr", "still here")]

    async def test_failing_callback(self, runner: Runner) -> None:
        """A consumer that raises does not break the run or stop the output from being drained."""
        seen: list[str] = []

        def broken(stream: str, text: str) -> None:
            seen.append(text)
            raise RuntimeError("store is down")

        job_type = py_type("print('\\n'.join(map(str, range(1000))))")
        outcome = await runner.run(job_id="j", job_type=job_type, params={}, on_line=broken)
        assert outcome.status is JobStatus.DONE
        assert len(seen) == 1000


class TestExit:
    @pytest.mark.parametrize(
        ("code", "status", "error"),
        [
            (0, JobStatus.DONE, None),
            (3, JobStatus.FAILED, "exited with code 3"),
            (255, JobStatus.FAILED, "exited with code 255"),
        ],
    )
    async def test_exit_codes(self, runner: Runner, code: int, status: JobStatus, error: str | None) -> None:
        """Exit 0 is DONE; any other exit code is FAILED with that code."""
        outcome = await runner.run(
            job_id="j", job_type=py_type(f"raise SystemExit({code})"), params={}, on_line=Lines()
        )
        assert outcome == Outcome(status=status, exit_code=code, error=error)

    async def test_demo_fail(self, runner: Runner) -> None:
        """demo.fail exits non-zero with a message on stderr."""
        lines = Lines()
        job_type = builtin_catalog().get("demo.fail")
        assert job_type is not None
        outcome = await runner.run(job_id="j", job_type=job_type, params=job_type.validate_params({}), on_line=lines)
        assert outcome == Outcome(status=JobStatus.FAILED, exit_code=1, error="exited with code 1")
        assert lines.of("stderr") == ["demo.fail: failing on purpose with exit code 1"]

    async def test_killed_by_signal(self, runner: Runner) -> None:
        """A job killed by a signal is FAILED naming the signal."""
        job_type = py_type("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
        outcome = await runner.run(job_id="j", job_type=job_type, params={}, on_line=Lines())
        assert outcome == Outcome(status=JobStatus.FAILED, exit_code=None, error="killed by SIGKILL")

    async def test_command_not_found(self, runner: Runner) -> None:
        """A missing program is FAILED "failed to start", not an exception."""
        job_type = JobType(name="t.missing", command=("/nonexistent/reindex", "--all"), timeout=5)
        outcome = await runner.run(job_id="j", job_type=job_type, params={}, on_line=Lines())
        assert outcome == Outcome(
            status=JobStatus.FAILED,
            exit_code=None,
            error="failed to start: No such file or directory: /nonexistent/reindex",
        )
        assert not runner.is_running("j")

    async def test_command_not_on_path(self, runner: Runner) -> None:
        """A bare program name that is not on PATH is FAILED "failed to start"."""
        job_type = JobType(name="t.missing", command=("no-such-program-xyz",), timeout=5)
        outcome = await runner.run(job_id="j", job_type=job_type, params={}, on_line=Lines())
        assert outcome.status is JobStatus.FAILED
        assert outcome.error is not None and outcome.error.startswith("failed to start: ")
        assert "no-such-program-xyz" in outcome.error

    async def test_not_executable(self, runner: Runner, tmp_path: Path) -> None:
        """A program without the execute bit is FAILED "failed to start: Permission denied"."""
        script = tmp_path / "job.sh"
        script.write_text("#!/bin/sh\necho hi\n")
        script.chmod(0o644)
        job_type = JobType(name="t.noexec", command=(str(script),), timeout=5)
        outcome = await runner.run(job_id="j", job_type=job_type, params={}, on_line=Lines())
        assert outcome.error == f"failed to start: Permission denied: {script}"

    async def test_missing_cwd(self, runner: Runner, tmp_path: Path) -> None:
        """A working directory that does not exist is FAILED and says so."""
        job_type = JobType(name="t.cwd", command=("/bin/true",), timeout=5, cwd=tmp_path / "absent")
        outcome = await runner.run(job_id="j", job_type=job_type, params={}, on_line=Lines())
        assert outcome.status is JobStatus.FAILED
        assert (
            outcome.error == f"failed to start: cannot use working directory {tmp_path / 'absent'}: "
            "No such file or directory"
        )

    async def test_cwd_and_started_pid(self, runner: Runner, tmp_path: Path) -> None:
        """The job runs in its cwd and on_started reports the job's own pid, which leads its group."""
        pids: list[int] = []
        lines = Lines()
        job_type = JobType(
            name="t.cwd",
            command=(sys.executable, "-c", "import os; print(os.getcwd()); print(os.getpid(), os.getpgid(0))"),
            timeout=5,
            cwd=tmp_path,
        )
        outcome = await runner.run(job_id="j", job_type=job_type, params={}, on_line=lines, on_started=pids.append)
        assert outcome.status is JobStatus.DONE
        cwd, ids = lines.of("stdout")
        assert cwd == str(tmp_path)
        assert ids == f"{pids[0]} {pids[0]}"

    async def test_same_job_twice_refused(self, runner: Runner) -> None:
        """Running a job id that is already running here is a programming error, refused."""
        task = await start(runner, py_type("import time; time.sleep(30)"), job_id="dup")
        await until(lambda: runner.is_running("dup"))
        with pytest.raises(RuntimeError):
            await runner.run(job_id="dup", job_type=py_type("pass"), params={}, on_line=Lines())
        assert runner.cancel("dup", by="test")
        await task


class TestEnvironment:
    async def test_env(self, runner: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
        """The job gets JOB_ID, JOB_TYPE, its params and static env, but none of the engine's secrets."""
        monkeypatch.setenv("ENGINE_HUB_TOKEN", "top-secret")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
        monkeypatch.setenv("LC_ALL", "C.UTF-8")
        lines = Lines()
        job_type = py_type(
            "import json, os; print(json.dumps(dict(os.environ)))",
            params=(
                ParamSpec(name="seconds", type="int"),
                ParamSpec(name="full", type="bool"),
                ParamSpec(name="note", type="str"),
            ),
            env={"SEARCH_URL": "http://127.0.0.1:9200"},
        )
        params = job_type.validate_params({"seconds": 7, "full": True, "note": "a b=c\nd"})
        outcome = await runner.run(job_id="job-42", job_type=job_type, params=params, on_line=lines)
        assert outcome.status is JobStatus.DONE
        env = json.loads(lines.of("stdout")[0])
        assert env["JOB_ID"] == "job-42"
        assert env["JOB_TYPE"] == "t.job"
        assert env["JOB_PARAM_SECONDS"] == "7"
        assert env["JOB_PARAM_FULL"] == "true"
        assert env["JOB_PARAM_NOTE"] == "a b=c\nd"
        assert env["SEARCH_URL"] == "http://127.0.0.1:9200"
        assert env["LC_ALL"] == "C.UTF-8"
        assert "PATH" in env
        assert "ENGINE_HUB_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
        assert "top-secret" not in json.dumps(env)

    def test_job_env_defaults(self) -> None:
        """Without a PATH in the engine's environment the job still gets a sane PATH; false is "false"."""
        job_type = py_type("pass", params=(ParamSpec(name="dry_run", type="bool"),))
        env = job_env(job_id="j", job_type=job_type, params={"dry_run": False}, base={"HOME": "/root", "SECRET": "x"})
        assert env == {
            "HOME": "/root",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "JOB_ID": "j",
            "JOB_TYPE": "t.job",
            "JOB_PARAM_DRY_RUN": "false",
        }


class TestTimeout:
    async def test_timeout_kills_group(self, runner: Runner, spawner: Callable[..., tuple[JobType, Path]]) -> None:
        """On timeout the job and its background child are killed and the job is FAILED "timed out"."""
        job_type, pidfile = spawner("child", "sleep", timeout=1)
        outcome = await runner.run(job_id="j", job_type=job_type, params={}, on_line=Lines())
        assert outcome == Outcome(status=JobStatus.FAILED, exit_code=None, error="timed out after 1s")
        main, helper = read_pids(pidfile)
        await until(lambda: gone(main) and gone(helper))

    async def test_timeout_escalates_to_kill(
        self, runner: Runner, spawner: Callable[..., tuple[JobType, Path]]
    ) -> None:
        """Processes that ignore SIGTERM are SIGKILLed after the grace period."""
        job_type, pidfile = spawner("double", "stubborn", timeout=0.5)
        outcome = await runner.run(job_id="j", job_type=job_type, params={}, on_line=Lines())
        assert outcome.error == "timed out after 0.5s"
        main, helper = read_pids(pidfile)
        await until(lambda: gone(main) and gone(helper))

    async def test_demo_sleep_times_out(self) -> None:
        """A demo.sleep longer than its type's timeout ends FAILED with the timeout error."""
        demo = builtin_catalog().get("demo.sleep")
        assert demo is not None
        short = JobType(name=demo.name, command=demo.command, timeout=0.5, params=demo.params)
        lines = Lines()
        outcome = await Runner(kill_grace=GRACE).run(
            job_id="j", job_type=short, params=short.validate_params({"seconds": 30}), on_line=lines
        )
        assert outcome.error == "timed out after 0.5s"
        assert lines.of("stdout")[0].startswith("sleeping 30s")


class TestCancel:
    @pytest.mark.parametrize("how", ["child", "double", "escape"])
    async def test_cancel_kills_descendants(
        self, runner: Runner, how: str, spawner: Callable[..., tuple[JobType, Path]]
    ) -> None:
        """Cancel ends the job and its grandchildren, even one that left the group with setsid()."""
        job_type, pidfile = spawner(how, "sleep")
        task = await start(runner, job_type)
        await until(pidfile.exists)
        main, helper = read_pids(pidfile)
        assert not gone(helper)
        assert runner.cancel("job-1", by="alice")
        outcome = await task
        assert outcome == Outcome(status=JobStatus.FAILED, exit_code=None, error="cancelled by alice")
        await until(lambda: gone(main) and gone(helper))
        assert not runner.is_running("job-1")

    async def test_cancel_stubborn(self, runner: Runner, spawner: Callable[..., tuple[JobType, Path]]) -> None:
        """Cancel SIGKILLs a job and grandchild that ignore SIGTERM after the grace period."""
        job_type, pidfile = spawner("double", "stubborn")
        task = await start(runner, job_type)
        await until(pidfile.exists)
        main, helper = read_pids(pidfile)
        runner.cancel("job-1", by="bob")
        assert (await task).error == "cancelled by bob"
        await until(lambda: gone(main) and gone(helper))

    async def test_first_canceller_kept(self, runner: Runner) -> None:
        """When two people cancel, the job records the first one."""
        task = await start(runner, py_type("import time; print('up', flush=True); time.sleep(30)"))
        await until(lambda: runner.is_running("job-1"))
        assert runner.cancel("job-1", by="alice")
        assert runner.cancel("job-1", by="bob")
        assert (await task).error == "cancelled by alice"

    async def test_cancel_before_start(self, runner: Runner, tmp_path: Path) -> None:
        """A cancel that arrives before the job process exists means it never starts."""
        marker = tmp_path / "ran"
        task = await start(runner, py_type(f"open({str(marker)!r}, 'w').close()"))
        await until(lambda: runner.is_running("job-1"))
        assert runner.cancel("job-1", by="alice")
        assert (await task).error == "cancelled by alice"
        assert not marker.exists()

    async def test_cancel_unknown(self, runner: Runner) -> None:
        """Cancelling a job that is not running here returns False."""
        assert runner.cancel("nope", by="alice") is False
        await runner.run(job_id="done", job_type=py_type("pass"), params={}, on_line=Lines())
        assert runner.cancel("done", by="alice") is False

    async def test_cancel_races_exit(self, runner: Runner) -> None:
        """Cancelling jobs just as they exit never breaks a run: each ends DONE or cancelled."""
        job_type = py_type("pass")
        for i in range(8):
            job_id = f"race-{i}"

            def cancel_now(pid: int, job_id: str = job_id) -> None:
                runner.cancel(job_id, by="alice")

            outcome = await runner.run(
                job_id=job_id, job_type=job_type, params={}, on_line=Lines(), on_started=cancel_now
            )
            assert outcome in (
                Outcome(status=JobStatus.DONE, exit_code=0, error=None),
                Outcome(status=JobStatus.FAILED, exit_code=0, error="cancelled by alice"),
                Outcome(status=JobStatus.FAILED, exit_code=None, error="cancelled by alice"),
            )

    async def test_leftovers_killed_after_exit(
        self, runner: Runner, spawner: Callable[..., tuple[JobType, Path]]
    ) -> None:
        """When the main process exits, processes it left behind are ended; the job is still DONE."""
        job_type, pidfile = spawner("double", "exit")
        outcome = await runner.run(job_id="j", job_type=job_type, params={}, on_line=Lines())
        assert outcome.status is JobStatus.DONE
        _, helper = read_pids(pidfile)
        await until(lambda: gone(helper))

    async def test_task_cancel_ends_job(self, runner: Runner, spawner: Callable[..., tuple[JobType, Path]]) -> None:
        """If the task awaiting run() is cancelled, the job's processes are ended too."""
        job_type, pidfile = spawner("child", "sleep")
        task = await start(runner, job_type)
        await until(pidfile.exists)
        main, helper = read_pids(pidfile)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: gone(main) and gone(helper))


class TestShutdown:
    async def test_shutdown_ends_all(self, runner: Runner, spawner: Callable[..., tuple[JobType, Path]]) -> None:
        """shutdown() ends every running job and their runs return "cancelled by engine shutdown"."""
        first, first_pids = spawner("child", "sleep")
        second, second_pids = spawner("double", "stubborn")
        tasks = [await start(runner, first, job_id="a"), await start(runner, second, job_id="b")]
        await until(lambda: first_pids.exists() and second_pids.exists())
        await runner.shutdown()
        outcomes = await asyncio.gather(*tasks)
        assert [o.error for o in outcomes] == ["cancelled by engine shutdown"] * 2
        pids = [*read_pids(first_pids), *read_pids(second_pids)]
        await until(lambda: all(gone(p) for p in pids))

    async def test_shutdown_idle(self, runner: Runner) -> None:
        """shutdown() with nothing running returns at once."""
        await runner.shutdown()


class TestOrphans:
    async def test_engine_sigkill_kills_jobs(
        self, tmp_path: Path, spawner: Callable[..., tuple[JobType, Path]]
    ) -> None:
        """When the engine process is SIGKILLed, its job and the job's grandchild do not live on."""
        job_type, pidfile = spawner("double", "stubborn")
        engine = tmp_path / "engine.py"
        engine.write_text(
            textwrap.dedent(f"""
            import asyncio, sys
            from engine_hub.jobs.catalog import JobType
            from engine_hub.run.runner import Runner

            async def main() -> None:
                job_type = JobType(name="t.spawner", command={job_type.command!r}, timeout=300)
                await Runner(kill_grace={GRACE}).run(job_id="orphan", job_type=job_type, params={{}},
                                                     on_line=lambda stream, text: None)

            asyncio.run(main())
        """)
        )
        proc = subprocess.Popen([sys.executable, str(engine)], cwd=REPO, stdout=subprocess.DEVNULL)
        try:
            await until(pidfile.exists)
            main, helper = read_pids(pidfile)
            assert not gone(main) and not gone(helper)
            proc.kill()
            proc.wait()
            await until(lambda: gone(main) and gone(helper))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def test_supervisor_without_engine_starts_nothing(self, tmp_path: Path) -> None:
        """A supervisor whose lifeline is already closed (engine died first) exits without starting the job."""
        read, write = os.pipe()
        try:
            result = subprocess.run(
                [sys.executable, "-I", "-S", str(SUPERVISOR), str(os.getpid()), str(write), "x"],
                stdin=subprocess.DEVNULL,
                pass_fds=(write,),
                timeout=10,
                capture_output=True,
            )
        finally:
            os.close(write)
        with os.fdopen(read, "rb") as status:
            assert status.read() == b""
        assert result.returncode == 0 and result.stderr == b""

    def test_supervisor_of_dead_engine_starts_nothing(self, tmp_path: Path) -> None:
        """A supervisor whose parent is not the engine it was told about exits before reading a spec."""
        marker = tmp_path / "ran"
        spec: dict[str, Any] = {"argv": ["/bin/touch", str(marker)], "env": {}, "cwd": None, "timeout": 5, "grace": 0.1}
        result = subprocess.run(
            [sys.executable, "-I", "-S", str(SUPERVISOR), "1", "1", "x"],
            input=json.dumps(spec).encode() + b"\n",
            timeout=10,
            capture_output=True,
        )
        assert result.returncode == 0
        assert not marker.exists()
