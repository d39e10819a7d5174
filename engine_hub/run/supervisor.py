"""The job supervisor: a tiny process that runs one job and guarantees its end.

Why a supervisor at all? The engine must never leave job processes behind:
not on timeout, not on cancel, and not when the engine itself dies, even by
SIGKILL, when it gets no chance to clean up. A process cannot kill its
children after it is dead, so each job runs under this small, single-purpose
process that outlives the engine just long enough to end the job's processes.

How it works:

* The engine starts ``python -I -S supervisor.py <engine_pid> <status_fd>
  <job_id>`` in a session of its own (so a Ctrl-C aimed at the engine's
  terminal does not kill the supervisor before it has cleaned up). The
  script is run by path with only the standard library, so it starts fast and
  does not depend on how the engine was installed.
* **Lifeline**: the supervisor's stdin is a pipe whose only writer is the
  engine. The first line is the job spec (JSON: argv, env, cwd, timeout,
  grace); later lines are commands (``cancel``). End of file means the engine
  is gone, however it died, because the kernel closes the engine's end. That
  holds even if the engine died before we got here: the pipe is already at EOF
  and we never start the job. The job gets ``/dev/null`` as stdin and all other
  descriptors are closed, so it cannot hold the lifeline open.
* **PR_SET_PDEATHSIG(SIGTERM)** is set too, as a second signal of the same
  event; after setting it we check that our parent is still the engine, which
  closes the race where the engine died before the prctl call.
* The job runs in a **new session** (its own process group, pgid = its pid).
  Ending it means SIGTERM to the whole group, a grace period, then SIGKILL, so
  background children and double-forked grandchildren that stay in the group
  go too. The job's main process also gets PR_SET_PDEATHSIG(SIGKILL), in case
  the supervisor itself is killed outright (the OOM killer).
* The supervisor is a **child subreaper** (PR_SET_CHILD_SUBREAPER): descendants
  that escape the group with ``setsid()`` are re-parented to us rather than to
  init once their parent dies, so we can still find and kill them, and we reap
  every zombie (important in containers whose PID 1 does not reap).
* When the job's main process exits by itself, whatever it left running is
  ended the same way (as systemd does for a service's control group): a job is
  over when its main process is, and nothing it started outlives it.

Status lines written to ``status_fd`` (JSON, one per line):
``{"event": "started", "pid": N}``, ``{"event": "start_failed", "error": "…"}``
and finally ``{"event": "exit", "reason": "exited"|"timeout"|"cancelled"|"lost",
"code": N|null, "signal": N|null, "leftovers": bool, "stuck": bool}``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

#: How long SIGKILLed processes may take to disappear before we give up on them
#: (a process in uninterruptible sleep cannot be killed; we report it as stuck).
KILL_WAIT = 5.0
#: Poll period while waiting for processes that are not our children to exit:
#: their deaths do not wake us with SIGCHLD.
POLL = 0.02


def _prctl(option: int, arg: int) -> bool:
    """Call prctl(2); return whether it worked (False off Linux or without libc)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, arg, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class Supervisor:
    """Runs one job to its end; see the module docstring for the protocol."""

    def __init__(self, engine_pid: int, status_fd: int) -> None:
        self.engine_pid = engine_pid
        self.status_fd = status_fd
        self.own_pid = os.getpid()
        self.own_pgid = os.getpgid(0)
        self.inbuf = b""
        self.spec_read = False
        self.lost = False  # lifeline EOF or a terminating signal
        self.cancel = False
        self.main_pid: int | None = None
        self.main_status: int | None = None  # wait status of the job's main process
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        # Python-level handlers (not SIG_IGN, which exec would pass on to the job);
        # the C handler writes to the wakeup fd, which ends our select().
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_terminate)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def _on_terminate(self, signum: int, frame: object) -> None:
        self.lost = True

    # ------------------------------------------------------------------ events

    def report(self, **event: Any) -> None:
        """Write one status line for the engine; ignore a vanished engine."""
        data = (json.dumps(event) + "\n").encode()
        with contextlib.suppress(OSError):
            os.write(self.status_fd, data)

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for input, a signal or a child exit, then process them."""
        fds = [self.wake_r] if self.lost else [0, self.wake_r]
        try:
            readable, _, _ = select.select(fds, [], [], max(0.0, timeout))
        except InterruptedError:  # pragma: no cover - PEP 475 retries select itself
            readable = []
        if self.wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(self.wake_r, 512):
                    pass
        if 0 in readable:
            try:
                chunk = os.read(0, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.lost = True
            self.inbuf += chunk
            self.parse_commands()
        self.reap()

    def parse_commands(self) -> None:
        """Act on complete command lines; the spec line before them is read by read_spec()."""
        while self.spec_read and b"\n" in self.inbuf:
            line, _, self.inbuf = self.inbuf.partition(b"\n")
            if line.strip() == b"cancel":
                self.cancel = True

    def reap(self) -> None:
        """Collect every exited child (the job and adopted orphans), noting the job's status."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.main_pid:
                self.main_status = status

    def read_spec(self) -> dict[str, Any] | None:
        """Read the job spec (the first stdin line); ``None`` if the engine went away first."""
        while b"\n" not in self.inbuf:
            if self.lost:
                return None
            self.wait(3600.0)
        line, _, self.inbuf = self.inbuf.partition(b"\n")
        spec: dict[str, Any] = json.loads(line)
        self.spec_read = True
        self.parse_commands()  # a cancel that arrived together with the spec
        self.wait(0)
        return spec

    # ------------------------------------------------------------------ processes

    def children(self) -> set[int]:
        """Return the pids of our live children (the job and any adopted orphans)."""
        try:
            with open(f"/proc/{self.own_pid}/task/{self.own_pid}/children") as fh:
                return {int(p) for p in fh.read().split()}
        except OSError:
            pass
        found = set()  # kernels without CONFIG_PROC_CHILDREN: scan /proc
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    stat = fh.read()
            except OSError:
                continue
            # Field 4 (ppid) follows the ")" that closes the command name.
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 1 and int(fields[1]) == self.own_pid:
                found.add(int(entry))
        return found

    def signal_all(self, sig: int) -> bool:
        """Send ``sig`` to the job's group and to every adopted orphan (and its group).

        Returns whether anything was still there to signal. A group or process
        that is already gone is not an error.
        """
        alive = False
        targets: list[tuple[bool, int]] = []
        if self.main_pid is not None:
            targets.append((True, self.main_pid))
        for child in self.children():
            with contextlib.suppress(OSError):
                pgid = os.getpgid(child)
                if pgid not in (self.own_pgid, self.main_pid, 0, 1):
                    targets.append((True, pgid))
            targets.append((False, child))
        for is_group, target in targets:
            try:
                (os.killpg if is_group else os.kill)(target, sig)
                alive = True
            except ProcessLookupError:
                pass
            except PermissionError:
                alive = True  # exists but is not ours to signal (setuid); wait, do not loop forever
        return alive

    def end_everything(self, grace: float) -> tuple[bool, bool]:
        """SIGTERM everything, wait up to ``grace``, then SIGKILL what is left.

        Returns ``(anything_was_running, something_survived_sigkill)``.
        """
        self.reap()
        if not self.signal_all(signal.SIGTERM):
            return False, False
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.wait(min(POLL, deadline - time.monotonic()))
            # Re-sending TERM also reaches orphans adopted since the last round.
            if not self.signal_all(signal.SIGTERM):
                return True, False
        deadline = time.monotonic() + KILL_WAIT
        while self.signal_all(signal.SIGKILL):
            if time.monotonic() >= deadline:
                return True, True
            self.wait(POLL)
        return True, False

    # ------------------------------------------------------------------ main

    def start(self, spec: dict[str, Any]) -> bool:
        """Start the job; report ``started`` or ``start_failed``."""
        argv: list[str] = spec["argv"]
        cwd: str | None = spec.get("cwd")
        own_pid = self.own_pid

        def in_child() -> None:
            # Runs in the forked job before exec: die with the supervisor, and
            # close the race where the supervisor died before the prctl.
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != own_pid:
                os._exit(137)

        try:
            proc = subprocess.Popen(
                argv,
                env=spec["env"],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                close_fds=True,
                start_new_session=True,
                preexec_fn=in_child,
            )
        except OSError as exc:
            if cwd is not None and exc.filename == cwd:
                error = f"cannot use working directory {cwd}: {exc.strerror}"
            else:
                error = f"{exc.strerror or exc}: {exc.filename or argv[0]}"
            self.report(event="start_failed", error=error[:2000])
            return False
        except (subprocess.SubprocessError, ValueError) as exc:
            self.report(event="start_failed", error=str(exc)[:2000])
            return False
        # We reap with waitpid(-1) ourselves; mark the Popen object finished so it
        # never tries to wait for the pid again (it could be reused by then).
        proc.returncode = 0
        self.main_pid = proc.pid
        self.report(event="started", pid=proc.pid)
        return True

    def run(self) -> int:
        """Run the whole protocol; the return value is the supervisor's exit code."""
        spec = self.read_spec()
        if spec is None:
            return 0  # the engine is gone before the job started: nothing to do
        if self.cancel or self.lost:
            self.report(
                event="exit",
                reason="cancelled" if self.cancel else "lost",
                code=None,
                signal=None,
                leftovers=False,
                stuck=False,
            )
            return 0
        if not self.start(spec):
            return 0
        deadline = time.monotonic() + float(spec["timeout"])
        reason = "exited"
        while self.main_status is None:
            now = time.monotonic()
            if now >= deadline:
                reason = "timeout"
            elif self.cancel:
                reason = "cancelled"
            elif self.lost:
                reason = "lost"
            else:
                self.wait(deadline - now)
                continue
            break
        had_any, stuck = self.end_everything(float(spec["grace"]))
        code = sig = None
        if self.main_status is not None:
            if os.WIFEXITED(self.main_status):
                code = os.WEXITSTATUS(self.main_status)
            elif os.WIFSIGNALED(self.main_status):
                sig = os.WTERMSIG(self.main_status)
        self.report(
            event="exit", reason=reason, code=code, signal=sig, leftovers=reason == "exited" and had_any, stuck=stuck
        )
        return 0


def main(argv: list[str]) -> int:
    """Entry point: ``supervisor.py <engine_pid> <status_fd> [job_id]``."""
    engine_pid, status_fd = int(argv[1]), int(argv[2])
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != engine_pid:
        return 0  # the engine died before we armed PDEATHSIG: start nothing
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    os.set_inheritable(status_fd, False)
    return Supervisor(engine_pid, status_fd).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
