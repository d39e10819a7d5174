"""Running one job as a real subprocess, with timeout, cancel and no orphans.

:class:`Runner` is the engine's side. Each run goes through a small
supervisor process (:mod:`engine_hub.run.supervisor`, which explains the design):
the supervisor starts the job in a process group of its own, enforces the
timeout, ends the whole group (SIGTERM, grace, SIGKILL) on timeout, cancel or
when the engine dies, and reports how the job ended. The job's stdout and
stderr go straight to pipes the runner reads here, line by line.

The runner knows nothing about the job store: it reports lines through
``on_line``, the job pid through ``on_started``, and returns an
:class:`Outcome`. ``run()`` never raises for a job that cannot start or that
misbehaves; it returns a FAILED outcome that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final, Protocol

import attrs
import structlog

from engine_hub.jobs.catalog import JobType
from shared.contract import MAX_PLAN_OUTPUT, JobStatus

log = structlog.get_logger("runner")

SUPERVISOR: Final = Path(__file__).with_name("supervisor.py")

#: Longest line kept in the job log, in bytes; the rest of a longer line is dropped.
MAX_LINE: Final = 64 * 1024
TRUNCATED_MARK: Final = " [line truncated at 64 KiB]"
_READ_CHUNK: Final = 64 * 1024

#: Variables a job inherits from the engine's environment. Everything else is
#: left out, so ENGINE_HUB_TOKEN and any other secret of the engine never
#: reaches a job (deny by default).
INHERITED_ENV: Final = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME", "TMPDIR")
DEFAULT_PATH: Final = "/usr/local/bin:/usr/bin:/bin"

#: The longest a plan's group gets between SIGTERM and SIGKILL (a plan should hold nothing worth a
#: long clean-up, and a person is waiting for its answer).
PLAN_KILL_GRACE: Final = 5.0

#: After the supervisor has exited, how long to wait for the output pipes to
#: reach end of file (a process that escaped every kill could hold them open).
DRAIN_TIMEOUT: Final = 2.0
#: Extra time the engine gives the supervisor beyond timeout and kill grace
#: before it stops trusting it and kills it and the job's group itself.
WATCHDOG_MARGIN: Final = 15.0

LineCallback = Callable[[str, str], None]
StartedCallback = Callable[[int], None]


@attrs.frozen(kw_only=True)
class Outcome:
    """How a run ended: DONE (exit 0) or FAILED, with the exit code and a human reason."""

    status: JobStatus
    exit_code: int | None
    error: str | None


@attrs.frozen(kw_only=True)
class PlanOutcome:
    """How a plan ended: its output (the first :data:`MAX_PLAN_OUTPUT` bytes, stdout and stderr as one
    stream), whether more was cut off, its exit code (``None`` when it did not exit by itself), whether
    its timeout ended it, and why it did not exit 0 (``None`` when it did)."""

    output: bytes
    truncated: bool
    exit_code: int | None
    timed_out: bool
    error: str | None


def job_env(
    *, job_id: str, job_type: JobType, params: Mapping[str, Any], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Build the complete environment of a job run.

    Only :data:`INHERITED_ENV` and ``LC_*`` come from ``base`` (the engine's
    environment by default); then the type's static ``env``; then ``JOB_ID``,
    ``JOB_TYPE`` and one ``JOB_PARAM_<NAME>`` per param (bools as
    ``true``/``false``).
    """
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if k in INHERITED_ENV or k.startswith("LC_")}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(job_type.env)
    env["JOB_ID"] = job_id
    env["JOB_TYPE"] = job_type.name
    for name, value in params.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"JOB_PARAM_{name.upper()}"] = text
    return env


