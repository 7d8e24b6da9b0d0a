"""What a hostile client sends, as hypothesis strategies shared by the property tests and the
API fuzzing. Each class once answered 500 or slipped past a check:

- depth: JSON nested far deeper than any body of the API;
- surrogates: lone UTF-16 surrogates, which JSON carries as `\\ud800` escapes but no database
  can store;
- huge numbers: integers beyond 64 bits, thousands of digits long, and floats that overflow;
- mixed-script and bidi text: scripts side by side, combining marks, and the controls that
  reorder what a reader sees.

A value of one of these classes does not always survive `json.dumps` (too deep, too many
digits), so bodies are written with `json_text`, where a `RawJson` is put in as it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

CLASSES = ("depth", "surrogates", "huge_numbers", "mixed_script_and_bidi")


@dataclass(frozen=True)
class RawJson:
    """JSON text written into a document as it is."""

    text: str


def json_text(value: Any) -> str:
    """`value` as JSON text (non-ASCII escaped, as most clients send it), RawJson as given."""
    if isinstance(value, RawJson):
        return value.text
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k))}:{json_text(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    return json.dumps(value)


# --- depth -------------------------------------------------------------------------------

OPENERS = {"[": "]", '{"a":': "}"}


@st.composite
def deep_json(draw: st.DrawFn, min_depth: int = 100, max_depth: int = 5000) -> RawJson:
    """Arrays and objects nested `min_depth` to `max_depth` levels, a value at the bottom."""
    depth = draw(st.integers(min_depth, max_depth))
    openers = draw(st.lists(st.sampled_from(list(OPENERS)), min_size=1, max_size=3))
    chain = [openers[i % len(openers)] for i in range(depth)]
    bottom = draw(st.sampled_from(["1", '"x"', "[]", "{}", "null"]))
    return RawJson("".join(chain) + bottom + "".join(OPENERS[o] for o in reversed(chain)))


# --- surrogates --------------------------------------------------------------------------

lone_surrogates = st.characters(categories=["Cs"])


@st.composite
def text_with_a_lone_surrogate(draw: st.DrawFn) -> str:
    """Ordinary text with a lone surrogate somewhere in it."""
    around = draw(st.text(max_size=10))
    at = draw(st.integers(0, len(around)))
    return around[:at] + draw(lone_surrogates) + around[at:]


# --- huge numbers ------------------------------------------------------------------------

huge_integers = st.one_of(
    st.integers(min_value=2**63),
    st.integers(max_value=-(2**63) - 1),
    st.integers(20, 6000).map(lambda digits: RawJson("9" * digits)),
    st.integers(20, 6000).map(lambda digits: RawJson("-1" + "0" * digits)),
)
huge_floats = st.sampled_from(
    [RawJson("1e999"), RawJson("-1e999"), RawJson("NaN"), RawJson("Infinity"), 1e308]
)
huge_numbers = st.one_of(huge_integers, huge_floats)
# The same in a query string or a path: digits only.
huge_number_texts = st.integers(20, 6000).map(lambda digits: "9" * digits)


# --- mixed-script and bidi text ----------------------------------------------------------

BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
SCRIPT_SAMPLES = [
    "Python",
    "파이썬",
    "Ко́ршун",  # Cyrillic, a combining acute
    "Ελληνικά",
    "العربية",
    "עברית",
    "日本語",
    "ǅemal",
    "e\u0301",  # e and a combining acute
    "\u1100\u1161\u11a8",  # Hangul jamo that compose into 각
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "🎓👩🏽‍🏫",
    "\u200b",  # zero width space
    "ﷺ",
    "İı",
    "ß",
]
mixed_script_and_bidi_text = st.lists(
    st.one_of(st.sampled_from(SCRIPT_SAMPLES), st.sampled_from(BIDI_CONTROLS)),
    min_size=1,
    max_size=8,
).map("".join)


# --- the classes, by what they replace ---------------------------------------------------

# A value in place of a body field (or the whole body).
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "depth": deep_json(),
    "surrogates": text_with_a_lone_surrogate(),
    "huge_numbers": huge_numbers,
    "mixed_script_and_bidi": mixed_script_and_bidi_text,
}
# A value in place of a query parameter. Percent-encoded as UTF-8, a lone surrogate becomes
# three bytes that do not decode; a client cannot send one any other way.
QUERY_TEXTS: dict[str, st.SearchStrategy[str]] = {
    "depth": st.integers(100, 3000).map(lambda depth: "[" * depth),
    "surrogates": text_with_a_lone_surrogate(),
    "huge_numbers": huge_number_texts,
    "mixed_script_and_bidi": mixed_script_and_bidi_text,
}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)


def hostile_json(hostile_class: str) -> st.SearchStrategy[Any]:
    """JSON values (scalars, lists, objects) with values of the class among them."""
    leaves = json_scalars | VALUES[hostile_class]
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=6,
    )


def walk(value: Any) -> Iterator[tuple[Any, int]]:
    """Every value in a loaded JSON value, keys included, with the number of arrays and
    objects around it; iteratively, as it may be deep."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        yield item, depth
        if isinstance(item, dict):
            stack.extend((key, depth + 1) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def all_strings(value: Any) -> list[str]:
    return [item for item, _ in walk(value) if isinstance(item, str)]


def storable(text: str) -> bool:
    """Whether PostgreSQL (and SQLite) can store the text: valid UTF-8, no NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text
