"""SPEC 5.6: bookkeeping older than the deduplication window is deleted, and a copy of an event
older than the window is never applied, so that the deletion can never cause a second effect."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

from prometheus_client import REGISTRY
from sqlalchemy import Interval, func, literal, select, update

from app.consumer import consume
from app.learning.handlers import RegisterManager, register_manager
from app.learning.model import Learning
from app.notification.model import SmsMessage
from app.policies import BY_CONSUMER, POLICIES
from app.shared.idempotency import PROCESSED
from app.shared.outbox.dead_letters import dead_deliveries, replay_dead
from app.shared.outbox.tables import Delivery, DeliveryStatus, OutboxEvent
from app.shared.retention import prune
from tests.helpers import an_order, counting
from workers.retention import sweep_once

OPEN_LEARNING = BY_CONSUMER["learning.open_learning"]
SEND_SMS = BY_CONSUMER["notification.send_sms"]
WEEK = 7 * 86400
EXPIRED = "older than the deduplication window (7 days): not applied"


def envelopes(container, order_no: str) -> list[dict]:
    with container.main_session() as session:
        stored = session.execute(
            select(OutboxEvent)
            .where(OutboxEvent.order_no == order_no)
            .order_by(OutboxEvent.sequence)
        ).scalars()
        return [event.to_event().envelope() for event in stored]


def deliver_everything(container, order_nos: list[str]) -> None:
    """Every policy gets the orders' events until no new event appears, as the relay would."""
    seen = -1
    while seen != (seen := sum(len(envelopes(container, o)) for o in order_nos)):
        history = [e for o in order_nos for e in envelopes(container, o)]
        for policy in POLICIES:
            mine = [e for e in history if e["event_type"] in policy.events]
            if mine:
                consume(container, policy, mine)


def age(container, order_no: str, days: float, deliveries_too: bool = True) -> None:
    """Move an order's events and their bookkeeping `days` into the past."""
    shift = literal(timedelta(days=days), Interval())
    event_ids = [e["event_id"] for e in envelopes(container, order_no)]
    with container.main_session() as session:
        events = OutboxEvent.__table__
        session.execute(
            update(events)
            .where(events.c.event_id.in_(event_ids))
            .values(occurred_at=events.c.occurred_at - shift)
        )
        if deliveries_too:
            d = Delivery.__table__
            session.execute(
                update(d).where(d.c.event_id.in_(event_ids)).values(done_at=d.c.done_at - shift)
            )
        session.execute(
            update(PROCESSED["main"])
            .where(PROCESSED["main"].c.event_id.in_(event_ids))
            .values(processed_at=PROCESSED["main"].c.processed_at - shift)
        )
        session.commit()
    with container.db.session("notification") as session:
        table = PROCESSED["notification"]
        session.execute(
            update(table)
            .where(table.c.event_id.in_(event_ids))
            .values(processed_at=table.c.processed_at - shift)
        )
        session.commit()


def records(container, bind: str, event_ids: list[str]) -> int:
    table = PROCESSED[bind]
    with container.db.session(bind) as session:
        return session.execute(
            select(func.count()).select_from(table).where(table.c.event_id.in_(event_ids))
        ).scalar_one()


def delivery_of(container, event_id: str, consumer: str) -> Delivery | None:
    with container.main_session() as session:
        return session.execute(
            select(Delivery).where(Delivery.event_id == event_id, Delivery.consumer == consumer)
        ).scalar_one_or_none()


def learnings_of(container, order_no: str) -> int:
    with container.main_session() as session:
        return session.execute(
            select(func.count()).select_from(Learning).where(Learning.order_no == order_no)
        ).scalar_one()


def sms_of(container, event_id: str) -> int:
    with container.db.session("notification") as session:
        return session.execute(
            select(func.count()).select_from(SmsMessage).where(SmsMessage.event_id == event_id)
        ).scalar_one()


# The sweep ------------------------------------------------------------------------------------


def test_given_an_order_a_week_old_then_the_sweep_deletes_its_bookkeeping_and_keeps_the_rest(
    container,
):
    register_manager(container.learning_uow(), RegisterManager("보존매니저", "010-9999-0301"))
    old, young = an_order(container).order_no, an_order(container).order_no
    deliver_everything(container, [old, young])
    unfinished = an_order(container).order_no  # its deliveries stay PENDING
    for order_no in (old, unfinished):
        age(container, order_no, days=8)
    old_ids = [e["event_id"] for e in envelopes(container, old)]
    young_ids = [e["event_id"] for e in envelopes(container, young)]
    assert records(container, "main", old_ids) and records(container, "notification", old_ids)

    would = prune(container.db.session, WEEK, dry_run=True)
    assert records(container, "main", old_ids)  # a dry run deletes nothing
    deleted = prune(container.db.session, WEEK, batch=2)  # several batches per table

    assert deleted == would
    assert deleted["outbox_deliveries_done"] >= 6  # CourseOrdered x3, LearningStarted x3
    assert records(container, "main", old_ids) == records(container, "notification", old_ids) == 0
    with container.main_session() as session:
        left = session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.event_id.in_(old_ids + young_ids))
            .group_by(Delivery.status)
        ).all()
        # The young order keeps everything; the event log is kept whole.
        assert dict(left) == {DeliveryStatus.DONE: len(young_ids) * 3}
        assert session.execute(
            select(func.count()).where(OutboxEvent.event_id.in_(old_ids))
        ).scalar_one() == len(old_ids)
    [ordered] = envelopes(container, unfinished)
    assert delivery_of(container, ordered["event_id"], OPEN_LEARNING.consumer).status == "PENDING"
    assert records(container, "main", young_ids) and records(container, "notification", young_ids)


