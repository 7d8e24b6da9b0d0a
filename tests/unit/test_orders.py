"""Ordering a course: the rules of the orders context, with fakes."""

from datetime import date

import pytest

from app.orders import handlers
from app.orders.model import Course
from app.shared.errors import Conflict, InvalidInput, NotFound
from app.shared.events import EventType
from app.shared.states import OrderStatus
from tests.unit.fakes import FakeOrdersUnitOfWork


def a_catalog(active: bool = True) -> FakeOrdersUnitOfWork:
    uow = FakeOrdersUnitOfWork()
    uow.courses.add(
        Course(
            course_no="PY101",
            title="파이썬 입문",
            description="",
            category="it",
            price=30000,
            active=active,
        )
    )
    return uow


def place(uow, phone="010-1234-5678", key=None, **overrides):
    cmd = handlers.PlaceOrder(
        **{
            "course_no": "PY101",
            "phone": phone,
            "begin_date": date(2026, 12, 1),
            "end_date": date(2027, 1, 31),
            "idempotency_key": key,
            **overrides,
        }
    )
    return handlers.place_order(uow, cmd)


def test_given_an_active_course_when_ordered_then_the_order_is_placed_and_announced():
    uow = a_catalog()
    order, created = place(uow)
    assert created and order.status == OrderStatus.ORDERED and order.order_no.startswith("O")
    [event] = uow.events
    assert event.event_type == EventType.COURSE_ORDERED
    assert event.order_no == order.order_no
    assert event.payload["course_title"] == "파이썬 입문"
    assert event.payload["phone"] == "010-1234-5678"


def test_given_an_unknown_course_when_ordered_then_not_found_and_nothing_raised():
    uow = a_catalog()
    with pytest.raises(NotFound):
        place(uow, course_no="NOPE")
    assert uow.events == [] and uow.committed == 0


def test_given_an_inactive_course_when_ordered_then_conflict():
    uow = a_catalog(active=False)
    with pytest.raises(Conflict):
        place(uow)
    assert uow.events == []


def test_given_a_live_order_when_the_same_phone_orders_the_course_again_then_conflict():
    uow = a_catalog()
    place(uow)
    with pytest.raises(Conflict):
        place(uow)
    assert len(uow.orders.items) == 1


def test_given_dates_in_the_wrong_order_when_ordered_then_invalid():
    uow = a_catalog()
    with pytest.raises(InvalidInput):
        place(uow, begin_date=date(2027, 1, 2), end_date=date(2027, 1, 1))


def test_given_an_idempotency_key_when_the_same_request_is_repeated_then_the_first_order_returns():
    uow = a_catalog()
    first, created = place(uow, key="k-1")
    again, created_again = place(uow, key="k-1")
    assert created and not created_again
    assert again is first
    assert len(uow.events) == 1


def test_given_an_idempotency_key_when_reused_with_another_body_then_invalid():
    uow = a_catalog()
    place(uow, key="k-2")
    with pytest.raises(InvalidInput):
        place(uow, key="k-2", phone="010-2222-3333")


def test_given_another_callers_idempotency_key_when_ordering_then_it_is_a_request_of_its_own():
    uow = a_catalog()
    theirs, _ = place(uow, key="k-3", caller="student:one")
    mine, created = place(uow, key="k-3", caller="student:two", phone="010-2222-3333")
    assert created and mine is not theirs and mine.phone == "010-2222-3333"
    again, created_again = place(uow, key="k-3", caller="student:two", phone="010-2222-3333")
    assert again is mine and not created_again
    assert place(uow, key="k-3", caller="student:one")[0] is theirs


def test_a_request_fingerprinted_by_an_earlier_release_still_matches_after_an_upgrade():
    # Orders keep the fingerprint of their first request: a retry that arrives after a deploy
    # must hash to the same value (this one was stored by the release of 2026-11-25).
    request = handlers.PlaceOrder(
        "PY101", "010-1234-5678", date(2026, 12, 1), date(2027, 2, 28), idempotency_key="k1"
    )
    assert request.fingerprint() == (
        "b737cda57c387ae4ace880f264c3e37019b9b2c05fd02fdf9db6c6859ef49154"
    )
    for other in ({"idempotency_key": "k2"}, {"caller": "student:010-1234-5678"}):
        assert handlers.PlaceOrder(**{**request.__dict__, **other}).fingerprint() == (
            request.fingerprint()
        )
