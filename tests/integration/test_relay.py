"""The relay publishes committed events, batches them per consumer, and redelivers (SPEC 5.3)."""

import base64
import dataclasses
import json
import time
import uuid
from collections import Counter
from datetime import date, timedelta

import psycopg
import pytest
import redis
from celery import Celery
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import select

from app.consumer import announce_done, consume
from app.evaluation.handlers import finalize_evaluation
from app.evaluation.model import Evaluation
from app.learning.handlers import RegisterManager, register_manager
from app.mypage.model import MyPageRow
from app.orders import handlers
from app.policies import BY_CONSUMER
from app.shared.db.base import utcnow
from app.shared.outbox.claim import claim_due
from app.shared.outbox.notices import NOTIFY_CHANNEL
from app.shared.outbox.tables import Delivery, OutboxEvent
from tests.conftest import REDIS_URL
from tests.helpers import random_course_no, random_phone
from tests.integration.test_consumers import envelopes
from workers import relay as relay_module
from workers.relay import InFlight, Waker, relay_once


def orders(container, count):
    course_no = random_course_no()
    handlers.create_course(
        container.orders_uow(),
        handlers.CreateCourse(course_no=course_no, title="웹 개발", price=1000),
    )
    return [
        handlers.place_order(
            container.orders_uow(),
            handlers.PlaceOrder(course_no, random_phone(), date(2026, 12, 1), date(2026, 12, 31)),
        )[0]
        for _ in range(count)
    ]


def test_given_a_committed_order_then_each_consumer_gets_it_once_on_its_queue(
    container, fake_celery
):
    [order] = orders(container, 1)
    assert relay_once(container, fake_celery) == 3
    sent = {
        (name, queue): [e["order_no"] for e in events] for name, queue, events in fake_celery.sent
    }
    assert sent == {
        ("learning.open_learning", "learning"): [order.order_no],
        ("notification.send_sms", "notification"): [order.order_no],
        ("mypage.project", "mypage"): [order.order_no],
    }
    assert relay_once(container, fake_celery) == 0  # not again before the redelivery timeout


@pytest.mark.speed
def test_a_published_batch_shows_its_size_to_monitors_not_its_events(container):
    # On a real broker: what Flower and the worker log show of the task is its kwargsrepr.
    container.settings = dataclasses.replace(container.settings, relay_batch_max=2)
    prefix = f"test-{uuid.uuid4().hex[:8]}-"
    celery = Celery(broker=REDIS_URL)
    celery.conf.task_default_queue = prefix + "default"
    broker = redis.Redis.from_url(REDIS_URL)
    made = orders(container, 3)
    queues = {p.queue.value: prefix + p.queue.value for p in BY_CONSUMER.values()}
    try:
        with_prefixed_queues(container, celery, queues)
        messages = [json.loads(m) for m in broker.lrange(queues["learning"], 0, -1)]
    finally:
        broker.delete(*queues.values())
    assert sorted(m["headers"]["kwargsrepr"] for m in messages) == [
        "{'events': <1 events>}",
        "{'events': <2 events>}",
    ]
    bodies = [json.loads(base64.b64decode(m["body"])) for m in messages]
    published = [e["order_no"] for _args, kwargs, _ in bodies for e in kwargs["events"]]
    assert sorted(published) == sorted(o.order_no for o in made)


@pytest.mark.speed
def test_the_relay_asks_for_no_result_of_the_tasks_it_publishes(container):
    # Nobody reads a consumer task's result. Asking for one made Celery subscribe the relay to
    # its result channel (SUBSCRIBE, later UNSUBSCRIBE: two Redis round trips per task).
    prefix = f"test-{uuid.uuid4().hex[:8]}-"
    celery = Celery(broker=REDIS_URL, backend=REDIS_URL)
    celery.conf.task_default_queue = prefix + "default"
    broker = redis.Redis.from_url(REDIS_URL)
    orders(container, 2)
    queues = {p.queue.value: prefix + p.queue.value for p in BY_CONSUMER.values()}

    def subscribes() -> int:
        return broker.info("commandstats").get("cmdstat_subscribe", {}).get("calls", 0)

    before = subscribes()
    try:
        with_prefixed_queues(container, celery, queues)
        messages = [json.loads(m) for q in set(queues.values()) for m in broker.lrange(q, 0, -1)]
    finally:
        broker.delete(*queues.values())
    assert len(messages) == 3  # one task for each consumer of CourseOrdered
    assert subscribes() == before
    assert all(m["headers"]["ignore_result"] for m in messages)  # nor does the worker store one


