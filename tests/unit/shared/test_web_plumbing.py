"""Parsing helpers of shared.web: the JSON nesting check and the one number parser."""

from __future__ import annotations

import json
import sys
import time

import pytest

from shared.contract import MAX_JSON_DEPTH
from shared.web import MAX_BODY, json_nesting_exceeds, parse_decimal


class TestJsonNesting:
    @pytest.mark.parametrize(
        ("text", "depth"),
        [
            ("{}", 1),
            ("[]", 1),
            ('{"a": [1, {"b": []}]}', 4),
            ('["[[[[", "{{{{"]', 1),
            ('["\\"[[["]', 1),
            ('{"a": "\\\\"}', 1),
            ("1", 0),
            ('"[[["', 0),
        ],
    )
    def test_depth_is_counted_outside_strings(self, text: str, depth: int) -> None:
        """Brackets in strings (escaped quotes included) do not count; the limit is inclusive."""
        json.loads(text)  # each case is valid JSON
        assert json_nesting_exceeds(text, depth) is False
        if depth:
            assert json_nesting_exceeds(text, depth - 1) is True

    def test_deepest_body_is_refused_without_recursion(self) -> None:
        """A body of nothing but brackets, past the interpreter's recursion limit, is answered at once."""
        text = "[" * MAX_BODY
        assert sys.getrecursionlimit() < MAX_BODY
        started = time.perf_counter()
        assert json_nesting_exceeds(text) is True
        wide = "[" + "[]," * (MAX_BODY // 3 - 1) + "[]]"
        assert json_nesting_exceeds(wide) is False
        assert time.perf_counter() - started < 5  # generous: a bound, not a benchmark

    def test_unterminated_string_of_escaped_quotes_is_linear(self) -> None:
        """A full-size body of escaped quotes in an unterminated string is answered at once (it was quadratic)."""
        text = '"' + '\\"' * ((MAX_BODY - MAX_JSON_DEPTH - 2) // 2) + "[" * (MAX_JSON_DEPTH + 1)
        assert len(text) <= MAX_BODY
        started = time.perf_counter()
        json_nesting_exceeds(text)
        assert time.perf_counter() - started < 2  # generous: a bound, not a benchmark (it took ~11 s)

    def test_unterminated_string_is_not_a_crash(self) -> None:
        """Text that is not JSON gets an answer (the decoder refuses it afterwards)."""
        assert json_nesting_exceeds('["' + "[" * 100) in (True, False)
        assert json_nesting_exceeds("]" * 100 + "[" * (MAX_JSON_DEPTH + 1)) in (True, False)


class TestParseDecimal:
    @pytest.mark.parametrize(("text", "value"), [("0", 0), ("5", 5), ("007", 7), ("9" * 20, int("9" * 20))])
    def test_ascii_digits_are_numbers(self, text: str, value: int) -> None:
        """One to twenty ASCII digits are the number they spell."""
        assert parse_decimal(text) == value

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "\u0665",
            "\uff15",
            "1_0",
            "+5",
            "-5",
            " 5",
            "5 ",
            "5\n",
            "5.0",
            "0x5",
            "1e3",
            "9" * 21,
            "\u00b2",
            "\u2155",
        ],
    )
    def test_anything_else_is_not(self, text: str) -> None:
        """Other scripts' digits, separators, signs, blanks, and over-long input are not numbers."""
        assert parse_decimal(text) is None
