"""Property tests of the input validators: whatever comes in, a clean value or a clear error."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from app.orders.api import CourseSchema, PlaceOrderSchema
from app.shared.phone import normalize_mobile

NATIONAL = re.compile(r"^01[016789]-\d{3,4}-\d{4}$")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


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
        order = PlaceOrderSchema().load(body)
    except ValidationError as exc:
        assert exc.messages
        return
    assert order["begin_date"] <= order["end_date"]
    assert NATIONAL.match(order["phone"])
    assert 1 <= len(order["course_no"]) <= 32


@settings(max_examples=300)
@given(
    st.fixed_dictionaries(
        {"course_no": st.text(max_size=40), "title": st.text(max_size=220), "price": json_values}
    )
)
def test_a_course_body_loads_clean_or_raises_a_validation_error(body):
    try:
        course = CourseSchema().load(body)
    except ValidationError:
        return
    assert isinstance(course["price"], int) and not isinstance(course["price"], bool)
    assert 0 <= course["price"] <= 100_000_000
    assert 1 <= len(course["title"]) <= 200
