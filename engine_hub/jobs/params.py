"""Job param declarations and the checks that apply to param values.

A :class:`ParamSpec` declares one param of a job type (see
:mod:`engine_hub.jobs.catalog`). Values are checked strictly against their JSON
type, because they reach the job as environment variables
(``JOB_PARAM_<NAME>``): they stay small and free of NUL bytes.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

import attrs


class CatalogError(Exception):
    """A catalog file that cannot be used, or params a job type does not accept.

    The message is meant for a human: it says what is wrong and what is allowed.
    """


ParamType = Literal["str", "int", "bool"]
ParamValue = str | int | bool

PARAM_TYPES: Final[tuple[ParamType, ...]] = ("str", "int", "bool")
#: Longest accepted str param (in characters); it becomes an environment variable.
MAX_STR_PARAM: Final = 4096

_PARAM_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,19}")


def type_label(value: object) -> str:
    """Name a JSON value's type the way an API user thinks of it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, int):
        return "an int"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _fmt(value: ParamValue) -> str:
    """Render a param value as it would be written in JSON (for messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _check_str_value(value: str) -> str | None:
    """Return why ``value`` cannot be a str param, or ``None`` if it can."""
    if len(value) > MAX_STR_PARAM:
        return f"at most {MAX_STR_PARAM} characters"
    if "\x00" in value:
        return "without NUL characters"
    try:
        # Lone surrogates ("\ud800") are valid JSON but cannot be encoded into an
        # environment variable; reject them here rather than fail at spawn time.
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "valid Unicode text"
    return None


@attrs.frozen(kw_only=True)
class ParamSpec:
    """The declaration of one job param.

    ``type`` is ``"str"``, ``"int"`` or ``"bool"``. A required param has no
    default; an optional param without a default is simply absent when not
    given. ``choices`` (str and int only) lists every allowed value; ``min`` and
    ``max`` (int only) bound the value inclusively. The declaration is checked
    on construction and raises :class:`CatalogError` when it contradicts
    itself (for example a default outside ``choices``).
    """

    name: str
    type: ParamType
    required: bool = False
    default: ParamValue | None = None
    choices: tuple[ParamValue, ...] | None = None
    min: int | None = None
    max: int | None = None
    description: str = ""

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not _PARAM_NAME.fullmatch(self.name):
            raise CatalogError(f"param name {self.name!r} must match [a-z][a-z0-9_]{{0,63}}")
        if self.type not in PARAM_TYPES:
            raise CatalogError(f"param {self.name!r}: type must be one of str, int, bool, not {self.type!r}")
        if self.required and self.default is not None:
            raise CatalogError(f"param {self.name!r}: a required param cannot have a default")
        if self.type != "int" and (self.min is not None or self.max is not None):
            raise CatalogError(f"param {self.name!r}: min and max apply to int params only")
        for bound in (self.min, self.max):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int)):
                raise CatalogError(f"param {self.name!r}: min and max must be ints")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise CatalogError(f"param {self.name!r}: min ({self.min}) is greater than max ({self.max})")
        if self.choices is not None:
            if self.type == "bool":
                raise CatalogError(f"param {self.name!r}: a bool param cannot have choices")
            if not self.choices:
                raise CatalogError(f"param {self.name!r}: choices must not be empty")
            for choice in self.choices:
                if not self._fits(choice):
                    raise CatalogError(f"param {self.name!r}: choice {choice!r} is not {self._plain_allowed()}")
            if len(set(self.choices)) != len(self.choices):
                raise CatalogError(f"param {self.name!r}: choices must not repeat")
        if self.default is not None and not self._fits(self.default, with_choices=True):
            raise CatalogError(f"param {self.name!r}: default {self.default!r} is not {self.allowed()}")

    def _plain_allowed(self) -> str:
        """Describe the values of this param's type and range, ignoring ``choices``."""
        if self.type == "bool":
            return "a bool (true or false)"
        if self.type == "str":
            return f"a string of at most {MAX_STR_PARAM} characters"
        if self.min is not None and self.max is not None:
            return f"an int between {self.min} and {self.max}"
        if self.min is not None:
            return f"an int of at least {self.min}"
        if self.max is not None:
            return f"an int of at most {self.max}"
        return "an int"

    def allowed(self) -> str:
        """Describe in words which values this param accepts (used in error messages)."""
        if self.choices is not None:
            return "one of " + ", ".join(_fmt(c) for c in self.choices)
        return self._plain_allowed()

    def _has_type(self, value: object) -> bool:
        """Tell whether ``value`` has this param's JSON type (``true`` is never an int)."""
        if self.type == "bool":
            return isinstance(value, bool)
        if self.type == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, str)

    def _fits(self, value: object, *, with_choices: bool = False) -> bool:
        """Tell whether ``value`` has the right type, range and size (and is a choice)."""
        if not self._has_type(value):
            return False
        if isinstance(value, str) and _check_str_value(value) is not None:
            return False
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and ((self.min is not None and value < self.min) or (self.max is not None and value > self.max))
        ):
            return False
        return not (with_choices and self.choices is not None and value not in self.choices)

    def check(self, value: object) -> ParamValue:
        """Return ``value`` if it is acceptable for this param, else raise :class:`CatalogError`.

        The message says what is allowed and what was given, e.g. ``param
        'seconds' must be an int between 0 and 3600; got a string``.
        """
        if self._fits(value, with_choices=True):
            assert isinstance(value, str | int)
            return value
        if not self._has_type(value):
            got = type_label(value)
        elif isinstance(value, str) and (reason := _check_str_value(value)) is not None:
            got = f"a string that is not {reason}"
        else:
            assert isinstance(value, str | int)
            got = _fmt(value)
        raise CatalogError(f"param {self.name!r} must be {self.allowed()}; got {got}")

    def parse_text(self, text: str) -> ParamValue:
        """Convert command-line text (``k=v``) to a value of this param's type, then check it.

        ``int`` takes decimal digits with an optional sign; ``bool`` takes
        ``true``/``false`` (also ``1``/``0``, ``yes``/``no``, any case); ``str``
        takes the text as is. The HTTP API itself is strict and never converts.
        """
        return self.check(parse_param_text(self.type, text, name=self.name))

    def to_json(self) -> dict[str, Any]:
        """Return the declaration as served by ``GET /api/types``."""
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "default": self.default,
            "choices": list(self.choices) if self.choices is not None else None,
            "description": self.description,
        }
        if self.type == "int":
            out["min"] = self.min
            out["max"] = self.max
        if self.type == "str":
            out["maxLength"] = MAX_STR_PARAM
        return out


def parse_param_text(param_type: str, text: str, *, name: str = "value") -> ParamValue:
    """Convert command-line text to a ``str``/``int``/``bool`` param value.

    For clients such as the CLI that only know a param's declared ``type`` (from
    ``GET /api/types``). Raises :class:`CatalogError` when the text does not
    spell a value of that type. Range and choices are not checked here.
    """
    if param_type == "int":
        stripped = text.strip()
        if not _INT_TEXT.fullmatch(stripped):
            raise CatalogError(f"param {name!r} must be an int; got {text!r}")
        return int(stripped)
    if param_type == "bool":
        lowered = text.strip().lower()
        if lowered in {"true", "1", "yes"}:
            return True
        if lowered in {"false", "0", "no"}:
            return False
        raise CatalogError(f"param {name!r} must be a bool (true or false); got {text!r}")
    if param_type == "str":
        return text
    raise CatalogError(f"param {name!r} has unknown type {param_type!r}")
