"""A batch of events is one transaction, and behaves as if each event came alone."""

import dataclasses
import random

from sqlalchemy import select

from app.consumer import consume
from app.learning.handlers import RegisterManager, register_manager
from app.learning.model import Learning, Manager
from app.mypage.model import MyPageRow
from app.orders import handlers as order_handlers
from app.policies import BY_CONSUMER
from app.shared.events import Event, EventType
from app.shared.outbox.tables import DeliveryStatus
from app.shared.uow import correlation_id
from tests.helpers import an_order
from tests.integration.test_consumers import delivery, envelopes


def orders_with_ids(container, n):
    """n orders, each placed under its own request id."""
    orders = []
    for i in range(n):
        token = correlation_id.set(f"request-{i}")
        try:
            orders.append(an_order(container))
        finally:
            correlation_id.reset(token)
    return orders


def test_given_one_poison_event_in_a_batch_then_the_others_apply_and_only_it_fails(container):
    orders = [an_order(container) for _ in range(3)]
    batch = [envelopes(container, o.order_no)[0] for o in orders]
    poison = orders[1].order_no
    real = BY_CONSUMER["mypage.project"]

    def handle(uow, events):
        if any(e.order_no == poison for e in events):
            raise ValueError("cannot fold this one")
        real.handle(uow, events)

    picky = dataclasses.replace(real, handle=handle)

    done = consume(container, picky, batch)

    assert done == [batch[0]["event_id"], batch[2]["event_id"]]
    with container.main_session() as session:
        assert session.get(MyPageRow, orders[0].order_no).order_status == "ORDERED"
        assert session.get(MyPageRow, poison) is None
        assert session.get(MyPageRow, orders[2].order_no).order_status == "ORDERED"
    failed = delivery(container, batch[1]["event_id"], real.consumer)
    assert (failed.status, failed.failures) == (DeliveryStatus.PENDING, 1)
    assert "cannot fold this one" in failed.last_error
    for ok in (batch[0], batch[2]):
        assert delivery(container, ok["event_id"], real.consumer).failures == 0


def test_given_a_batch_of_orders_then_each_start_has_its_cause_and_managers_share_them(
    container,
):
    register_manager(container.learning_uow(), RegisterManager("김", "010-9999-0011"))
    register_manager(container.learning_uow(), RegisterManager("이", "010-9999-0012"))
    orders = orders_with_ids(container, 3)
    batch = [envelopes(container, o.order_no, EventType.COURSE_ORDERED)[0] for o in orders]

    consume(container, BY_CONSUMER["learning.open_learning"], batch + batch)

    started = [envelopes(container, o.order_no, EventType.LEARNING_STARTED) for o in orders]
    assert [len(s) for s in started] == [1, 1, 1]
    assert [s[0]["correlation_id"] for s in started] == ["request-0", "request-1", "request-2"]
    assert [s[0]["payload"]["manager_name"] for s in started] == ["김", "이", "김"]
    with container.main_session() as session:
        counts = session.execute(
            select(Manager.name, Manager.started_count).order_by(Manager.id)
        ).all()
        stored = dict(
            session.execute(
                select(Learning.order_no, Learning.id).where(
                    Learning.order_no.in_([o.order_no for o in orders])
                )
            ).all()
        )
    assert [tuple(c) for c in counts] == [("김", 2), ("이", 1)]
    # Each start names its own learning (they are stored already started, in one statement).
    assert [s[0]["payload"]["learning_id"] for s in started] == [stored[o.order_no] for o in orders]


def started(container, manager_name, n):
    """One manager, and n orders whose learnings it started (in one batch)."""
    register_manager(container.learning_uow(), RegisterManager(manager_name, "010-9999-0013"))
    orders = [an_order(container) for _ in range(n)]
    consume(
        container,
        BY_CONSUMER["learning.open_learning"],
        [envelopes(container, o.order_no)[0] for o in orders],
    )
    return orders


def test_given_learnings_cancelled_and_completed_then_their_managers_count_fewer(container):
    orders = started(container, "박", 3)
    order_handlers.cancel_order(container.orders_uow(), orders[0].order_no)
    [cancelled] = envelopes(container, orders[0].order_no, EventType.COURSE_ORDER_CANCELLED)
    consume(container, BY_CONSUMER["learning.cancel_learning"], [cancelled, cancelled])
    final = Event(EventType.FINAL_EVALUATION_REGISTERED, orders[1].order_no, {"score": 90})
    consume(container, BY_CONSUMER["learning.complete_learning"], [final.envelope()] * 2)

    with container.main_session() as session:
        assert session.execute(select(Manager.started_count)).scalar_one() == 1


def test_given_final_scores_twice_and_out_of_order_then_each_started_learning_completes_once(
    container,
):
    orders = started(container, "최", 4)
    order_handlers.cancel_order(container.orders_uow(), orders[0].order_no)
    [cancelled] = envelopes(container, orders[0].order_no, EventType.COURSE_ORDER_CANCELLED)
    consume(container, BY_CONSUMER["learning.cancel_learning"], [cancelled])
    finals = [
        Event(EventType.FINAL_EVALUATION_REGISTERED, o.order_no, {"score": 90}).envelope()
        for o in orders[:3]
    ]
    complete = BY_CONSUMER["learning.complete_learning"]

    consume(container, complete, finals[::-1] + finals)  # one batch: reversed, then again
    consume(container, complete, finals[1:2])  # a redelivery later

    with container.main_session() as session:
        statuses = dict(
            session.execute(
                select(Learning.order_no, Learning.status).where(
                    Learning.order_no.in_([o.order_no for o in orders])
                )
            ).all()
        )
        assert [statuses[o.order_no] for o in orders] == [
            "CANCELLED",  # a final for a cancelled learning changes nothing
            "COMPLETED",
            "COMPLETED",
            "STARTED",
        ]
        # The manager started 4: one cancelled, two completed, each counted once.
        assert session.execute(select(Manager.started_count)).scalar_one() == 1


def test_given_many_orders_events_shuffled_and_twice_in_one_batch_then_my_page_is_current(
    container,
):
    orders = started(container, "정", 6)
    everything = [e for o in orders for e in envelopes(container, o.order_no)] * 2
    random.Random(7).shuffle(everything)

    consume(container, BY_CONSUMER["mypage.project"], everything)

    with container.main_session() as session:
        rows = session.execute(
            select(MyPageRow).where(MyPageRow.order_no.in_([o.order_no for o in orders]))
        ).scalars()
        states = {
            (r.order_status, r.learning_status, r.manager_name, r.evaluation_status) for r in rows
        }
    assert states == {("ORDERED", "STARTED", "정", "IN_PROGRESS")}
