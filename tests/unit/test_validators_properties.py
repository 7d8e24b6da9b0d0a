"""Property tests of the input validators: whatever comes in, a clean value or a clear error.
Bodies are read as the API reads them (read_json), then loaded by the view's schema."""

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from app.evaluation.api import RecordSchema
from app.orders.api import CourseSchema, PlaceOrderSchema
from app.shared.json_input import MAX_DEPTH, MAX_INTEGER, MIN_INTEGER, RefusedInput, read_json
from app.shared.phone import normalize_mobile
from tests import strategies as hostile

NATIONAL = re.compile(r"^01[016789]-\d{3,4}-\d{4}$")
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text()
    | st.one_of(*hostile.VALUES.values()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


def read(body) -> object:
    """The body as the API reads it; RefusedInput or a JSONDecodeError if it would not."""
    return read_json(hostile.json_text(body).encode())


def depth(value) -> int:
    """How many arrays and objects nest in the value."""
    containers = [
        level + 1 for item, level in hostile.walk(value) if isinstance(item, (dict, list))
    ]
    return max(containers, default=0)


def numbers(value) -> list:
    return [
        item
        for item, _ in hostile.walk(value)
        if isinstance(item, (int, float)) and not isinstance(item, bool)
    ]


@pytest.mark.parametrize("hostile_class", hostile.CLASSES)
@settings(max_examples=150)
@given(data=st.data())
def test_a_body_is_read_within_bounds_or_refused_as_bad_input(hostile_class, data):
    body = data.draw(hostile.hostile_json(hostile_class))
    try:
        value = read(body)
    except RefusedInput as exc:
        assert exc.status in (400, 422) and exc.message
        return
    assert depth(value) <= MAX_DEPTH
    assert all(hostile.storable(text) for text in hostile.all_strings(value))
    assert all(MIN_INTEGER <= n <= MAX_INTEGER for n in numbers(value) if isinstance(n, int))
    assert all(abs(n) != float("inf") and n == n for n in numbers(value))


@pytest.mark.parametrize(
    "text, status",
    [
        ("[" * 3000 + "]" * 3000, 400),
        ('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), 400),
        ('{"title": "\\ud800"}', 422),
        ('{"title\\udfff": "x"}', 422),
        ('{"comment": "nul\\u0000"}', 422),
        ('{"score": ' + "9" * 5000 + "}", 422),
        ('{"score": ' + str(2**63) + "}", 422),
        ('{"score": -' + str(2**63 + 1) + "}", 422),
        ('{"price": 1e999}', 422),
        ('{"price": NaN}', 422),
        ('{"price": -Infinity}', 422),
    ],
)
def test_what_no_database_can_hold_is_refused(text, status):
    with pytest.raises(RefusedInput) as refused:
        read_json(text.encode())
    assert refused.value.status == status


def test_a_body_at_the_depth_bound_and_the_largest_integers_are_read():
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert depth(read_json(nested.encode())) == MAX_DEPTH
    assert read_json(f"[{MIN_INTEGER}, {MAX_INTEGER}]".encode()) == [MIN_INTEGER, MAX_INTEGER]
    assert read_json('"\\ud83c\\udf93 파이썬 \\u202eevil"'.encode()) == "🎓 파이썬 \u202eevil"


def test_what_is_not_json_is_a_decode_error():
    for data in (b"{", b"\xed\xa0\x80", b"[1,]"):
        with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
            read_json(data)


@given(st.text(max_size=40))
def test_any_text_is_a_normalized_mobile_number_or_a_value_error(raw):
    try:
        number = normalize_mobile(raw)
    except ValueError:
        return
    assert NATIONAL.match(number), number
    assert normalize_mobile(number) == number  # idempotent


@given(
    st.integers(2000, 4999),
    st.integers(0, 9999),
    st.sampled_from(["010{a}{b}", "010-{a}-{b}", "+82 10 {a} {b}", "010 {a} {b}"]),
)
def test_every_spelling_of_a_mobile_number_normalizes_to_one_form(a, b, spelling):
    raw = spelling.format(a=a, b=f"{b:04d}")
    assert normalize_mobile(raw) == f"010-{a}-{b:04d}"


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(["course_no", "phone", "begin_date", "end_date", "x"]),
        json_values | st.dates().map(str),
        max_size=5,
    )
)
def test_an_order_body_loads_clean_or_raises_a_validation_error(body):
    try:
        order = PlaceOrderSchema().load(read(body))
    except RefusedInput:
        return
    except ValidationError as exc:
        assert exc.messages
        return
    assert order["begin_date"] <= order["end_date"]
    assert NATIONAL.match(order["phone"])
    assert 1 <= len(order["course_no"]) <= 32 and hostile.storable(order["course_no"])


@settings(max_examples=300)
@given(
    st.fixed_dictionaries(
        {
            "course_no": st.text(max_size=40) | hostile.text_with_a_lone_surrogate(),
            "title": st.text(max_size=220) | hostile.mixed_script_and_bidi_text,
            "price": json_values,
        }
    )
)
def test_a_course_body_loads_clean_or_raises_a_validation_error(body):
    try:
        course = CourseSchema().load(read(body))
    except (RefusedInput, ValidationError):
        return
    assert isinstance(course["price"], int) and not isinstance(course["price"], bool)
    assert 0 <= course["price"] <= 100_000_000
    assert 1 <= len(course["title"]) <= 200
    assert all(hostile.storable(text) for text in hostile.all_strings(course))


@settings(max_examples=300)
@given(st.fixed_dictionaries({"score": json_values}, optional={"comment": json_values}))
def test_an_evaluation_record_loads_clean_or_raises_a_validation_error(body):
    try:
        record = RecordSchema().load(read(body))
    except (RefusedInput, ValidationError):
        return
    assert type(record["score"]) is int and 0 <= record["score"] <= 100
    assert hostile.storable(record["comment"])
