"""What the embedded store's name search (``GET /api/jobs?q=``) costs, beside a plain page.

Builds the store's real :class:`engine_hub.store.entry.Index` over ``--jobs``
entries (names "nightly report <i>", casefolded as the store keeps them) and
times, in alternating rounds on one core:

- ``page``: a plain page of 50 (``GET /api/jobs?limit=50``), a list slice;
- ``search, common``: ``q=report``, which every name contains: the walk stops
  after 51 entries;
- ``search, none``: a ``q`` no name contains: the walk reads every entry of
  the index, the worst case (as for a name only the oldest job has).

The table holds each case's fastest round (milliseconds per call) and the
worst case's rate as seconds per million entries walked. No index answers a
substring: the cost of a search is the number of entries it walks, not the
page's size (docs/api.md, ``q``).

Usage: ``python -m bench.engine_search [--jobs 1000000] [--rounds 7]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from engine_hub.store.entry import Index, JobEntry, name_key
from shared.contract import JobStatus

LIMIT = 50


def build(jobs: int) -> Index:
    """An index of ``jobs`` READY entries, oldest first, each with a small wire JSON and its name key."""
    entries = [
        JobEntry(
            seq,
            f"job-{seq}",
            "demo.echo",
            JobStatus.READY,
            b'{"id":"job-%d","name":"nightly report %d"}' % (seq, seq),
            name_key=name_key(f"nightly report {seq}"),
        )
        for seq in range(1, jobs + 1)
    ]
    return Index.of(entries)


def fastest(call: Callable[[], object], rounds: int, repeat: int) -> float:
    """The fastest of ``rounds`` rounds, as seconds per call (each round averages ``repeat`` calls)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            call()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def main(argv: list[str] | None = None) -> int:
    """Build the index, time the three cases side by side, print a Markdown table; 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    index = build(args.jobs)
    print(f"built {args.jobs:,} entries in {time.perf_counter() - started:.1f} s")
    cases: dict[str, Callable[[], object]] = {
        "page": lambda: index.page(LIMIT, None, hot_from=0),
        "search, common": lambda: index.search("report", LIMIT, None),
        "search, none": lambda: index.search(name_key("no such name"), LIMIT, None),
    }
    results = {name: float("inf") for name in cases}
    # Alternate the cases round by round so that a noisy moment hits all of them alike.
    for _ in range(args.rounds):
        for name, call in cases.items():
            repeat = 1 if name == "search, none" else 2000
            results[name] = min(results[name], fastest(call, 1, repeat))
    print(f"\n{args.jobs:,} jobs, fastest of {args.rounds} rounds\n")
    print("| case | ms per call | × page |")
    print("|---|---:|---:|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds * 1000:.3f} | {seconds / results['page']:.0f} |")
    per_million = results["search, none"] / args.jobs * 1_000_000
    print(f"\nworst case: {per_million:.2f} s per million entries walked")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
