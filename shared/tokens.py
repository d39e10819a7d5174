"""Reading a bearer-token file: the one reader the engine, its CLI and the gateway use.

A token file holds one token, as written by the engine (``<data_dir>/token``)
or provided by an operator (``--token-file``, ``--engine-token-file``, a
systemd credential). The rules, the strictest any reader ever applied:

- the text is ASCII; surrounding whitespace (the trailing newline) is ignored;
- it is not empty;
- the token is printable ASCII without spaces, because it travels in an
  ``Authorization`` header (a second line or a stray space is refused here,
  at start-up, instead of failing every request later);
- a file that group or others may read is reported to the caller
  (``too_open``), which decides whether and how to warn.

What a token must be beyond that (the engine's admin token has a length rule)
stays with the process that owns the token.

Standard library only: the engine CLI imports this and must start fast.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = ["HEADER_SAFE_RULE", "TokenFileError", "is_header_safe", "read_token_file"]

#: Why a token must be printable ASCII without spaces; ends the message of a refused token.
HEADER_SAFE_RULE: Final = "must be printable ASCII without spaces (it travels in an HTTP header)"


def is_header_safe(token: str) -> bool:
    """Whether ``token`` can travel in an HTTP header as is: printable ASCII without spaces."""
    return token.isascii() and token.isprintable() and not any(c.isspace() for c in token)


class TokenFileError(Exception):
    """A token file that exists but cannot be used; ``str()`` is one line naming the file."""


def read_token_file(
    path: Path, *, label: str = "the token file", too_open: Callable[[int], None] | None = None
) -> str | None:
    """Return the token held in ``path``, or ``None`` when there is no such file.

    ``label`` names the file in messages (``"{label} {path} is empty"``).
    ``too_open`` is called with the file's permission bits when group or
    others have any access to it. Raises :class:`TokenFileError` when the
    file cannot be read, is not ASCII, is empty or holds anything but one
    header-safe token. A missing file is not an error here: the engine then
    generates one and the other callers each say how to provide it.
    """
    try:
        info = path.stat()
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise TokenFileError(f"cannot read {label} {path}: not ASCII text") from None
    except OSError as exc:
        raise TokenFileError(f"cannot read {label} {path}: {exc.strerror or exc}") from None
    mode = stat.S_IMODE(info.st_mode)
    if too_open is not None and mode & (stat.S_IRWXG | stat.S_IRWXO):
        too_open(mode)
    token = text.strip()
    if not token:
        raise TokenFileError(f"{label} {path} is empty")
    if not is_header_safe(token):
        raise TokenFileError(f"the token in {path} {HEADER_SAFE_RULE}")
    return token
