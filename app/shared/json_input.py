"""What the API accepts of a request: JSON of bounded depth and numbers, and text that a
database can store. Every body, query string and path passes here, so a value that no column
can hold is refused as bad input, never found later at a commit.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# No body of the API nests more than two levels; this leaves room and stays far below the
# interpreter's recursion limit, which deeper JSON would reach in whatever walks it next.
MAX_DEPTH = 32
# Integers a BIGINT column holds. Longer ones are refused while they are still digits: Python
# refuses to turn more than 4,300 digits into an int, by raising ValueError.
MIN_INTEGER, MAX_INTEGER = -(2**63), 2**63 - 1
_MAX_INTEGER_DIGITS = len(str(MIN_INTEGER))
# PostgreSQL text holds neither NUL nor a lone UTF-16 surrogate (which JSON's `\ud800`
# escapes can make); neither encodes to the UTF-8 that both databases store.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class RefusedInput(Exception):
    """Input the API never accepts; `status` is 400 (unreadable) or 422 (unacceptable)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.message, self.status = message, status


def check_text(text: str) -> None:
    """RefusedInput if a database cannot store the text."""
    found = _UNSTORABLE.search(text)
    if found:
        what = "NUL characters are" if found.group() == "\x00" else "lone surrogates are"
        raise RefusedInput(f"{what} not accepted")


def read_json(data: bytes) -> Any:
    """The body's JSON value, or json.JSONDecodeError / UnicodeDecodeError if it is not JSON,
    or RefusedInput if it is nested deeper than MAX_DEPTH or holds a number beyond 64 bits, a
    non-finite number, or text a database cannot store."""
    try:
        value = json.loads(
            data.decode("utf-8"),
            parse_int=_integer,
            parse_float=_finite_float,
            parse_constant=_no_constant,
        )
    except RecursionError:
        # The parser itself guards its recursion; the bound below is what holds.
        raise RefusedInput(f"JSON nested more than {MAX_DEPTH} levels deep", 400) from None
    _check_value(value)
    return value


def _check_value(value: Any) -> None:
    """Walks the value with a stack of its own, not by recursion: it may be as deep as the
    parser allowed."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            check_text(item)
        elif isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise RefusedInput(f"JSON nested more than {MAX_DEPTH} levels deep", 400)
            if isinstance(item, dict):
                for key in item:
                    check_text(key)
                item = item.values()
            stack.extend((child, depth + 1) for child in item)


def _integer(digits: str) -> int:
    if len(digits) <= _MAX_INTEGER_DIGITS:
        number = int(digits)
        if MIN_INTEGER <= number <= MAX_INTEGER:
            return number
    raise RefusedInput("a number is out of range (integers must fit in 64 bits)")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise RefusedInput("a number is out of range")
    return number


def _no_constant(name: str) -> float:
    raise RefusedInput(f"{name} is not a JSON number")
