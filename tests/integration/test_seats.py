"""Seats on PostgreSQL (SPEC 11): the API's answers, no seat sold twice or lost under
concurrent orders, cancels and capacity changes, and the events of a seat given from the
waitlist applied once in any arrival order."""

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pytest
from sqlalchemy import func, select

from app.consumer import consume
from app.learning.handlers import RegisterManager, register_manager
from app.learning.model import Learning
from app.mypage.model import MyPageRow
from app.notification.model import SmsMessage
from app.orders import handlers
from app.orders.model import Course, Order
from app.orders.repository import UNLIMITED_COURSE
from app.policies import BY_CONSUMER
from app.shared.errors import Conflict, SoldOut
from app.shared.outbox.tables import OutboxEvent
from app.shared.states import SEAT_HOLDING, OrderStatus
from tests.helpers import course_body, order_body, random_course_no, random_phone
from tests.integration.test_consumers import envelopes

# --- the API -------------------------------------------------------------------------------


def a_course_with(client, capacity) -> str:
    response = client.post("/courses", json=course_body(capacity=capacity))
    assert response.status_code == 201, response.json
    return response.json["course_no"]


def test_a_course_shows_its_capacity_and_the_seats_left(client):
    course_no = a_course_with(client, 2)
    client.post("/orders", json=order_body(course_no))
    shown = client.get(f"/courses/{course_no}").json
    assert (shown["capacity"], shown["seats_left"], shown["waitlisted"]) == (2, 1, 0)
    listed = client.get("/courses", query_string={"category": "programming", "page_size": 100})
    assert {"capacity": 2, "seats_left": 1}.items() <= next(
        c for c in listed.json if c["course_no"] == course_no
    ).items()
    unlimited = client.get(f"/courses/{a_course_with(client, None)}").json
    assert (unlimited["capacity"], unlimited["seats_left"]) == (None, None)


def test_given_a_full_course_an_order_is_sold_out_or_waits_with_its_position(client):
    course_no = a_course_with(client, 1)
    assert client.post("/orders", json=order_body(course_no)).status_code == 201
    refused = client.post("/orders", json=order_body(course_no))
    assert refused.status_code == 409
    assert {k: refused.json[k] for k in ("code", "status", "message")} == {
        "code": 409,
        "status": "SOLD_OUT",
        "message": "정원이 마감되었습니다",
    }
    first = client.post("/orders", json=order_body(course_no, waitlist=True))
    second = client.post("/orders", json=order_body(course_no, waitlist=True))
    assert (first.status_code, first.json["status"], first.json["waitlist_position"]) == (
        201,
        "WAITLISTED",
        1,
    )
    assert second.json["waitlist_position"] == 2
    assert client.get(f"/orders/{second.json['order_no']}").json["waitlist_position"] == 2
    waiting = client.get("/orders", query_string={"status": "WAITLISTED", "page_size": 100})
    assert {second.json["order_no"]: 2}.items() <= {
        o["order_no"]: o["waitlist_position"] for o in waiting.json
    }.items()


def test_given_waiting_orders_a_cancel_seats_the_oldest_and_moves_the_others_up(client):
    course_no = a_course_with(client, 1)
    holder = client.post("/orders", json=order_body(course_no)).json
    first = client.post("/orders", json=order_body(course_no, waitlist=True)).json
    second = client.post("/orders", json=order_body(course_no, waitlist=True)).json
    assert client.post(f"/orders/{holder['order_no']}/cancel").json["status"] == "CANCELLED"
    seated = client.get(f"/orders/{first['order_no']}").json
    assert (seated["status"], seated["waitlist_position"]) == ("ORDERED", None)
    assert client.get(f"/orders/{second['order_no']}").json["waitlist_position"] == 1
    assert client.post(f"/orders/{second['order_no']}/cancel").json["status"] == "CANCELLED"
    course = client.get(f"/courses/{course_no}").json
    assert (course["seats_left"], course["waitlisted"]) == (0, 0)


@pytest.mark.parametrize("capacity", [0, -3, 1, "2", 1.5])
def test_a_bad_capacity_is_refused_with_422_and_changes_nothing(client, capacity):
    course_no = a_course_with(client, 5)
    for _ in range(2):
        client.post("/orders", json=order_body(course_no))
    response = client.patch(f"/courses/{course_no}", json={"capacity": capacity, "price": 1})
    assert response.status_code == 422, response.json
    course = client.get(f"/courses/{course_no}").json
    assert (course["capacity"], course["seats_left"], course["price"]) == (5, 3, 30000)


