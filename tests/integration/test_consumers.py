"""SPEC 5.2, 5.4, 5.5: effects apply once, any arrival order converges, poison is parked."""

import dataclasses

from sqlalchemy import select

from app.consumer import consume
from app.evaluation.model import Evaluation
from app.learning.handlers import RegisterManager, register_manager
from app.learning.model import Learning
from app.mypage.model import MyPageRow
from app.notification.model import SmsMessage
from app.policies import BY_CONSUMER
from app.shared.events import EventType
from app.shared.outbox.dead_letters import dead_deliveries, replay_dead
from app.shared.outbox.tables import Delivery, DeliveryStatus, OutboxEvent
from app.shared.states import LearningStatus
from tests.helpers import an_order, random_phone


def envelopes(container, order_no, event_type=None):
    with container.main_session() as session:
        stmt = select(OutboxEvent).where(OutboxEvent.order_no == order_no)
        if event_type:
            stmt = stmt.where(OutboxEvent.event_type == event_type)
        return [
            e.to_event().envelope()
            for e in session.execute(stmt.order_by(OutboxEvent.sequence)).scalars()
        ]


def delivery(container, event_id, consumer) -> Delivery:
    with container.main_session() as session:
        return session.execute(
            select(Delivery).where(Delivery.event_id == event_id, Delivery.consumer == consumer)
        ).scalar_one()


def test_given_course_ordered_delivered_twice_then_one_learning_and_one_start_event(container):
    register_manager(container.learning_uow(), RegisterManager("박매니저", "010-9999-0001"))
    order = an_order(container)
    [ordered] = envelopes(container, order.order_no)
    policy = BY_CONSUMER["learning.open_learning"]
    consume(container, policy, [ordered])
    consume(container, policy, [ordered, ordered])
    with container.main_session() as session:
        learnings = (
            session.execute(select(Learning).where(Learning.order_no == order.order_no))
            .scalars()
            .all()
        )
    assert [x.status for x in learnings] == [LearningStatus.STARTED]
    assert len(envelopes(container, order.order_no, "LearningStarted")) == 1
    assert delivery(container, ordered["event_id"], policy.consumer).status == DeliveryStatus.DONE


def test_given_learning_started_delivered_twice_then_one_evaluation_with_the_learnings_facts(
    container,
):
    register_manager(container.learning_uow(), RegisterManager("윤매니저", "010-9999-0004"))
    orders = [an_order(container) for _ in range(2)]
    open_learning = BY_CONSUMER["learning.open_learning"]
    for order in orders:
        consume(container, open_learning, envelopes(container, order.order_no))
    started = [envelopes(container, o.order_no, "LearningStarted")[0] for o in orders]
    policy = BY_CONSUMER["evaluation.open_evaluation"]
    consume(container, policy, [started[1], started[0], started[1]])
    consume(container, policy, started)
    with container.main_session() as session:
        evaluations = session.execute(
            select(Evaluation)
            .where(Evaluation.order_no.in_([o.order_no for o in orders]))
            .order_by(Evaluation.order_no)
        ).scalars()
        opened = [(e.order_no, e.status, e.learning_id, e.phone) for e in evaluations]
    by_order = {e["order_no"]: e["payload"] for e in started}
    assert opened == sorted(
        (o, "IN_PROGRESS", by_order[o]["learning_id"], by_order[o]["phone"]) for o in by_order
    )


def test_given_each_event_delivered_twice_then_one_sms_per_event_and_phone(container):
    register_manager(container.learning_uow(), RegisterManager("최매니저", "010-9999-0002"))
    phone = random_phone()
    order = an_order(container, phone)
    consume(container, BY_CONSUMER["learning.open_learning"], envelopes(container, order.order_no))
    sms = BY_CONSUMER["notification.send_sms"]
    everything = envelopes(container, order.order_no)
    consume(container, sms, everything)
    consume(container, sms, list(reversed(everything)))
    with container.db.session("notification") as session:
        messages = session.execute(select(SmsMessage).where(SmsMessage.phone == phone)).scalars()
        by_type = sorted((m.event_type, m.status) for m in messages)
    assert by_type == [("CourseOrdered", "SENT"), ("LearningStarted", "SENT")]
    assert len(container.sms_sender.sent) == 2


def test_given_events_out_of_order_and_twice_then_my_page_shows_the_newest_state(container):
    register_manager(container.learning_uow(), RegisterManager("정매니저", "010-9999-0003"))
    order = an_order(container)
    consume(container, BY_CONSUMER["learning.open_learning"], envelopes(container, order.order_no))
    ordered, started = envelopes(container, order.order_no)
    project = BY_CONSUMER["mypage.project"]
    consume(container, project, [started, ordered, started, ordered])
    with container.main_session() as session:
        row = session.get(MyPageRow, order.order_no)
    assert (row.order_status, row.learning_status, row.manager_name, row.course_title) == (
        "ORDERED",
        "STARTED",
        "정매니저",
        "데이터 분석",
    )


def test_given_a_consumer_that_always_fails_then_the_event_is_parked_and_replay_delivers_it(
    container,
):
    order = an_order(container)
    [ordered] = envelopes(container, order.order_no)
    real = BY_CONSUMER["mypage.project"]
    broken = dataclasses.replace(real, handle=lambda uow, events: 1 / 0)
    for _ in range(container.settings.max_attempts):
        assert consume(container, broken, [ordered]) == []
    parked = delivery(container, ordered["event_id"], real.consumer)
    assert parked.status == DeliveryStatus.DEAD and "ZeroDivisionError" in parked.last_error
    with container.main_session() as session:
        assert ordered["event_id"] in [e.event_id for _, e in dead_deliveries(session)]
        # The other consumers of the event are not held up.
        others = (
            session.execute(
                select(Delivery.status).where(
                    Delivery.event_id == ordered["event_id"], Delivery.consumer != real.consumer
                )
            )
            .scalars()
            .all()
        )
        assert others == [DeliveryStatus.PENDING, DeliveryStatus.PENDING]
        assert replay_dead(session, event_id=ordered["event_id"]) == 1
        session.commit()
    assert delivery(container, ordered["event_id"], real.consumer).status == "PENDING"
    consume(container, real, [ordered, ordered])
    assert delivery(container, ordered["event_id"], real.consumer).status == DeliveryStatus.DONE
    with container.main_session() as session:
        assert session.get(MyPageRow, order.order_no).order_status == "ORDERED"


def test_the_least_loaded_active_manager_gets_the_learning_ties_to_the_lowest_id(container):
    register_manager(container.learning_uow(), RegisterManager("김", "010-9999-0004"))
    register_manager(container.learning_uow(), RegisterManager("이", "010-9999-0005"))
    started_by = []
    for _ in range(3):
        order = an_order(container)
        consume(
            container,
            BY_CONSUMER["learning.open_learning"],
            envelopes(container, order.order_no, EventType.COURSE_ORDERED),
        )
        [started] = envelopes(container, order.order_no, EventType.LEARNING_STARTED)
        started_by.append(started["payload"]["manager_name"])
    assert started_by == ["김", "이", "김"]


def test_given_no_manager_then_the_learning_waits_and_raises_no_event(container):
    order = an_order(container)
    consume(container, BY_CONSUMER["learning.open_learning"], envelopes(container, order.order_no))
    with container.main_session() as session:
        learning = session.execute(
            select(Learning).where(Learning.order_no == order.order_no)
        ).scalar_one()
    assert learning.status == LearningStatus.WAITING
    assert envelopes(container, order.order_no, EventType.LEARNING_STARTED) == []
