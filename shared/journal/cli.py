"""The ``<prog> audit verify|export|head`` commands shared by both processes' CLIs.

A process's CLI wires them in with :func:`add_audit_commands` and, when the
``audit`` command was chosen, calls :func:`run_audit`; :func:`main` does both
for a CLI that has nothing else to parse. Each works on the journal files
under ``--data-dir`` or, with ``--store URL``, on one chain (``--chain``) of
a PostgreSQL store, with the same output either way. Errors are one line on
stderr (never a password) with a non-zero exit: 1 for a journal that fails
verification or cannot be read, 2 for bad usage (argparse's convention) and
a malformed store URL.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO, TypeVar

from shared.contract import parse_time
from shared.journal.chain import JournalCorrupt
from shared.journal.tools import ExportLines, HeadInfo, VerifyResult, export, head, verify

JOURNAL_SUBDIR = "journal"
#: The chain ``--store`` reads unless ``--chain`` names another: the engine's.
DEFAULT_CHAIN = "engine"

_T = TypeVar("_T")


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
    default_chain: str = DEFAULT_CHAIN,
) -> None:
    """Add ``audit`` with its ``verify``, ``export`` and ``head`` subcommands to a CLI.

    The journal is ``<--data-dir>/<journal_subdir>`` (the engine's ``journal``,
    the gateway's ``audit``), or with ``--store URL`` the chain ``--chain``
    (default ``default_chain``) of that PostgreSQL database; ``--store`` and
    ``--data-dir`` exclude each other. :func:`run_audit` finds the
    subdirectory in the parsed arguments.
    """
    audit = subparsers.add_parser("audit", help="verify, export or show the head of the journal")
    audit.set_defaults(journal_subdir=journal_subdir)
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="{verify,export,head}")

    def with_data_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        where = p.add_mutually_exclusive_group()
        where.add_argument(
            "--data-dir",
            type=Path,
            default=default_data_dir,
            help=f"data directory holding {journal_subdir}/ (default: {default_data_dir})",
        )
        where.add_argument(
            "--store", metavar="URL", help="read the chain kept in this PostgreSQL database (postgresql://…) instead"
        )
        p.add_argument(
            "--chain",
            default=default_chain,
            metavar="NAME",
            help=f"with --store: which chain (default {default_chain})",
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
    if getattr(args, "store", None):
        return _run_store(args, prog=prog, out=out, err=err)
    directory = args.data_dir / getattr(args, "journal_subdir", JOURNAL_SUBDIR)
    if not directory.is_dir():
        print(f"{prog}: error: no journal in {directory} (check --data-dir)", file=err)
        return 1
    try:
        if args.audit_command == "verify":
            return _print_verify(args, verify(directory, expected_head=args.expected_head), out)
        if args.audit_command == "head":
            return _print_head(args, head(directory, prog=prog), out)
        return _to_output(
            args,
            out,
            lambda f: f.writelines(export(directory, since=args.since, until=args.until, fmt=args.format, prog=prog)),
        )
    except JournalCorrupt as exc:
        print(f"{prog}: error: {exc}", file=err)
        return 1
    except OSError as exc:
        print(f"{prog}: error: {exc.filename or directory}: {exc.strerror or exc}", file=err)
        return 1


def _run_store(args: argparse.Namespace, *, prog: str, out: TextIO, err: TextIO) -> int:
    """The audit subcommand on ``args.chain`` of the PostgreSQL store ``args.store``."""
    # Imported here: the file commands start without the database driver.
    from shared.journal.chain import JournalUnavailable
    from shared.journal.postgres import chain_head, stream_chain, verify_chain
    from shared.pg import StoreUrlError

    url, chain = args.store, args.chain

    async def export_to(f: TextIO) -> None:
        lines = _export_lines(args)
        f.writelines(lines.header())
        async for rec in stream_chain(url, chain, prog=prog):
            f.writelines(lines.of(rec))

    try:
        if args.audit_command == "verify":
            result = asyncio.run(verify_chain(url, chain, expected_head=args.expected_head))
            return _print_verify(args, result, out, imported=True)
        if args.audit_command == "head":
            return _print_head(args, asyncio.run(chain_head(url, chain, prog=prog)), out)
        return _to_output(args, out, lambda f: asyncio.run(export_to(f)))
    except StoreUrlError as exc:
        print(f"{prog}: error: {exc}", file=err)
        return 2
    except (JournalCorrupt, JournalUnavailable) as exc:
        print(f"{prog}: error: {exc}", file=err)
        return 1
    except OSError as exc:
        print(f"{prog}: error: {exc.filename or args.output}: {exc.strerror or exc}", file=err)
        return 1


def _print_verify(args: argparse.Namespace, result: VerifyResult, out: TextIO, *, imported: bool = False) -> int:
    if args.json:
        print(json.dumps(result.to_json()), file=out)
    elif result.ok:
        note = " (an incomplete last line is ignored: a write in progress or a crash)" if result.torn_tail else ""
        if imported and result.first_seq > 1:
            # Only an import sets a later start (audit_head.first_seq, which verify checked the chain against).
            note = f" (starts at seq {result.first_seq}, chained from its prev: imported from a pruned journal)"
        print(
            f"ok: {result.count} records intact, seq {result.first_seq}..{result.last_seq}, head {result.head}{note}",
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


def _print_head(args: argparse.Namespace, info: HeadInfo, out: TextIO) -> int:
    if args.json:
        print(json.dumps({"seq": info.seq, "hash": info.hash, "at": info.at}), file=out)
    else:
        print(f"{info.hash} seq {info.seq} at {info.at or '-'}", file=out)
    return 0


def _export_lines(args: argparse.Namespace) -> ExportLines:
    return ExportLines(since=args.since, until=args.until, fmt=args.format)


def _to_output(args: argparse.Namespace, out: TextIO, write: Callable[[TextIO], _T]) -> int:
    """Run ``write`` on ``--output`` (created) or on ``out``; return 0."""
    if args.output is None:
        write(out)
        return 0
    with open(args.output, "w", encoding="utf-8", newline="") as f:
        write(f)
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