def test_a_new_course_with_a_capacity_of_zero_is_refused(client):
    assert client.post("/courses", json=course_body(capacity=0)).status_code == 422


def test_raising_the_capacity_seats_the_waiting_orders_in_arrival_order(client):
    course_no = a_course_with(client, 1)
    client.post("/orders", json=order_body(course_no))
    waiting = [
        client.post("/orders", json=order_body(course_no, waitlist=True)).json["order_no"]
        for _ in range(3)
    ]
    assert client.patch(f"/courses/{course_no}", json={"capacity": 3}).json["seats_left"] == 0
    states = [client.get(f"/orders/{o}").json for o in waiting]
    assert [(s["status"], s["waitlist_position"]) for s in states] == [
        ("ORDERED", None),
        ("ORDERED", None),
        ("WAITLISTED", 1),
    ]


def test_my_page_shows_a_waiting_order_with_its_current_position(client, container):
    course_no = a_course_with(client, 1)
    holder = client.post("/orders", json=order_body(course_no)).json
    phones = [random_phone() for _ in range(2)]
    orders = [
        client.post("/orders", json=order_body(course_no, phone=p, waitlist=True)).json
        for p in phones
    ]
    client.post(f"/orders/{holder['order_no']}/cancel")
    project = BY_CONSUMER["mypage.project"]
    for order in (holder, *orders):
        consume(container, project, envelopes(container, order["order_no"]))
    rows = [client.get(f"/mypage/{p}").json[0] for p in phones]
    assert [(r["order_status"], r["waitlist_position"]) for r in rows] == [
        ("ORDERED", None),
        ("WAITLISTED", 1),
    ]


# --- concurrency: no seat sold twice, none lost ---------------------------------------------


def new_course(c, capacity: int | None) -> str:
    course_no = random_course_no()
    handlers.create_course(
        c.orders_uow(),
        handlers.CreateCourse(course_no=course_no, title="선착순", price=1, capacity=capacity),
    )
    return course_no


def try_order(c, course_no: str, waitlist: bool) -> str:
    cmd = handlers.PlaceOrder(
        course_no, random_phone(), date(2026, 12, 1), date(2026, 12, 31), waitlist=waitlist
    )
    try:
        order, _ = handlers.place_order(c.orders_uow(), cmd)
    except SoldOut:
        return "SOLD_OUT"
    except Conflict:
        return "conflict"  # the same random phone twice: rare, and not a seat question
    return order.status


def seats(c, course_no: str) -> dict:
    """The course's counts beside what its orders say."""
    with c.main_session() as session:
        course = session.execute(select(Course).where(Course.course_no == course_no)).scalar_one()
        orders = session.execute(select(Order).where(Order.course_no == course_no)).scalars().all()
    holding = [o for o in orders if o.status in SEAT_HOLDING]
    tickets = sorted(o.waitlist_ticket for o in orders if o.status == OrderStatus.WAITLISTED)
    return {
        "capacity": course.capacity,
        "seats_taken": course.seats_taken,
        "holding": len(holding),
        "waitlisted": course.waitlisted,
        "waiting": len(tickets),
        "tickets_unique": len(set(tickets)) == len(tickets),
    }


def assert_no_seat_sold_twice_or_lost(state: dict) -> None:
    assert state["seats_taken"] == state["holding"], state
    assert state["waitlisted"] == state["waiting"] and state["tickets_unique"], state
    if state["capacity"] is not None:
        assert state["holding"] <= state["capacity"], state  # never oversold
        if state["waiting"]:
            assert state["holding"] == state["capacity"], state  # a free seat is never idle


def test_given_a_burst_of_orders_then_exactly_the_capacity_is_seated(committing_container):
    c = committing_container
    course_no = new_course(c, 10)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: try_order(c, course_no, i % 2 == 0), range(60)))
    assert answers.count("ORDERED") == 10
    assert set(answers) <= {"ORDERED", "WAITLISTED", "SOLD_OUT", "conflict"}
    state = seats(c, course_no)
    assert_no_seat_sold_twice_or_lost(state)
    assert (state["holding"], state["waiting"]) == (10, answers.count("WAITLISTED"))


