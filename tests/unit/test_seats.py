"""Seats (SPEC 11): a capacity, the sold-out answer, the waitlist in arrival order, a freed or
added seat to the order waiting longest; with fakes."""

from datetime import date

import pytest

from app.learning.handlers import cancel_learning
from app.mypage.projection import apply, new_row
from app.notification.templates import render
from app.orders import handlers
from app.orders.model import Course
from app.shared.errors import Conflict, InvalidInput, SoldOut
from app.shared.events import Event, EventType
from app.shared.states import OrderStatus
from tests.unit.fakes import FakeLearningUnitOfWork, FakeOrdersUnitOfWork


def a_course(capacity: int | None) -> FakeOrdersUnitOfWork:
    uow = FakeOrdersUnitOfWork()
    handlers.create_course(
        uow,
        handlers.CreateCourse(course_no="LIVE1", title="라이브 코딩", price=1, capacity=capacity),
    )
    return uow


def order(uow, n: int, waitlist: bool = False, key: str | None = None):
    placed, _created = handlers.place_order(
        uow,
        handlers.PlaceOrder(
            "LIVE1",
            f"010-2000-{n:04d}",
            date(2026, 12, 1),
            date(2027, 1, 31),
            idempotency_key=key,
            waitlist=waitlist,
        ),
    )
    return placed


def course(uow) -> Course:
    return uow.courses.items["LIVE1"]


def statuses(uow) -> list[tuple[str, int | None]]:
    orders = uow.orders.with_positions(list(uow.orders.items))
    return [(o.status, o.waitlist_position) for o in orders]


def events_of(uow, order_no: str) -> list[EventType]:
    return [e.event_type for e in uow.events if e.order_no == order_no]


def test_given_two_seats_when_three_order_then_the_third_is_sold_out_and_nothing_is_written():
    uow = a_course(2)
    order(uow, 1), order(uow, 2)
    commits = uow.committed
    with pytest.raises(SoldOut) as refused:
        order(uow, 3)
    assert refused.value.reason == "SOLD_OUT" and refused.value.message == "정원이 마감되었습니다"
    assert uow.committed == commits and len(uow.orders.items) == 2
    assert (course(uow).seats_taken, course(uow).seats_left) == (2, 0)


def test_given_a_full_course_when_students_ask_for_the_waitlist_then_they_wait_in_arrival_order():
    uow = a_course(1)
    first = order(uow, 1)
    second, third = order(uow, 2, waitlist=True), order(uow, 3, waitlist=True)
    assert first.status == OrderStatus.ORDERED and first.waitlist_position is None
    assert (second.status, second.waitlist_position) == (OrderStatus.WAITLISTED, 1)
    assert (third.status, third.waitlist_position) == (OrderStatus.WAITLISTED, 2)
    # A waiting order has no seat: no CourseOrdered, nothing for learning yet.
    assert events_of(uow, second.order_no) == [EventType.ORDER_WAITLISTED]
    assert [e.payload["waitlist_ticket"] for e in uow.events if e.order_no == third.order_no] == [2]


def test_given_a_free_seat_when_a_student_asks_for_the_waitlist_then_the_seat_is_theirs():
    uow = a_course(1)
    assert order(uow, 1, waitlist=True).status == OrderStatus.ORDERED


def test_given_a_waiting_order_when_its_phone_orders_the_course_again_then_conflict():
    uow = a_course(1)
    order(uow, 1)
    order(uow, 2, waitlist=True)
    with pytest.raises(Conflict):
        order(uow, 2, waitlist=True)
    assert (course(uow).waitlisted, course(uow).last_ticket) == (1, 1)  # rolled back


def test_given_a_seat_taken_when_the_same_request_comes_again_once_sold_out_then_it_is_replayed():
    uow = a_course(1)
    first = order(uow, 1, key="k-1")
    again = order(uow, 1, key="k-1")
    assert again.order_no == first.order_no and course(uow).seats_taken == 1


def test_given_a_waiting_order_when_its_request_comes_again_then_it_is_told_where_it_stands_now():
    uow = a_course(1)
    holder = order(uow, 1)
    order(uow, 2, waitlist=True)
    waiting = order(uow, 3, waitlist=True, key="k-3")
    handlers.cancel_order(uow, holder.order_no)
    again = order(uow, 3, waitlist=True, key="k-3")
    assert (again.order_no, again.status, again.waitlist_position) == (
        waiting.order_no,
        OrderStatus.WAITLISTED,
        1,
    )


