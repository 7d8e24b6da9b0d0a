"""SPEC 5.1: a state change and its events commit together, or not at all."""

import gc
from datetime import date

import pytest
from sqlalchemy import select

from app.consumer import consume
from app.learning.handlers import RegisterManager, register_manager
from app.orders import handlers
from app.orders.model import Course, Order
from app.policies import BY_CONSUMER
from app.shared.db.engine import autocommits
from app.shared.errors import Conflict
from app.shared.events import EventType
from app.shared.outbox.tables import Delivery, OutboxEvent
from tests.helpers import random_course_no, random_phone


def a_course(container) -> str:
    course_no = random_course_no()
    handlers.create_course(
        container.orders_uow(),
        handlers.CreateCourse(course_no=course_no, title="파이썬 입문", price=1000),
    )
    return course_no


def events_of(container, order_no):
    with container.main_session() as session:
        return (
            session.execute(select(OutboxEvent).where(OutboxEvent.order_no == order_no))
            .scalars()
            .all()
        )


def test_given_an_order_when_it_commits_then_exactly_one_event_with_a_delivery_per_consumer(
    container,
):
    order, _ = handlers.place_order(
        container.orders_uow(),
        handlers.PlaceOrder(
            a_course(container), random_phone(), date(2026, 12, 1), date(2026, 12, 31)
        ),
    )
    [event] = events_of(container, order.order_no)
    assert event.event_type == EventType.COURSE_ORDERED and event.sequence == 1
    with container.main_session() as session:
        consumers = (
            session.execute(select(Delivery.consumer).where(Delivery.event_id == event.event_id))
            .scalars()
            .all()
        )
    assert sorted(consumers) == [
        "learning.open_learning",
        "mypage.project",
        "notification.send_sms",
    ]


def test_given_an_order_when_its_transaction_rolls_back_then_no_event_remains(container):
    course_no = a_course(container)
    uow = container.orders_uow()
    with pytest.raises(RuntimeError), uow:
        course = uow.courses.get(course_no)
        order = Order.place(course, random_phone(), date(2026, 12, 1), date(2026, 12, 31))
        uow.orders.add(order)
        uow.session.flush()
        raise RuntimeError("the request failed before commit")
    assert events_of(container, order.order_no) == []
    with container.main_session() as session:
        assert (
            session.execute(
                select(Delivery)
                .join(OutboxEvent, OutboxEvent.event_id == Delivery.event_id)
                .where(OutboxEvent.order_no == order.order_no)
            ).first()
            is None
        )


def test_the_events_of_one_order_get_increasing_sequences_across_contexts(container):
    register_manager(container.learning_uow(), RegisterManager("김매니저", "010-9999-0000"))
    order, _ = handlers.place_order(
        container.orders_uow(),
        handlers.PlaceOrder(
            a_course(container), random_phone(), date(2026, 12, 1), date(2026, 12, 31)
        ),
    )
    [ordered] = events_of(container, order.order_no)
    consume(container, BY_CONSUMER["learning.open_learning"], [ordered.to_event().envelope()])
    sequences = [(e.event_type, e.sequence) for e in events_of(container, order.order_no)]
    assert sorted(sequences, key=lambda x: x[1]) == [("CourseOrdered", 1), ("LearningStarted", 2)]


def test_an_order_without_a_transaction_is_one_statement_with_its_event(committing_container):
    """POST /orders runs statement by statement (no BEGIN/COMMIT): its one write carries the
    row and the event together, and a refused row leaves no event behind."""
    c = committing_container
    course_no = a_course(c)
    phone = random_phone()
    cmd = handlers.PlaceOrder(course_no, phone, date(2026, 12, 1), date(2026, 12, 31))
    order, created = handlers.place_order(c.orders_uow(), cmd)
    assert created and [e.event_type for e in events_of(c, order.order_no)] == ["CourseOrdered"]
    with c.main_session() as session:
        before = session.execute(select(OutboxEvent.id)).all()
    with pytest.raises(Conflict):
        handlers.place_order(c.orders_uow(), cmd)  # the same phone's live order
    with c.main_session() as session:
        assert session.execute(select(OutboxEvent.id)).all() == before


