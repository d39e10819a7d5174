"""shared.text.escape_unprintable: the one rule that makes untrusted text safe to show."""

from __future__ import annotations

import json

import pytest

from shared.text import escape_unprintable


class TestEscapeUnprintable:
    @pytest.mark.parametrize(
        ("text", "shown"),
        [
            ("\x1b[2J", "\\u001b[2J"),
            ("\x1b]0;title\x07", "\\u001b]0;title\\u0007"),
            ("\x9b1m\x85", "\\u009b1m\\u0085"),
            ("\x7f", "\\u007f"),
            ("a\u202eb\u202a\u202d", "a\\u202eb\\u202a\\u202d"),
            ("\u2066x\u2069", "\\u2066x\\u2069"),
            ("\u2028\u200b", "\\u2028\\u200b"),
            ("\ud800", "\\ud800"),
            ("\U000e0001", "\\udb40\\udc01"),
        ],
    )
    def test_unprintable_becomes_a_visible_escape(self, text: str, shown: str) -> None:
        """Controls, ESC/OSC introducers, DEL, bidi overrides/isolates and format characters are escaped."""
        assert escape_unprintable(text) == shown

    def test_printable_text_and_kept_characters_are_unchanged(self) -> None:
        """Printable text (any script) is returned as is; ``keep`` leaves tabs and line breaks alone."""
        text = "café 東京 ✓"
        assert escape_unprintable(text) is text
        assert escape_unprintable("a\tb\nc", keep="\n\t") == "a\tb\nc"
        assert escape_unprintable("a\tb\nc") == "a\\u0009b\\u000ac"

    def test_escaped_json_decodes_to_the_same_value(self) -> None:
        """Escaping a JSON text keeps it valid JSON with the same value (astral characters as surrogate pairs)."""
        value = {"text": "\x1b[2J\x9b\u202e\U000e0001\x7f end"}
        shown = escape_unprintable(json.dumps(value, ensure_ascii=False))
        assert shown.isprintable() and json.loads(shown) == value