def test_given_a_closed_full_course_then_an_order_is_refused_as_closed_not_sold_out():
    uow = a_course(1)
    order(uow, 1)
    course(uow).active = False
    with pytest.raises(Conflict) as refused:
        order(uow, 2)
    assert not isinstance(refused.value, SoldOut)


def test_given_waiting_orders_when_a_seat_holder_cancels_then_the_oldest_gets_the_seat():
    uow = a_course(1)
    holder = order(uow, 1)
    oldest, next_ = order(uow, 2, waitlist=True), order(uow, 3, waitlist=True)
    handlers.cancel_order(uow, holder.order_no)
    assert statuses(uow) == [
        (OrderStatus.CANCELLED, None),
        (OrderStatus.ORDERED, None),
        (OrderStatus.WAITLISTED, 1),
    ]
    # The usual way (CourseOrdered: learning, SMS) and the seat-confirmed SMS.
    assert events_of(uow, oldest.order_no) == [
        EventType.ORDER_WAITLISTED,
        EventType.COURSE_ORDERED,
        EventType.SEAT_CONFIRMED,
    ]
    assert events_of(uow, next_.order_no) == [EventType.ORDER_WAITLISTED]
    assert (course(uow).seats_taken, course(uow).waitlisted) == (1, 1)


def test_given_a_waiting_order_when_it_is_cancelled_then_those_behind_move_up_and_no_seat_moves():
    uow = a_course(1)
    order(uow, 1)
    first, second = order(uow, 2, waitlist=True), order(uow, 3, waitlist=True)
    cancelled = handlers.cancel_order(uow, first.order_no)
    assert statuses(uow)[1:] == [(OrderStatus.CANCELLED, None), (OrderStatus.WAITLISTED, 1)]
    [event] = [e for e in uow.events if e.event_type == EventType.COURSE_ORDER_CANCELLED]
    assert event.payload["waitlisted"] is True and cancelled.order_no == first.order_no
    assert events_of(uow, second.order_no) == [EventType.ORDER_WAITLISTED]
    assert (course(uow).seats_taken, course(uow).waitlisted) == (1, 1)


def test_given_waiting_orders_when_the_capacity_is_raised_then_the_added_seats_go_in_order():
    uow = a_course(1)
    order(uow, 1)
    for n in (2, 3, 4):
        order(uow, n, waitlist=True)
    handlers.update_course(uow, "LIVE1", {"capacity": 3})
    assert [s for s, _p in statuses(uow)] == ["ORDERED", "ORDERED", "ORDERED", "WAITLISTED"]
    assert statuses(uow)[3] == (OrderStatus.WAITLISTED, 1)
    assert (course(uow).seats_taken, course(uow).seats_left, course(uow).waitlisted) == (3, 0, 1)


def test_given_waiting_orders_when_the_capacity_is_lifted_then_every_one_gets_a_seat():
    uow = a_course(1)
    order(uow, 1)
    order(uow, 2, waitlist=True), order(uow, 3, waitlist=True)
    handlers.update_course(uow, "LIVE1", {"capacity": None})
    assert [s for s, _p in statuses(uow)] == ["ORDERED"] * 3
    assert (course(uow).capacity, course(uow).seats_left, course(uow).waitlisted) == (None, None, 0)
    assert order(uow, 4).status == OrderStatus.ORDERED


@pytest.mark.parametrize("capacity", [0, -1, 1])
def test_a_capacity_of_zero_negative_or_below_the_seats_taken_is_refused_and_changes_nothing(
    capacity,
):
    uow = a_course(3)
    order(uow, 1), order(uow, 2)
    with pytest.raises(InvalidInput):
        handlers.update_course(uow, "LIVE1", {"capacity": capacity, "title": "바뀐 제목"})
    assert (course(uow).capacity, course(uow).seats_taken, course(uow).title) == (
        3,
        2,
        "라이브 코딩",
    )


def test_a_new_course_with_a_capacity_of_zero_is_refused():
    with pytest.raises(InvalidInput):
        a_course(0)


def test_given_orders_of_an_unlimited_course_when_a_capacity_is_set_then_they_are_counted():
    uow = a_course(None)
    order(uow, 1), order(uow, 2)
    with pytest.raises(InvalidInput):
        handlers.update_course(uow, "LIVE1", {"capacity": 1})
    handlers.update_course(uow, "LIVE1", {"capacity": 2})
    assert (course(uow).seats_taken, course(uow).seats_left) == (2, 0)
    with pytest.raises(SoldOut):
        order(uow, 3)


