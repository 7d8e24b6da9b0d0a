"""The benchmark's history preload writes what the system would have written: for each order,
its learning and evaluation as its story left them, its events in per-order sequence, one DONE
delivery and one processed record per subscribed consumer, one SMS per message event, and the
My page row that folding its events gives."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.evaluation.model import Evaluation, EvaluationRecord
from app.learning.model import Learning, Manager
from app.migrate import upgrade
from app.mypage.model import MyPageRow
from app.mypage.projection import apply, new_row
from app.notification.model import SmsMessage
from app.notification.templates import render
from app.orders.model import Order
from app.policies import BY_CONSUMER, subscribers
from app.shared.db.engine import make_engine
from app.shared.idempotency import PROCESSED
from app.shared.outbox.tables import Delivery, DeliveryStatus, OrderSequence, OutboxEvent
from app.shared.phone import normalize_mobile
from app.shared.retention import prune_before
from app.shared.states import EvaluationStatus, LearningStatus, OrderStatus, SmsStatus
from bench import history
from tests.conftest import REDIS_URL, drop_database, fresh_database

ORDERS = 200
# Of a year of history, the last 60 days keep their deliveries and processed records.
WINDOW_S = 60 * 86400.0
STORIES = {
    OrderStatus.COMPLETED: (LearningStatus.COMPLETED, EvaluationStatus.FINAL),
    OrderStatus.CANCELLED: (LearningStatus.CANCELLED, EvaluationStatus.CANCELLED),
    OrderStatus.ORDERED: (LearningStatus.STARTED, EvaluationStatus.IN_PROGRESS),
}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Fresh databases with ORDERS orders of history: the preload's result, a session on each
    database, and their URLs."""
    urls = (
        fresh_database("onlinestudy_it_history"),
        fresh_database("onlinestudy_it_history_notification"),
    )
    settings = Settings.from_env(
        {
            "DATABASE_URL": urls[0],
            "NOTIFICATION_DATABASE_URL": urls[1],
            "CELERY_BROKER_URL": REDIS_URL,
            "CELERY_RESULT_BACKEND": REDIS_URL,
            "ONLINESTUDY_VAR_DIR": str(tmp_path_factory.mktemp("var")),
            "JWT_SECRET": "integration-tests-secret-0123456789abcdef-0123456789abcdef-0123",
        }
    )
    upgrade(settings)
    schema_before = [_schema(url) for url in urls]
    now = datetime.now(UTC)
    result = history.preload(*urls, ORDERS, now=now, log=lambda _m: None, dedup_window_s=WINDOW_S)
    assert [_schema(url) for url in urls] == schema_before  # indexes dropped, then made again
    engines = [
        make_engine(url) for url in (settings.database_url, settings.notification_database_url)
    ]
    try:
        with Session(engines[0]) as main, Session(engines[1]) as notification:
            yield result, main, notification, urls, now
    finally:
        for engine in engines:
            engine.dispose()
        for url in urls:
            drop_database(url)


