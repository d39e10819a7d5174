"""The built-in demo jobs: small real programs the engine runs as subprocesses.

Run as ``python demo.py <sleep|echo|fail|guarded|plan-sleep|plan-echo>`` (the engine's demo catalog does
this by file path) or ``python -m engine_hub.jobs.demo <name>``. Params arrive the
way every job gets them: as ``JOB_PARAM_<NAME>`` environment variables, with
``JOB_ID`` naming the job. Output is flushed line by line so the job log shows
progress as it happens. This module uses the standard library only.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence


def _int_param(name: str, default: int) -> int:
    """Read an int param from the environment; a bad value is a usage error (exit 2)."""
    text = os.environ.get(f"JOB_PARAM_{name.upper()}", str(default))
    try:
        return int(text)
    except ValueError:
        print(f"demo: JOB_PARAM_{name.upper()} must be an int, got {text!r}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def sleep() -> int:
    """Sleep ``JOB_PARAM_SECONDS`` seconds (default 3), printing a line every second."""
    seconds = _int_param("seconds", 3)
    job_id = os.environ.get("JOB_ID", "-")
    print(f"sleeping {seconds}s (job {job_id})", flush=True)
    # Sleep until absolute deadlines so the ticks do not drift with print time.
    start = time.monotonic()
    for tick in range(1, seconds + 1):
        time.sleep(max(0.0, start + tick - time.monotonic()))
        print(f"slept {tick}/{seconds}s", flush=True)
    print("done", flush=True)
    return 0


def echo() -> int:
    """Print ``JOB_PARAM_MESSAGE`` (default ``hello``)."""
    print(os.environ.get("JOB_PARAM_MESSAGE", "hello"), flush=True)
    return 0


def fail() -> int:
    """Print an error on stderr and exit with ``JOB_PARAM_CODE`` (default 1)."""
    code = _int_param("code", 1)
    print("about to fail on purpose", flush=True)
    print(f"demo.fail: failing on purpose with exit code {code}", file=sys.stderr, flush=True)
    return code


def plan_sleep() -> int:
    """The plan of ``sleep``: say how long it would sleep, without sleeping."""
    print(f"would sleep {_int_param('seconds', 3)} s", flush=True)
    return 0


def plan_echo() -> int:
    """The plan of ``echo``: say what it would print, without printing it as the job."""
    print(f"would print: {os.environ.get('JOB_PARAM_MESSAGE', 'hello')}", flush=True)
    return 0


def guarded() -> int:
    """Print ``JOB_PARAM_MESSAGE`` (default ``approved``): the run of a type that needs a second person's approval."""
    print(f"approved run of job {os.environ.get('JOB_ID', '-')}: {os.environ.get('JOB_PARAM_MESSAGE', 'approved')}")
    return 0


PROGRAMS = {
    "sleep": sleep,
    "echo": echo,
    "fail": fail,
    "guarded": guarded,
    "plan-sleep": plan_sleep,
    "plan-echo": plan_echo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo named by the first argument and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] not in PROGRAMS:
        print(f"usage: demo.py {{{'|'.join(PROGRAMS)}}}", file=sys.stderr, flush=True)
        return 2
    return PROGRAMS[args[0]]()


if __name__ == "__main__":
    sys.exit(main())