def test_given_a_seat_freed_while_orders_wait_then_a_newcomer_cannot_take_it():
    # The counts as a read would find them between a cancel and its promotion: the seat is
    # the waiting order's, never a newcomer's.
    uow = a_course(1)
    order(uow, 1)
    order(uow, 2, waitlist=True)
    course(uow).seats_taken = 0
    with pytest.raises(SoldOut):
        order(uow, 3)


def test_a_waiting_order_cannot_be_completed():
    uow = a_course(1)
    order(uow, 1)
    waiting = order(uow, 2, waitlist=True)
    assert handlers.register_score(uow, waiting.order_no, 90) == "order_conflict"


def test_given_a_cancel_of_a_waiting_order_then_learning_opens_no_tombstone_and_raises_nothing():
    uow = FakeLearningUnitOfWork()
    event = Event(
        EventType.COURSE_ORDER_CANCELLED,
        "O1",
        {"order_no": "O1", "course_no": "LIVE1", "phone": "010-2000-0001", "waitlisted": True},
    )
    cancel_learning(uow, event)
    assert uow.learnings.items == [] and uow.events == []


def waitlisted_then_seated() -> list[Event]:
    facts = {
        "order_no": "O1",
        "course_no": "LIVE1",
        "course_title": "라이브 코딩",
        "phone": "010-2000-0001",
        "ordered_at": "2026-12-01T09:00:00+00:00",
        "begin_date": "2026-12-01",
        "end_date": "2027-01-31",
    }
    return [
        Event(EventType.ORDER_WAITLISTED, "O1", {**facts, "waitlist_ticket": 7}, sequence=1),
        Event(EventType.COURSE_ORDERED, "O1", facts, sequence=2),
        Event(EventType.SEAT_CONFIRMED, "O1", {**facts, "waitlist_ticket": 7}, sequence=3),
    ]


@pytest.mark.parametrize("arrival", [(0, 1, 2), (2, 1, 0), (1, 0, 2, 1, 0)])
def test_my_page_shows_an_order_seated_from_the_waitlist_as_ordered_in_any_arrival_order(arrival):
    events = waitlisted_then_seated()
    row = new_row("O1", "010-2000-0001")
    for i in arrival:
        apply(row, events[i])
    assert (row.order_status, row.waitlist_ticket, row.course_title) == (
        "ORDERED",
        7,
        "라이브 코딩",
    )


def test_my_page_shows_a_waiting_order_as_waitlisted_with_its_ticket():
    row = new_row("O1", "010-2000-0001")
    apply(row, waitlisted_then_seated()[0])
    assert (row.order_status, row.waitlist_ticket) == ("WAITLISTED", 7)


def test_the_seat_confirmed_sms_names_the_course_and_the_order():
    text = render(waitlisted_then_seated()[2])
    assert text is not None and "좌석 확정" in text and "라이브 코딩" in text and "O1" in text


def test_the_order_limit_is_asked_once_per_order_written_and_never_for_a_sold_out_answer():
    """`admit` (the caller's order limit) runs just before an order is written; what writes
    nothing (sold out, a replay) does not ask it, and a refusal writes nothing."""
    uow = a_course(1)
    asked: list[str] = []

    def place(n: int, waitlist: bool = False, key: str | None = None):
        cmd = handlers.PlaceOrder(
            "LIVE1", f"010-2100-{n:04d}", date(2026, 12, 1), date(2027, 1, 31),
            idempotency_key=key, waitlist=waitlist,
        )  # fmt: skip
        return handlers.place_order(uow, cmd, admit=lambda: asked.append(cmd.phone))[0]

    seated = place(1, key="k1")
    assert asked == ["010-2100-0001"]
    assert place(1, key="k1").order_no == seated.order_no  # a replay: not asked again
    for n in range(2, 6):
        with pytest.raises(SoldOut):
            place(n)
    assert asked == ["010-2100-0001"]
    place(6, waitlist=True)  # a place in line is written: asked
    assert asked == ["010-2100-0001", "010-2100-0006"]

    class Refused(Exception):
        pass

    def refuse() -> None:
        raise Refused

    before = (len(uow.orders.items), uow.committed, course(uow).waitlisted)
    with pytest.raises(Refused):
        handlers.place_order(
            uow,
            handlers.PlaceOrder(
                "LIVE1", "010-2100-0007", date(2026, 12, 1), date(2027, 1, 31), waitlist=True
            ),
            admit=refuse,
        )
    assert (len(uow.orders.items), uow.committed, course(uow).waitlisted) == before