def with_prefixed_queues(container, celery, queues):
    """relay_once, with each context's queue renamed so that no worker of this machine eats it."""
    send = celery.send_task
    celery.send_task = lambda name, queue, **kw: send(name, queue=queues[queue], **kw)
    relay_once(container, celery)


def test_given_a_backlog_then_events_share_tasks_up_to_the_batch_size(container, fake_celery):
    container.settings = dataclasses.replace(container.settings, relay_batch_max=2)
    made = orders(container, 5)
    relay_once(container, fake_celery)
    batches = [
        [e["order_no"] for e in events]
        for name, _, events in fake_celery.sent
        if name == "learning.open_learning"
    ]
    assert [len(b) for b in batches] == [2, 2, 1]
    assert sum(batches, []) == [o.order_no for o in made]


def test_given_no_consumer_records_the_event_then_it_is_published_again_after_the_timeout(
    container, fake_celery
):
    container.settings = dataclasses.replace(container.settings, redelivery_timeout_s=0.3)
    [order] = orders(container, 1)
    relay_once(container, fake_celery)
    # mypage records it; learning and notification lose their copies (a worker died).
    [(_, _, events)] = [s for s in fake_celery.sent if s[0] == "mypage.project"]
    consume(container, BY_CONSUMER["mypage.project"], events)
    fake_celery.sent.clear()
    time.sleep(0.35)
    assert relay_once(container, fake_celery) == 2
    assert sorted(name for name, _, _ in fake_celery.sent) == [
        "learning.open_learning",
        "notification.send_sms",
    ]
    assert all(events[0]["order_no"] == order.order_no for _, _, events in fake_celery.sent)


def learning_batches(fake_celery) -> list[list[str]]:
    return [
        [e["order_no"] for e in events]
        for name, _, events in fake_celery.sent
        if name == "learning.open_learning"
    ]


def test_given_a_task_in_flight_then_the_next_events_wait_and_go_together_when_it_ends(
    container, fake_celery, monkeypatch
):
    clock = Clock()
    monkeypatch.setattr(relay_module, "time", clock)
    in_flight = InFlight(per_consumer=1, expire_s=60)
    first = orders(container, 1)
    relay_once(container, fake_celery, in_flight)
    later = orders(container, 3)
    clock.now += 1  # past any gathering moment: only the slots hold the events back
    assert relay_once(container, fake_celery, in_flight) == 0  # every consumer's slot is taken

    in_flight.heard({"learning.open_learning"}, Counter({"learning.open_learning": 1}))
    assert relay_once(container, fake_celery, in_flight) == 3

    assert learning_batches(fake_celery) == [
        [first[0].order_no],
        [o.order_no for o in later],
    ]


def test_given_a_task_that_never_says_it_ended_then_its_slot_is_freed_after_a_moment(
    container, fake_celery
):
    in_flight = InFlight(per_consumer=1, expire_s=0.2)
    orders(container, 1)
    relay_once(container, fake_celery, in_flight)
    orders(container, 1)
    heard = {"learning.open_learning", "notification.send_sms", "mypage.project"}
    in_flight.heard(heard, Counter())  # the commit's NOTIFY
    assert relay_once(container, fake_celery, in_flight) == 0
    time.sleep(0.25)
    assert relay_once(container, fake_celery, in_flight) == 3


def test_a_commit_names_its_consumers_to_the_relay(committing_container):
    waker = Waker(committing_container)
    try:
        register_manager(
            committing_container.learning_uow(), RegisterManager("알림", "010-9999-0021")
        )
        new_work = set()
        deadline = time.monotonic() + 5
        while not new_work and time.monotonic() < deadline:
            new_work |= waker.wait(block=True)[0]
        assert new_work == {"learning.start_waiting_learnings"}
    finally:
        waker.close()


def test_a_commit_whose_copies_are_all_deferred_does_not_wake_the_relay(committing_container):
    [order] = orders(committing_container, 1)
    url = committing_container.db.engine("main").url.set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        handlers.register_score(committing_container.orders_uow(), order.order_no, 88)
        # OrderCompleted's copies wait behind the score chain: the relay's sweep finds them.
        assert [n.payload for n in listener.notifies(timeout=0.5)] == []
        orders(committing_container, 1)
        # A commit with work due now is heard at once.
        heard = next(listener.notifies(timeout=5, stop_after=1))
        assert "learning.open_learning" in heard.payload