def _schema(url: str) -> set[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        indexes = conn.execute(
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        ).fetchall()
        constraints = conn.execute(
            "SELECT conrelid::regclass::text, conname || ' ' || pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
        ).fetchall()
    return set(indexes) | set(constraints)


def _all(session: Session, model) -> list:
    return list(session.scalars(select(model)))


def _events(session: Session) -> dict[str, list]:
    by_order = defaultdict(list)
    for row in session.scalars(select(OutboxEvent).order_by(OutboxEvent.sequence)):
        by_order[row.order_no].append(row.to_event())
    return by_order


def test_given_a_preloaded_history_then_each_order_has_its_learning_and_evaluation(loaded):
    _result, main, _notification, _urls, _now = loaded
    orders = {o.order_no: o for o in _all(main, Order)}
    learnings = {x.order_no: x for x in _all(main, Learning)}
    evaluations = {x.order_no: x for x in _all(main, Evaluation)}
    records = Counter(r.evaluation_id for r in _all(main, EvaluationRecord))
    events = _events(main)

    assert len(orders) == ORDERS
    statuses = Counter(o.status for o in orders.values())
    assert statuses == {
        OrderStatus.COMPLETED: ORDERS // 2,
        OrderStatus.CANCELLED: ORDERS // 4,
        OrderStatus.ORDERED: ORDERS // 4,
    }
    for order_no, order in orders.items():
        learning, evaluation = learnings[order_no], evaluations[order_no]
        assert (learning.status, evaluation.status) == STORIES[order.status]
        assert evaluation.learning_id == learning.id
        assert evaluation.final_score == order.score
        assert (order.score is not None) == (order.status == OrderStatus.COMPLETED)
        recorded = [e for e in events[order_no] if e.event_type == "EvaluationRecorded"]
        assert records[evaluation.id] == len(recorded)
        assert normalize_mobile(order.phone) == order.phone
    # Each manager's STARTED count is what the least-loaded choice reads.
    started = Counter(x.manager_id for x in learnings.values() if x.status == "STARTED")
    for manager in _all(main, Manager):
        assert manager.started_count == started[manager.id]


def test_given_a_preloaded_history_then_sequences_deliveries_and_records_match(loaded):
    """Every event in per-order sequence; the events the window still holds (those the
    retention sweep has not deleted) have one DONE delivery and one processed record per
    subscribed consumer, older ones neither."""
    _result, main, notification, _urls, now = loaded
    events = _events(main)
    last = {s.order_no: s.last_sequence for s in _all(main, OrderSequence)}
    deliveries = defaultdict(set)
    for d in _all(main, Delivery):
        assert d.status == DeliveryStatus.DONE
        deliveries[d.event_id].add(d.consumer)
    processed = set(
        main.execute(select(PROCESSED["main"].c.consumer, PROCESSED["main"].c.event_id))
    )
    table = PROCESSED["notification"]
    processed |= set(notification.execute(select(table.c.consumer, table.c.event_id)))
    kept_since = prune_before(WINDOW_S, now)

    assert len(events) == ORDERS == len(last)
    in_window = 0
    for order_no, order_events in events.items():
        assert [e.sequence for e in order_events] == list(range(1, last[order_no] + 1))
        times = [e.occurred_at for e in order_events]
        assert times == sorted(times) and times[-1] < datetime.now(UTC)
        for event in order_events:
            assert uuid.UUID(event.event_id).version == 7  # time-ordered, as the app's
            kept = event.occurred_at >= kept_since
            in_window += kept
            expected = set(subscribers(event.event_type)) if kept else set()
            assert deliveries[event.event_id] == expected
            for consumer in subscribers(event.event_type):
                assert ((consumer, event.event_id) in processed) == kept
    # About 60 of 365 days: both kinds of events are there.
    assert 0 < in_window < sum(len(e) for e in events.values())
    assert len(processed) == sum(len(c) for c in deliveries.values())
    assert {BY_CONSUMER[c].bind for c, _e in processed} == {"main", "notification"}


def test_given_a_preloaded_history_then_my_page_is_the_fold_of_the_events(loaded):
    _result, main, _notification, _urls, _now = loaded
    rows = {r.order_no: r for r in _all(main, MyPageRow)}
    columns = [c.name for c in MyPageRow.__table__.c]

    for order_no, order_events in _events(main).items():
        folded = new_row(order_no, order_events[0].payload["phone"])
        for event in order_events:
            apply(folded, event)
        stored = rows.pop(order_no)
        assert {c: getattr(stored, c) for c in columns} == {c: getattr(folded, c) for c in columns}
    assert rows == {}


def test_given_a_preloaded_history_then_each_message_event_sent_one_sms(loaded):
    _result, main, notification, _urls, _now = loaded
    sent = {(m.event_id, m.phone): m for m in _all(notification, SmsMessage)}
    expected = 0
    for order_events in _events(main).values():
        for event in order_events:
            text = render(event)
            if text is None:
                continue
            expected += 1
            message = sent[event.event_id, event.payload["phone"]]
            assert message.message == text
            assert message.status == SmsStatus.SENT
            assert message.provider_message_id == message.idempotency_key
    assert len(sent) == expected


def test_given_history_loaded_once_then_loading_it_again_is_refused(loaded):
    *_sessions, urls, _now = loaded
    with pytest.raises(RuntimeError, match="already loaded"):
        history.preload(*urls, 10, log=lambda _m: None)
