"""The relay publishes committed events, batches them per consumer, and redelivers (SPEC 5.3)."""

import dataclasses
import time
from datetime import date

from app.orders import handlers
from app.policies import BY_CONSUMER
from app.shared.consumer import consume
from tests.helpers import random_course_no, random_phone
from workers.relay import relay_once


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
