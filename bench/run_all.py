"""``make bench``: run every benchmark module of this package, one after the other.

A benchmark is a module ``bench/<name>.py`` with a ``main(argv)`` returning an
exit status; its figures go to stdout (and into ``docs/performance.md`` by
hand, with the command that produced them).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    """Run each benchmark with its default arguments; return non-zero if any failed."""
    failed = []
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name == "run_all" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        if not hasattr(module, "main"):
            continue
        print(f"== bench.{info.name}", flush=True)
        if module.main([]) != 0:
            failed.append(info.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