def test_a_write_of_several_statements_is_refused_without_a_transaction(committing_container):
    c = committing_container
    course_no = a_course(c)
    uow = c.orders_uow()
    with pytest.raises(RuntimeError, match="needs a transaction"), uow.statement_by_statement():
        course = uow.courses.get(course_no)
        order = Order.place(course, random_phone(), date(2026, 12, 1), date(2026, 12, 31))
        uow.orders.add(order)
        uow.commit()  # a flush and the outbox: several statements
    assert events_of(c, order.order_no) == []
    with c.main_session() as session:
        assert (
            session.execute(select(Order).where(Order.order_no == order.order_no)).first() is None
        )


def test_a_notification_unit_of_work_runs_statement_by_statement(committing_container):
    """Its session factory takes `autocommit` as the main one does: on PostgreSQL its reads
    commit each on its own, on the notification database."""
    uow = committing_container.notification_uow()
    with uow.statement_by_statement():
        assert autocommits(uow.session)
        messages, total = uow.messages.list(random_phone(), None, 0, 10)
    assert (messages, total) == ([], 0)


def a_placed_order(container) -> Order:
    cmd = handlers.PlaceOrder(
        a_course(container), random_phone(), date(2026, 12, 1), date(2026, 12, 31)
    )
    return handlers.place_order(container.orders_uow(), cmd)[0]


def stored(container, order_no) -> Order:
    with container.main_session() as session:
        return session.execute(select(Order).where(Order.order_no == order_no)).scalar_one()


def test_a_score_step_writes_the_order_and_its_event_together(container):
    order = a_placed_order(container)
    assert handlers.register_score(container.orders_uow(), order.order_no, 88) == "completed"
    completed = stored(container, order.order_no)
    assert (completed.status, completed.score) == ("COMPLETED", 88)
    assert completed.completed_at is not None
    [ordered, done] = sorted(events_of(container, order.order_no), key=lambda e: e.sequence)
    assert (done.event_type, done.sequence, done.payload["score"]) == ("OrderCompleted", 2, 88)
    # The same score again changes nothing and raises nothing.
    assert handlers.register_score(container.orders_uow(), order.order_no, 88) == "completed"
    assert len(events_of(container, order.order_no)) == 2


def test_a_changed_aggregate_with_other_changes_beside_it_commits_them_all(container):
    first, second = a_placed_order(container), a_placed_order(container)
    uow = container.orders_uow()
    with uow:
        completing = uow.orders.get(first.order_no, for_update=True)
        cancelling = uow.orders.get(second.order_no, for_update=True)
        completing.register_score(70)
        cancelling.cancel()
        uow.commit_changed(completing)
    assert stored(container, first.order_no).status == "COMPLETED"
    assert stored(container, second.order_no).status == "CANCELLED"
    assert {e.event_type for e in events_of(container, second.order_no)} == {
        "CourseOrdered",
        "CourseOrderCancelled",
    }


def test_an_aggregate_flushed_and_then_let_go_before_the_commit_keeps_its_events(container):
    """The session holds flushed objects weakly: a handler may flush a new aggregate (for its
    id) and drop it before the unit of work commits. Its events are taken at the flush."""
    course = Course(course_no=a_course(container), title="파이썬 입문", active=True)
    uow = container.orders_uow()
    with uow:
        order = Order.place(course, random_phone(), date(2026, 12, 1), date(2027, 2, 28))
        order_no = order.order_no
        uow.add(order)
        uow.session.flush()
        del order
        gc.collect()
        assert not list(uow.session.identity_map.values())  # really let go
        uow.commit()
    assert [e.event_type for e in events_of(container, order_no)] == [EventType.COURSE_ORDERED]
