"""The ``<prog> audit verify|export|head`` commands shared by both processes' CLIs.

A process's CLI wires them in with :func:`add_audit_commands` and, when the
``audit`` command was chosen, calls :func:`run_audit`; :func:`main` does both
for a CLI that has nothing else to parse. Errors are one line on stderr with
a non-zero exit: 1 for a journal that fails verification or cannot be read,
2 for bad usage (argparse's convention).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from shared.contract import parse_time
from shared.journal.chain import JournalCorrupt
from shared.journal.tools import export, head, verify

JOURNAL_SUBDIR = "journal"


def _time_arg(value: str) -> dt.datetime:
    try:
        if len(value) == 10:  # a bare date means midnight UTC
            return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
        parsed = parse_time(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise argparse.ArgumentTypeError(f"not a date or a time with a timezone: {value!r}")
    return parsed


def add_audit_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    default_data_dir: Path,
    journal_subdir: str = JOURNAL_SUBDIR,
) -> None:
    """Add ``audit`` with its ``verify``, ``export`` and ``head`` subcommands to a CLI.

    The journal is ``<--data-dir>/<journal_subdir>`` (the engine's ``journal``,
    the gateway's ``audit``); :func:`run_audit` finds the subdirectory in the
    parsed arguments.
    """
    audit = subparsers.add_parser("audit", help="verify, export or show the head of the journal")
    audit.set_defaults(journal_subdir=journal_subdir)
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="{verify,export,head}")

    def with_data_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--data-dir",
            type=Path,
            default=default_data_dir,
            help=f"data directory holding {journal_subdir}/ (default: {default_data_dir})",
        )
        return p

    v = with_data_dir(sub.add_parser("verify", help="check every record and the hash chain"))
    v.add_argument(
        "--expected-head", metavar="HASH", help="a head saved earlier with `audit head`: it must still be in the chain"
    )
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    e = with_data_dir(sub.add_parser("export", help="write records as JSON Lines or CSV"))
    e.add_argument("--since", type=_time_arg, help="first time included (RFC 3339 or YYYY-MM-DD, UTC)")
    e.add_argument("--until", type=_time_arg, help="first time excluded")
    e.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    e.add_argument("--output", type=Path, help="write to this file instead of stdout")
    h = with_data_dir(sub.add_parser("head", help="print the newest record's hash (keep it elsewhere)"))
    h.add_argument("--json", action="store_true", help="print the result as JSON")


def run_audit(args: argparse.Namespace, *, prog: str, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the audit subcommand in ``args``; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    directory = args.data_dir / getattr(args, "journal_subdir", JOURNAL_SUBDIR)
    if not directory.is_dir():
        print(f"{prog}: error: no journal in {directory} (check --data-dir)", file=err)
        return 1
    try:
        if args.audit_command == "verify":
            return _verify(args, directory, out)
        if args.audit_command == "head":
            info = head(directory, prog=prog)
            if args.json:
                print(json.dumps({"seq": info.seq, "hash": info.hash, "at": info.at}), file=out)
            else:
                print(f"{info.hash} seq {info.seq} at {info.at or '-'}", file=out)
            return 0
        return _export(args, directory, out, prog)
    except JournalCorrupt as exc:
        print(f"{prog}: error: {exc}", file=err)
        return 1
    except OSError as exc:
        print(f"{prog}: error: {exc.filename or directory}: {exc.strerror or exc}", file=err)
        return 1


def _verify(args: argparse.Namespace, directory: Path, out: TextIO) -> int:
    result = verify(directory, expected_head=args.expected_head)
    if args.json:
        print(json.dumps(result.to_json()), file=out)
    elif result.ok:
        torn = " (an incomplete last line is ignored: a write in progress or a crash)" if result.torn_tail else ""
        print(
            f"ok: {result.count} records intact, seq {result.first_seq}..{result.last_seq}, head {result.head}{torn}",
            file=out,
        )
    else:
        bad = result.first_bad
        assert bad is not None
        seq = f" (seq {bad.seq})" if bad.seq is not None else ""
        print(
            f"FAILED: first bad record at {bad.segment} line {bad.line}{seq}: {bad.reason}; "
            f"{result.count} records before it are intact",
            file=out,
        )
    return 0 if result.ok else 1


def _export(args: argparse.Namespace, directory: Path, out: TextIO, prog: str) -> int:
    lines = export(directory, since=args.since, until=args.until, fmt=args.format, prog=prog)
    if args.output is None:
        out.writelines(lines)
        return 0
    with open(args.output, "w", encoding="utf-8", newline="") as f:
        f.writelines(lines)
    return 0


def main(
    argv: Sequence[str] | None = None, *, prog: str, default_data_dir: Path, journal_subdir: str = JOURNAL_SUBDIR
) -> int:
    """Parse ``argv`` as ``audit …`` and run it (for CLIs with no other commands)."""
    parser = argparse.ArgumentParser(prog=prog)
    add_audit_commands(
        parser.add_subparsers(dest="command", required=True),
        default_data_dir=default_data_dir,
        journal_subdir=journal_subdir,
    )
    return run_audit(parser.parse_args(argv), prog=prog)
