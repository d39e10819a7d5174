"""Making untrusted text safe to show: the one escaping rule both processes use.

Text that comes from a job's output, a user or a header may carry terminal
control sequences (``ESC [2J``, OSC window titles, C1 controls such as
``U+009B`` CSI), line breaks that forge a new log line, or bidi overrides and
isolates (``U+202A``..``U+202E``, ``U+2066``..``U+2069``) that make text read
differently from what it holds. :func:`escape_unprintable` turns every such
character into a visible escape, so it can neither act on a terminal nor hide.
"""

from __future__ import annotations


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    # A surrogate pair, as JSON writes it: unambiguous, and still valid inside a JSON string.
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def escape_unprintable(text: str, *, keep: str = "") -> str:
    """Return ``text`` with every unprintable character, except those in ``keep``, as a ``\\uXXXX`` escape.

    Unprintable is Python's ``str.isprintable``: C0 and C1 controls (ESC,
    and so every ANSI/OSC sequence, loses its introducer), DEL, format
    characters (bidi overrides and isolates, zero-width characters), line and
    paragraph separators, unassigned code points and lone surrogates.
    Characters beyond the BMP are written as a surrogate pair. ``keep``
    names characters left as they are (e.g. ``"\\n\\t"`` for multi-line
    output). Text with nothing to escape is returned as is, without a copy.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else _escape(c) for c in text)