def test_the_sweep_counts_the_rows_it_deletes_per_table(container):
    order_no = an_order(container).order_no
    deliver_everything(container, [order_no])
    age(container, order_no, days=8)

    def pruned(table: str) -> float:
        sample = "onlinestudy_bookkeeping_pruned_rows_total"
        return REGISTRY.get_sample_value(sample, {"table": table}) or 0.0

    before = {t: pruned(t) for t in ("outbox_deliveries_done", "processed_messages")}

    deleted = sweep_once(container)

    for table, value in before.items():
        assert deleted[table] > 0
        assert pruned(table) == value + deleted[table]


# The safety rule --------------------------------------------------------------------------------


def test_given_a_record_pruned_while_its_delivery_was_owed_then_the_old_copy_is_parked_not_applied(
    container,
):
    """A worker applied CourseOrdered (the learning opened, the record written) and died before
    its DONE mark; the consumer stayed down beyond the window and the sweep deleted the record.
    The copy that finally comes is refused, parked with the reason, and a replay refuses it
    again."""
    register_manager(container.learning_uow(), RegisterManager("안전매니저", "010-9999-0302"))
    order_no = an_order(container).order_no
    [ordered] = envelopes(container, order_no)
    consume(container, OPEN_LEARNING, [ordered])
    with container.main_session() as session:  # the DONE mark lost
        session.execute(
            update(Delivery)
            .where(Delivery.event_id == ordered["event_id"])
            .values(status=DeliveryStatus.PENDING, done_at=None)
        )
        session.commit()
    age(container, order_no, days=8)
    prune(container.db.session, WEEK)
    assert records(container, "main", [ordered["event_id"]]) == 0
    [ordered] = envelopes(container, order_no)[:1]  # the copy carries its old occurred_at
    policy, handled = counting(OPEN_LEARNING)

    assert consume(container, policy, [ordered, ordered]) == []  # twice in one batch

    assert handled == [] and learnings_of(container, order_no) == 1
    parked = delivery_of(container, ordered["event_id"], OPEN_LEARNING.consumer)
    assert (parked.status, parked.last_error) == (DeliveryStatus.DEAD, EXPIRED)
    with container.main_session() as session:
        dead = {(d.consumer, e.event_id): d.last_error for d, e in dead_deliveries(session)}
        assert dead[(OPEN_LEARNING.consumer, ordered["event_id"])] == EXPIRED
        assert replay_dead(session, event_id=ordered["event_id"]) == 1
        session.commit()

    consume(container, policy, [ordered])  # the replayed copy

    assert handled == [] and learnings_of(container, order_no) == 1
    parked = delivery_of(container, ordered["event_id"], OPEN_LEARNING.consumer)
    assert (parked.status, parked.last_error) == (DeliveryStatus.DEAD, EXPIRED)


def test_given_old_copies_out_of_order_with_a_young_event_then_only_the_young_one_applies(
    container,
):
    """The SMS consumer (its records in the notification database): an order a week old was
    texted, its records pruned; its copies come back, reversed, beside a new order's event."""
    register_manager(container.learning_uow(), RegisterManager("순서매니저", "010-9999-0303"))
    old = an_order(container).order_no
    deliver_everything(container, [old])
    age(container, old, days=8)
    prune(container.db.session, WEEK)
    old_copies = envelopes(container, old)  # CourseOrdered, LearningStarted
    old_ids = [e["event_id"] for e in old_copies]
    assert records(container, "notification", old_ids) == 0
    assert [delivery_of(container, i, SEND_SMS.consumer) for i in old_ids] == [None, None]
    young = an_order(container).order_no
    [young_ordered] = envelopes(container, young)
    policy, handled = counting(SEND_SMS)

    done = consume(container, policy, [*reversed(old_copies), young_ordered, *old_copies])

    assert done == handled == [young_ordered["event_id"]]
    assert [sms_of(container, i) for i in old_ids] == [1, 1]
    assert sms_of(container, young_ordered["event_id"]) == 1
    # Applied long ago and pruned: nothing is owed, so nothing is parked either.
    assert [delivery_of(container, i, SEND_SMS.consumer) for i in old_ids] == [None, None]


# Flat tables ----------------------------------------------------------------------------------


def bookkeeping_rows(container, order_nos: list[str]) -> int:
    """The DONE deliveries and processed records of these orders' events, in both databases."""
    ids = [e["event_id"] for o in order_nos for e in envelopes(container, o)]
    with container.main_session() as session:
        done = session.execute(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.status == DeliveryStatus.DONE, Delivery.event_id.in_(ids))
        ).scalar_one()
    return done + records(container, "main", ids) + records(container, "notification", ids)


def test_given_a_short_window_then_the_bookkeeping_stays_flat_while_orders_keep_coming(container):
    container.settings = dataclasses.replace(container.settings, dedup_window_s=2.0)
    register_manager(container.learning_uow(), RegisterManager("평평매니저", "010-9999-0304"))
    orders: list[str] = []
    counts: list[int] = []
    for _ in range(10):
        started = time.monotonic()
        new = [an_order(container).order_no for _ in range(3)]
        deliver_everything(container, new)
        orders += new
        sweep_once(container)
        counts.append(bookkeeping_rows(container, orders))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    per_round = counts[0]
    # Rows live for the window and its grace (4 s): about four rounds' worth, never ten.
    assert per_round > 0
    assert max(counts[5:]) <= 5 * per_round < 10 * per_round, counts
