"""What every ``engine-hub`` sub-command shares: the program name, usage errors, the parser class."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

PROG = "engine-hub"


class UsageError(Exception):
    """Bad command-line input; the message is the one line to print."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"{PROG}: error: {where}{message} (see --help)\n")


def fail(message: str, status: int) -> int:
    """Print ``engine-hub: error: <message>`` on stderr and return ``status`` (the exit status)."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status