def _describe_signal(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _LineSplitter:
    """Turns a byte stream into lines: UTF-8 with replacement, capped at :data:`MAX_LINE`."""

    def __init__(self, stream: str, on_line: LineCallback, job_id: str) -> None:
        self.stream = stream
        self.on_line = on_line
        self.job_id = job_id
        self.buf = bytearray()
        self.dropping = False  # inside a line that was already emitted truncated
        self.callback_failed = False

    def emit(self, data: bytes | bytearray, *, truncated: bool = False) -> None:
        text = bytes(data).decode("utf-8", errors="replace").removesuffix("\r")
        if truncated:
            text += TRUNCATED_MARK
        try:
            self.on_line(self.stream, text)
        except Exception:
            # A broken consumer must not stop us draining the pipe (the job would
            # block on a full pipe); report it once.
            if not self.callback_failed:
                self.callback_failed = True
                log.exception("job_output_callback_failed", job_id=self.job_id, stream=self.stream)

    def feed(self, chunk: bytes) -> None:
        start = 0
        while start < len(chunk):
            newline = chunk.find(b"\n", start)
            end = len(chunk) if newline < 0 else newline
            if not self.dropping:
                room = MAX_LINE - len(self.buf)
                self.buf += chunk[start : min(end, start + room)]
                if end - start > room:
                    self.emit(self.buf, truncated=True)
                    self.buf.clear()
                    self.dropping = True
                elif newline >= 0:
                    self.emit(self.buf)
                    self.buf.clear()
            if newline < 0:
                break
            self.dropping = False
            start = newline + 1

    def close(self) -> None:
        if self.buf and not self.dropping:
            self.emit(self.buf)
        self.buf.clear()


class _Sink(Protocol):
    """Where the output read from one pipe goes: a line splitter (runs) or a capture (plans)."""

    def feed(self, chunk: bytes) -> None: ...

    def close(self) -> None: ...


class _Capture:
    """Keeps the first ``limit`` bytes of a stream as they came; the rest is read and dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    def feed(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if len(chunk) > room:
            self.truncated = True
        if room > 0:
            self.data += chunk[:room]

    def close(self) -> None:
        """Nothing to flush: the bytes are kept as they came."""


@attrs.define
class _Run:
    """Book-keeping of one run in progress (mutable, private to the runner)."""

    job_id: str
    proc: asyncio.subprocess.Process
    pid: int | None = None
    cancelled_by: str | None = None
    done: asyncio.Event = attrs.field(factory=asyncio.Event)

    def send(self, data: bytes) -> None:
        """Write a command to the supervisor; a closed lifeline is ignored."""
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                stdin.write(data)

    def hard_kill(self) -> None:
        """SIGKILL the supervisor and the job's group, for when the supervisor cannot be trusted."""
        with contextlib.suppress(OSError):
            self.proc.kill()
        if self.pid is not None:
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)


