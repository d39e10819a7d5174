"""The built-in demo job types (``demo.sleep``, ``demo.echo``, ``demo.fail``, ``demo.guarded``) and the demo catalog.

They are offered when the engine starts without a catalog file, or with
``include_demo = true`` in one. Each runs :mod:`engine_hub.jobs.demo` as a real
subprocess of this interpreter. ``demo.sleep`` and ``demo.echo`` have a plan
(a dry run saying what the run would do); ``demo.fail`` has none, so the
panel and the API show both cases.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

from engine_hub.jobs.catalog import Catalog, JobType, ParamSpec

__all__ = ["DEMO_SLEEP_MAX", "builtin_catalog", "demo_types"]

#: The longest ``demo.sleep`` may sleep, in seconds.
DEMO_SLEEP_MAX: Final = 3600


def demo_types() -> tuple[JobType, ...]:
    """Return the built-in demo types, run by this interpreter as real subprocesses.

    The command runs ``demo.py`` by its file path (not ``-m engine_hub.jobs.demo``) so
    the demos work however the engine was installed (wheel, editable, or a
    plain checkout on ``PYTHONPATH``, which jobs do not inherit). ``-I`` keeps
    the script's directory (``engine_hub/jobs/``) off ``sys.path``, so no engine
    module can ever shadow a standard-library one.
    """
    demo = str(Path(__file__).with_name("demo.py"))
    python = sys.executable
    return (
        JobType(
            name="demo.sleep",
            description="Sleep for a number of seconds, printing a line every second.",
            command=(python, "-I", demo, "sleep"),
            timeout=DEMO_SLEEP_MAX + 60.0,
            plan=(python, "-I", demo, "plan-sleep"),
            params=(
                ParamSpec(
                    name="seconds",
                    type="int",
                    default=3,
                    min=0,
                    max=DEMO_SLEEP_MAX,
                    description="How long to sleep, in seconds.",
                ),
            ),
        ),
        JobType(
            name="demo.echo",
            description="Print a message.",
            command=(python, "-I", demo, "echo"),
            timeout=30.0,
            plan=(python, "-I", demo, "plan-echo"),
            params=(ParamSpec(name="message", type="str", default="hello", description="The message to print."),),
        ),
        JobType(
            name="demo.fail",
            description="Print an error on stderr and exit non-zero.",
            command=(python, "-I", demo, "fail"),
            timeout=30.0,
            params=(
                ParamSpec(
                    name="code", type="int", default=1, min=1, max=125, description="The exit code to fail with."
                ),
            ),
        ),
        JobType(
            name="demo.guarded",
            description="Print a message, once a second person has approved the run (two-person rule).",
            command=(python, "-I", demo, "guarded"),
            timeout=30.0,
            plan=(python, "-I", demo, "plan-echo"),
            params=(ParamSpec(name="message", type="str", default="approved", description="The message to print."),),
            approval="required",
        ),
    )


def builtin_catalog() -> Catalog:
    """Return the catalog used when no file is given: the demo types, no client tokens."""
    return Catalog(types={t.name: t for t in demo_types()})