def test_given_cancels_orders_and_capacity_changes_at_once_then_no_seat_is_sold_twice_or_lost(
    committing_container,
):
    c = committing_container
    course_no = new_course(c, 5)
    for i in range(15):
        try_order(c, course_no, waitlist=i >= 5)
    with c.main_session() as session:
        placed = session.execute(
            select(Order.order_no).where(Order.course_no == course_no)
        ).scalars()
        order_nos = list(placed)
    rng = random.Random(7)
    work = [lambda o=o: handlers.cancel_order(c.orders_uow(), o) for o in rng.sample(order_nos, 8)]
    work += [lambda w=i % 2 == 0: try_order(c, course_no, w) for i in range(10)]
    work += [
        lambda n=n: handlers.update_course(c.orders_uow(), course_no, {"capacity": n})
        for n in (7, 9)
    ]
    rng.shuffle(work)
    with ThreadPoolExecutor(6) as pool:
        for future in [pool.submit(job) for job in work]:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - a capacity below the seats taken: 422
                assert exc.__class__.__name__ == "InvalidInput", exc
    assert_no_seat_sold_twice_or_lost(seats(c, course_no))


def test_given_orders_flowing_when_a_capacity_is_set_then_every_seat_is_counted(
    committing_container,
):
    """The orders of a course without a capacity take no lock; the capacity's transaction
    counts them with the order writers locked out, and an order inserted after it sees the
    capacity in its own statement."""
    c = committing_container
    course_no = new_course(c, None)

    # 8 orders go before the capacity and a few beside it (6 threads; 13 were seen): 16 leaves
    # them room, else the capacity is rightly refused as below the seats taken; 24 fill it.
    def set_capacity():
        handlers.update_course(c.orders_uow(), course_no, {"capacity": 16})

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(try_order, c, course_no, False) for _ in range(8)]
        futures.append(pool.submit(set_capacity))
        futures += [pool.submit(try_order, c, course_no, True) for _ in range(16)]
        for future in futures:
            future.result()
    state = seats(c, course_no)
    assert_no_seat_sold_twice_or_lost(state)
    assert state["holding"] == 16


def test_an_order_of_a_course_that_has_a_capacity_since_it_was_read_is_not_inserted(container):
    course_no = new_course(container, 3)
    uow = container.orders_uow()
    with uow.statement_by_statement():
        course = uow.courses.course_to_order(course_no)
        order = Order.place(course, random_phone(), date(2026, 12, 1), date(2026, 12, 31))
        assert uow.commit_new(order, only_if=UNLIMITED_COURSE) is False
    with container.main_session() as session:
        assert session.scalar(select(func.count()).where(Order.order_no == order.order_no)) == 0
        events = select(func.count()).where(OutboxEvent.order_no == order.order_no)
        assert session.scalar(events) == 0


# --- the events of a seat given from the waitlist -------------------------------------------


def test_given_a_seat_from_the_waitlist_delivered_twice_and_out_of_order_then_applied_once(
    container,
):
    register_manager(container.learning_uow(), RegisterManager("한매니저", "010-9999-0011"))
    course_no = new_course(container, 1)
    phone = random_phone()
    holder, _ = handlers.place_order(
        container.orders_uow(),
        handlers.PlaceOrder(course_no, random_phone(), date(2026, 12, 1), date(2026, 12, 31)),
    )
    waiting, _ = handlers.place_order(
        container.orders_uow(),
        handlers.PlaceOrder(course_no, phone, date(2026, 12, 1), date(2026, 12, 31), waitlist=True),
    )
    handlers.cancel_order(container.orders_uow(), holder.order_no)
    everything = envelopes(container, waiting.order_no)
    assert [e["event_type"] for e in everything] == [
        "OrderWaitlisted",
        "CourseOrdered",
        "SeatConfirmed",
    ]
    backwards = [*reversed(everything), *everything]
    for consumer in ("learning.open_learning", "mypage.project", "notification.send_sms"):
        policy = BY_CONSUMER[consumer]
        consume(container, policy, [e for e in backwards if e["event_type"] in policy.events])
        consume(container, policy, [e for e in everything if e["event_type"] in policy.events])
    started = envelopes(container, waiting.order_no, "LearningStarted")
    consume(container, BY_CONSUMER["notification.send_sms"], started * 2)
    with container.main_session() as session:
        learnings = session.execute(
            select(Learning.status).where(Learning.order_no == waiting.order_no)
        ).scalars()
        assert list(learnings) == ["STARTED"]
        row = session.get(MyPageRow, waiting.order_no)
        assert (row.order_status, row.learning_status) == ("ORDERED", None)
    with container.db.session("notification") as session:
        sent = session.execute(
            select(SmsMessage.event_type, SmsMessage.status).where(SmsMessage.phone == phone)
        ).all()
    assert sorted(sent) == [
        ("CourseOrdered", "SENT"),
        ("LearningStarted", "SENT"),
        ("SeatConfirmed", "SENT"),
    ]
    assert len(started) == 1  # one learning started, whatever the copies