def test_a_consumer_task_tells_the_relay_it_ended_in_its_last_commit(committing_container):
    c = committing_container
    made = orders(c, 2)
    ordered = [envelopes(c, o.order_no)[0] for o in made]
    checkouts = []

    def counted(*_args):
        checkouts.append(1)

    sqlalchemy_event.listen(c.db.engine("main"), "checkout", counted)
    waker = Waker(c)
    try:
        consume(c, BY_CONSUMER["mypage.project"], ordered[:1])
        alone = len(checkouts)
        # As a worker's task calls it: the same work, and the NOTIFY rides its transaction.
        consume(c, BY_CONSUMER["mypage.project"], ordered[1:], announce_end=True)
        assert len(checkouts) == 2 * alone
        # A policy that sends after its commit tells the relay when it records DONE.
        consume(c, BY_CONSUMER["notification.send_sms"], ordered, announce_end=True)
        consume(c, BY_CONSUMER["learning.open_learning"], [], announce_end=True)
        ended = Counter()
        deadline = time.monotonic() + 5
        while sum(ended.values()) < 3 and time.monotonic() < deadline:
            ended.update(waker.wait(block=True)[1])
        assert ended == Counter(
            {"mypage.project": 1, "notification.send_sms": 1, "learning.open_learning": 1}
        )
    finally:
        sqlalchemy_event.remove(c.db.engine("main"), "checkout", counted)
        waker.close()


def test_a_worker_telling_a_task_ended_reaches_the_relay(committing_container):
    waker = Waker(committing_container)
    try:
        for consumer in ("mypage.project", "mypage.project", "learning.open_learning"):
            announce_done(committing_container, consumer)  # as each consumer task ends
        ended = Counter()
        deadline = time.monotonic() + 5
        while sum(ended.values()) < 3 and time.monotonic() < deadline:
            ended.update(waker.wait(block=True)[1])
        assert ended == Counter({"mypage.project": 2, "learning.open_learning": 1})
    finally:
        waker.close()


def test_order_completed_copies_wait_behind_the_score_chain_whose_next_step_tells_my_page(
    container, fake_celery
):
    [order] = orders(container, 1)
    with container.evaluation_uow() as uow:
        evaluation = Evaluation.open(order.order_no, None, order.phone, order.course_no, None)
        uow.evaluations.add(evaluation)
        uow.commit()
    relay_once(container, fake_celery)
    handlers.register_score(container.orders_uow(), order.order_no, 88)  # the chain's step 1
    fake_celery.sent.clear()

    relay_once(container, fake_celery)

    # Evaluation's safety net and My page's copy of OrderCompleted are due after the guard.
    assert fake_celery.sent == []
    with container.main_session() as session:
        due = dict(
            session.execute(
                select(Delivery.consumer, Delivery.next_attempt_at)
                .join(OutboxEvent, OutboxEvent.event_id == Delivery.event_id)
                .where(OutboxEvent.order_no == order.order_no)
                .where(OutboxEvent.event_type == "OrderCompleted")
            ).all()
        )
    guard = container.settings.score_sync_timeout_s
    assert set(due) == {"evaluation.finalize_on_order_completed", "mypage.project"}
    assert all(at - utcnow() > timedelta(seconds=guard - 1) for at in due.values())

    finalize_evaluation(container.evaluation_uow(), evaluation.id, 88)  # the chain's step 2
    relay_once(container, fake_celery)
    [events] = [events for name, _, events in fake_celery.sent if name == "mypage.project"]
    assert [e["event_type"] for e in events] == ["FinalEvaluationRegistered"]
    consume(container, BY_CONSUMER["mypage.project"], events)
    with container.main_session() as session:
        row = session.get(MyPageRow, order.order_no)
        assert (row.order_status, row.evaluation_status, row.final_score) == (
            "COMPLETED",
            "FINAL",
            88,
        )


ALL_THREE = {"learning.open_learning", "notification.send_sms", "mypage.project"}


def sent_to(fake_celery, name) -> list[int]:
    return [len(events) for task, _, events in fake_celery.sent if task == name]


def test_a_consumer_off_the_way_to_my_page_gathers_its_next_batch_for_longer(
    container, fake_celery, monkeypatch
):
    clock = Clock()
    monkeypatch.setattr(relay_module, "time", clock)
    in_flight = InFlight(per_consumer=1, expire_s=60)
    orders(container, 1)
    relay_once(container, fake_celery, in_flight)
    in_flight.heard(ALL_THREE, Counter(dict.fromkeys(ALL_THREE, 1)))  # all three tasks ended
    orders(container, 2)
    fake_celery.sent.clear()

    relay_once(container, fake_celery, in_flight)
    assert fake_celery.sent == []  # each gathers for a moment after its last task
    learning = BY_CONSUMER["learning.open_learning"].gather_s
    assert 0 < in_flight.wake_in() <= learning  # the relay wakes up for the first of them

    clock.now += learning
    relay_once(container, fake_celery, in_flight)
    # The learning goes after a moment; the SMS, off the student's way, gathers for longer.
    assert sent_to(fake_celery, "learning.open_learning") == [2]
    assert sent_to(fake_celery, "notification.send_sms") == []

    clock.now += BY_CONSUMER["notification.send_sms"].gather_s
    relay_once(container, fake_celery, in_flight)
    assert sent_to(fake_celery, "notification.send_sms") == [2]