class Runner:
    """Runs jobs as supervised subprocesses; one instance per engine.

    ``kill_grace`` is the time between SIGTERM and SIGKILL when a run is
    timed out, cancelled or shut down.
    """

    def __init__(self, *, kill_grace: float = 5.0, python: str = sys.executable) -> None:
        self._kill_grace = kill_grace
        self._python = python
        self._runs: dict[str, _Run] = {}
        self._plans = 0  # plans started: numbers each plan's key in _runs

    def is_running(self, job_id: str) -> bool:
        """Tell whether a run of ``job_id`` is in progress in this runner."""
        return job_id in self._runs

    def cancel(self, job_id: str, *, by: str) -> bool:
        """Start ending the run of ``job_id``: SIGTERM to its group, SIGKILL after the grace.

        Returns ``False`` if the job is not running here. Otherwise returns at
        once; ``run()`` then returns FAILED "cancelled by <by>" (the first
        canceller is kept when several cancel). If the job's main process had
        already exited on its own, ``run()`` reports that exit instead.
        """
        run = self._runs.get(job_id)
        if run is None:
            return False
        if run.cancelled_by is None:
            run.cancelled_by = by
        run.send(b"cancel\n")
        log.info("job_cancel_requested", job_id=job_id, by=by)
        return True

    async def shutdown(self) -> None:
        """End every running job (TERM, grace, KILL) and wait for their runs to finish.

        Their ``run()`` calls return FAILED "cancelled by engine shutdown".
        """
        runs = list(self._runs.values())
        for run in runs:
            self.cancel(run.job_id, by="engine shutdown")
        if not runs:
            return
        waiters = [asyncio.ensure_future(run.done.wait()) for run in runs]
        _, pending = await asyncio.wait(waiters, timeout=self._kill_grace + WATCHDOG_MARGIN)
        for waiter in pending:
            waiter.cancel()
        for run in runs:
            if not run.done.is_set():
                log.error("job_supervisor_unresponsive", job_id=run.job_id)
                run.hard_kill()

    async def run(
        self,
        *,
        job_id: str,
        job_type: JobType,
        params: dict[str, Any],
        on_line: LineCallback,
        on_started: StartedCallback | None = None,
    ) -> Outcome:
        """Run one job to its end and return how it ended.

        ``params`` must already be validated (:meth:`JobType.validate_params`).
        ``on_line(stream, text)`` is called for every output line, in order
        per stream; ``on_started(pid)`` once the job's process exists. A job
        that cannot start, fails, times out or is cancelled gives a FAILED
        outcome; this method raises only if ``job_id`` is already running here.
        If the calling task is cancelled, the job is ended (via the lifeline).
        """
        if job_id in self._runs:
            raise RuntimeError(f"job {job_id} is already running")
        env = job_env(job_id=job_id, job_type=job_type, params=params)
        sinks = (_LineSplitter("stdout", on_line, job_id), _LineSplitter("stderr", on_line, job_id))
        run, final = await self._supervise(
            job_id, job_type.command, env, job_type, job_type.timeout, self._kill_grace, sinks, on_started
        )
        outcome = self._outcome(run, job_type.timeout, final, run.proc.returncode if run is not None else None)
        log.info(
            "job_process_finished",
            job_id=job_id,
            status=str(outcome.status),
            exit_code=outcome.exit_code,
            error=outcome.error,
        )
        return outcome

    async def plan(self, *, job_id: str, job_type: JobType, params: dict[str, Any]) -> PlanOutcome:
        """Run ``job_type``'s plan (its dry run) for a job with these ``params``; return its output and end.

        The plan runs like a run (:meth:`run`): supervised, in a process group of
        its own, with the same environment (:func:`job_env`) and working
        directory, ended with its whole group after ``job_type.plan_timeout``
        seconds (kill grace at most :data:`PLAN_KILL_GRACE`), and ended at
        engine shutdown. Its stdout and stderr share one pipe, so the output
        reads as in a terminal; the first :data:`MAX_PLAN_OUTPUT` bytes are kept
        (the rest is read and dropped, so the plan never blocks on a full pipe).
        Never raises for a plan that cannot start or misbehaves: the outcome
        says so (``error``). Any number of plans of one job may run at once.
        """
        if not job_type.plan:
            raise ValueError(f"job type {job_type.name!r} has no plan")
        self._plans += 1
        key = f"{job_id}:plan:{self._plans}"
        env = job_env(job_id=job_id, job_type=job_type, params=params)
        capture = _Capture(MAX_PLAN_OUTPUT)
        grace = min(self._kill_grace, PLAN_KILL_GRACE)
        run, final = await self._supervise(key, job_type.plan, env, job_type, job_type.plan_timeout, grace, (capture,))
        outcome = self._outcome(run, job_type.plan_timeout, final, run.proc.returncode if run is not None else None)
        timed_out = final is not None and final.get("reason") == "timeout"
        log.info(
            "job_plan_finished",
            job_id=job_id,
            exit_code=outcome.exit_code,
            timed_out=timed_out,
            truncated=capture.truncated,
            error=outcome.error,
        )
        return PlanOutcome(
            output=bytes(capture.data),
            truncated=capture.truncated,
            exit_code=outcome.exit_code,
            timed_out=timed_out,
            error=outcome.error,
        )

    async def _supervise(
        self,
        key: str,
        argv: tuple[str, ...],
        env: dict[str, str],
        job_type: JobType,
        timeout: float,
        grace: float,
        sinks: Sequence[_Sink],
        on_started: StartedCallback | None = None,
    ) -> tuple[_Run | None, dict[str, Any] | None]:
        """Run ``argv`` under a supervisor until it ends; return the run (``None``: no supervisor) and its final report.

        With two ``sinks`` they get stdout and stderr; with one, both streams
        share one pipe. A supervisor that cannot start gives ``(None, {start_failed})``.
        """
        spec = {
            "argv": list(argv),
            "env": env,
            "cwd": str(job_type.cwd) if job_type.cwd is not None else None,
            "timeout": timeout,
            "grace": grace,
        }
        # We create the output pipes ourselves rather than let asyncio do it:
        # asyncio's Process.wait() also waits for its pipes to close, and a job
        # process that escaped every kill could hold them open for ever. With
        # our own pipes, the end of the run is the supervisor's status pipe
        # closing, and the output is drained for a bounded time after that.
        # The supervisor is spawned from the event loop's thread, which lives as
        # long as the engine: PR_SET_PDEATHSIG fires when the spawning *thread*
        # exits, so spawning from a short-lived worker thread would be wrong.
        status_r, status_w = os.pipe()
        pipes = [os.pipe() for _ in sinks]
        out_w, err_w = pipes[0][1], pipes[-1][1]
        try:
            proc = await asyncio.create_subprocess_exec(
                self._python,
                "-I",
                "-S",
                str(SUPERVISOR),
                str(os.getpid()),
                str(status_w),
                key,
                stdin=asyncio.subprocess.PIPE,
                stdout=out_w,
                stderr=err_w,
                pass_fds=(status_w,),
                start_new_session=True,
            )
        except OSError as exc:
            for fd in (status_r, *(r for r, _ in pipes)):
                os.close(fd)
            log.error("job_supervisor_start_failed", job_id=key, error=str(exc))
            return None, {"event": "start_failed", "error": str(exc)}
        finally:
            for fd in (status_w, *(w for _, w in pipes)):
                os.close(fd)
        run = _Run(job_id=key, proc=proc)
        self._runs[key] = run
        # Written before any await, so a cancel() can only ever follow the spec.
        run.send(json.dumps(spec).encode() + b"\n")
        try:
            final = await self._follow(
                run,
                timeout + 2 * grace,
                status_r,
                [(r, sink) for (r, _), sink in zip(pipes, sinks, strict=True)],
                on_started,
            )
        finally:
            del self._runs[key]
            run.done.set()
        return run, final

    async def _follow(
        self,
        run: _Run,
        longest: float,
        status_r: int,
        outputs: list[tuple[int, _Sink]],
        on_started: StartedCallback | None,
    ) -> dict[str, Any] | None:
        """Read the supervisor's status and the output until the run is over; return its final report.

        ``longest`` is the time the supervisor may take (timeout and kill grace) before the
        watchdog stops trusting it.
        """
        proc = run.proc
        readers: list[asyncio.ReadTransport] = []
        files = [os.fdopen(fd, "rb", buffering=0) for fd in (status_r, *(fd for fd, _ in outputs))]
        try:
            status, *streams = [await self._reader(f, readers) for f in files]
        except BaseException:
            for f in files:
                f.close()  # closing twice (via its transport) is harmless
            run.hard_kill()
            raise
        pumps = [
            asyncio.create_task(self._pump(stream, sink)) for stream, (_, sink) in zip(streams, outputs, strict=True)
        ]
        final: dict[str, Any] | None = None
        try:
            async with asyncio.timeout(longest + WATCHDOG_MARGIN):
                while line := await status.readline():
                    try:
                        event = json.loads(line)
                    except ValueError:
                        log.error("job_supervisor_bad_status", job_id=run.job_id)
                        continue
                    if event.get("event") == "started":
                        run.pid = int(event["pid"])
                        log.info("job_process_started", job_id=run.job_id, pid=run.pid)
                        self._started(run, on_started)
                    else:
                        final = event
                # The status pipe closed: the supervisor has finished (or died).
                if proc.stdin is not None:
                    proc.stdin.close()
                await proc.wait()
        except asyncio.CancelledError:
            # Our caller gave up on the run (e.g. the app is shutting down):
            # closing the lifeline makes the supervisor end the whole job. Wait
            # for that so no process outlives the event loop; if we are
            # cancelled again meanwhile, kill outright.
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                async with asyncio.timeout(self._kill_grace + WATCHDOG_MARGIN):
                    await proc.wait()
            except BaseException:
                run.hard_kill()
            raise
        except TimeoutError:
            log.error("job_supervisor_unresponsive", job_id=run.job_id, pid=run.pid)
            run.hard_kill()
            await proc.wait()
            final = {"event": "exit", "reason": "timeout", "code": None, "signal": None}
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            _, pending = await asyncio.wait(pumps, timeout=DRAIN_TIMEOUT)
            for pump in pending:
                pump.cancel()
            for transport in readers:
                transport.close()
        if final is not None and final.get("leftovers"):
            log.warning("job_leftovers_killed", job_id=run.job_id)
        if final is not None and final.get("stuck"):
            log.error("job_processes_unkillable", job_id=run.job_id, pgid=run.pid)
        return final

    @staticmethod
    def _started(run: _Run, on_started: StartedCallback | None) -> None:
        """Tell the caller the job's pid; a failing callback must not orphan the job."""
        if on_started is None:
            return
        try:
            on_started(run.pid or 0)
        except Exception:
            log.exception("job_started_callback_failed", job_id=run.job_id)

    @staticmethod
    async def _reader(pipe: BinaryIO, transports: list[asyncio.ReadTransport]) -> asyncio.StreamReader:
        """Wrap the read end of a pipe in a StreamReader; its transport joins ``transports``."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_READ_CHUNK)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        transports.append(transport)
        return reader

    @staticmethod
    async def _pump(stream: asyncio.StreamReader, sink: _Sink) -> None:
        """Read ``stream`` to its end, handing it to ``sink`` chunk by chunk."""
        try:
            while chunk := await stream.read(_READ_CHUNK):
                sink.feed(chunk)
        finally:
            sink.close()

    @staticmethod
    def _outcome(
        run: _Run | None, timeout: float, final: Mapping[str, Any] | None, supervisor_rc: int | None
    ) -> Outcome:
        """Turn the supervisor's final report into an :class:`Outcome`."""
        failed = JobStatus.FAILED
        if final is None:
            return Outcome(
                status=failed,
                exit_code=None,
                error=f"runner error: job supervisor ended with code {supervisor_rc} without a report",
            )
        if final["event"] == "start_failed":
            return Outcome(status=failed, exit_code=None, error=f"failed to start: {final['error']}")
        code: int | None = final.get("code")
        reason = final.get("reason")
        if reason == "timeout":
            return Outcome(status=failed, exit_code=code, error=f"timed out after {timeout:g}s")
        if reason == "cancelled":
            by = run.cancelled_by if run is not None else None
            return Outcome(status=failed, exit_code=code, error=f"cancelled by {by or 'unknown'}")
        if reason == "lost":
            return Outcome(status=failed, exit_code=code, error="interrupted: the engine lost contact with the job")
        if code == 0:
            return Outcome(status=JobStatus.DONE, exit_code=0, error=None)
        if code is not None:
            return Outcome(status=failed, exit_code=code, error=f"exited with code {code}")
        signum = final.get("signal")
        what = _describe_signal(signum) if isinstance(signum, int) else "an unknown cause"
        return Outcome(status=failed, exit_code=None, error=f"killed by {what}")