def finals(container, count):
    """Orders completed with a final score: each raises OrderCompleted and
    FinalEvaluationRegistered, as the score chain's two steps do."""
    for order in orders(container, count):
        with container.evaluation_uow() as uow:
            evaluation = Evaluation.open(order.order_no, None, order.phone, order.course_no, None)
            uow.evaluations.add(evaluation)
            uow.commit()
        handlers.register_score(container.orders_uow(), order.order_no, 88)
        finalize_evaluation(container.evaluation_uow(), evaluation.id, 88)


class Clock:
    """The relay's clock, moved by hand: gathering windows without sleeping through them."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_after_final_scores_my_page_hears_in_a_moment_and_learnings_complete_later(
    container, fake_celery, monkeypatch
):
    clock = Clock()
    monkeypatch.setattr(relay_module, "time", clock)
    in_flight = InFlight(per_consumer=1, expire_s=60)
    finals(container, 1)
    relay_once(container, fake_celery, in_flight)
    everyone = {name for name, _, _ in fake_celery.sent}
    in_flight.heard(everyone, Counter(dict.fromkeys(everyone, 1)))  # all their tasks ended
    finals(container, 2)
    fake_celery.sent.clear()

    relay_once(container, fake_celery, in_flight)
    assert sent_to(fake_celery, "mypage.project") == []  # it gathers for a moment
    clock.now += BY_CONSUMER["mypage.project"].gather_s
    relay_once(container, fake_celery, in_flight)
    # Both orders' CourseOrdered and FinalEvaluationRegistered (OrderCompleted comes later).
    assert sent_to(fake_celery, "mypage.project") == [4]
    assert sent_to(fake_celery, "learning.complete_learning") == []  # off the student's way

    clock.now += BY_CONSUMER["learning.complete_learning"].gather_s
    relay_once(container, fake_celery, in_flight)
    assert sent_to(fake_celery, "learning.complete_learning") == [2]


def test_a_consumer_that_sent_a_full_batch_does_not_wait_to_gather(container, fake_celery):
    container.settings = dataclasses.replace(container.settings, relay_batch_max=1)
    in_flight = InFlight(per_consumer=1, expire_s=60)
    orders(container, 1)
    relay_once(container, fake_celery, in_flight)  # one event: a full batch of one
    in_flight.heard(ALL_THREE, Counter(dict.fromkeys(ALL_THREE, 1)))
    orders(container, 1)
    fake_celery.sent.clear()

    relay_once(container, fake_celery, in_flight)

    assert sent_to(fake_celery, "notification.send_sms") == [1]


def test_a_claim_takes_each_consumers_quota_and_pushes_only_what_it_took(container):
    mine = [o.order_no for o in orders(container, 5)]
    learning = "learning.open_learning"
    with container.main_session() as session:
        due = claim_due(session, 500, 0.2, {learning: 2, "mypage.project": 0})
        assert [(d.consumer, d.envelope["order_no"]) for d in due] == [
            (learning, mine[0]),
            (learning, mine[1]),
        ]
        assert due[0].envelope["event_type"] == "CourseOrdered"
        assert [d.envelope["order_no"] for d in claim_due(session, 500, 0.2, {learning: 9})] == (
            mine[2:]
        )
        time.sleep(0.25)
        # No consumer recorded them: published again, the next attempt twice as far out.
        assert [d.envelope["order_no"] for d in claim_due(session, 500, 0.2, {learning: 1})] == (
            mine[:1]
        )
        now = utcnow()
        rows = session.execute(
            select(Delivery.consumer, Delivery.published, Delivery.next_attempt_at)
            .join(OutboxEvent, OutboxEvent.event_id == Delivery.event_id)
            .where(OutboxEvent.order_no == mine[0])
        ).all()
        session.rollback()
    by_consumer = {consumer: (published, at - now) for consumer, published, at in rows}
    published, wait = by_consumer.pop(learning)
    assert published == 2 and timedelta(seconds=0.3) < wait <= timedelta(seconds=0.4)
    # The other consumers' copies were left as they were: due, never published.
    assert set(by_consumer) == ALL_THREE - {learning}
    assert all(p == 0 and w <= timedelta(0) for p, w in by_consumer.values())
