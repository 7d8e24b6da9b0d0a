"""What an operator reads: /metrics, correlation ids that follow a request, masked logs."""

import os
import time
import uuid

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

from app.consumer import consume
from app.evaluation.handlers import ScoreUnavailable
from app.evaluation.score_chain import CeleryScoreChain, make_breaker
from app.logging import _mask_phones
from app.policies import BY_CONSUMER
from app.shared.db.base import utcnow
from app.shared.outbox.tables import Delivery, OutboxEvent
from tests.conftest import REDIS_URL
from tests.helpers import course_body, order_body


def test_metrics_show_requests_backlog_dead_letters_and_my_page_lag(client):
    course = client.post("/courses", json=course_body()).json
    client.post("/orders", json=order_body(course["course_no"]))
    text = client.get("/metrics").get_data(as_text=True)
    assert 'onlinestudy_http_requests_total{endpoint="/orders",method="POST",status="201"}' in text
    assert 'onlinestudy_http_request_duration_seconds_bucket{endpoint="/orders"' in text
    # the order's three deliveries are not recorded yet (no workers in this test)
    assert 'onlinestudy_outbox_backlog{consumer="mypage.project"} 1.0' in text
    assert "onlinestudy_mypage_lag_seconds " in text
    assert "onlinestudy_outbox_oldest_undelivered_age_seconds " in text
    assert 'onlinestudy_queue_depth{queue="learning"}' in text


def test_metrics_count_dead_letters_and_the_backlog_by_consumer_and_leave_done_ones_out(
    client, container
):
    course = client.post("/courses", json=course_body()).json
    for _ in range(3):
        client.post("/orders", json=order_body(course["course_no"]))
    with container.main_session() as session:
        ids = session.execute(
            select(Delivery.id).where(Delivery.consumer == "learning.open_learning")
        ).scalars()
        dead, done, pending = sorted(ids)
        session.execute(update(Delivery).where(Delivery.id == dead).values(status="DEAD"))
        session.execute(
            update(Delivery).where(Delivery.id == done).values(status="DONE", done_at=utcnow())
        )
        session.commit()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'onlinestudy_dead_letters{consumer="learning.open_learning"} 1.0' in text
    assert 'onlinestudy_outbox_backlog{consumer="learning.open_learning"} 1.0' in text
    assert 'onlinestudy_outbox_backlog{consumer="mypage.project"} 3.0' in text
    assert 'onlinestudy_dead_letters{consumer="mypage.project"} 0.0' in text


def test_a_request_id_follows_the_order_into_the_events_it_causes(client, container):
    client.post("/managers", json={"name": "추적매니저", "phone": "010-4444-5555"})
    course = client.post("/courses", json=course_body()).json
    response = client.post(
        "/orders", json=order_body(course["course_no"]), headers={"X-Request-ID": "req-42"}
    )
    assert response.headers["X-Request-ID"] == "req-42"
    order_no = response.json["order_no"]
    with container.main_session() as session:
        [ordered] = (
            session.execute(select(OutboxEvent).where(OutboxEvent.order_no == order_no))
            .scalars()
            .all()
        )
    assert ordered.correlation_id == "req-42"
    consume(container, BY_CONSUMER["learning.open_learning"], [ordered.to_event().envelope()])
    with container.main_session() as session:
        started = session.execute(
            select(OutboxEvent).where(
                OutboxEvent.order_no == order_no, OutboxEvent.event_type == "LearningStarted"
            )
        ).scalar_one()
    assert started.correlation_id == "req-42"


def test_a_request_without_an_id_gets_one_and_a_hostile_one_is_replaced(client):
    generated = client.get("/health/live").headers["X-Request-ID"]
    assert len(generated) == 32
    for hostile in ("<script>alert(1)</script>", "x" * 65, "a b"):
        answered = client.get("/health/live", headers={"X-Request-ID": hostile})
        assert answered.headers["X-Request-ID"] != hostile


def test_phone_numbers_are_masked_in_logs():
    assert _mask_phones(None, None, {"phone": "010-1234-5678"})["phone"] == "010-****-5678"


def test_metrics_show_the_rows_and_the_oldest_age_of_each_bookkeeping_table(client, container):
    course = client.post("/courses", json=course_body()).json
    order_no = client.post("/orders", json=order_body(course["course_no"])).json["order_no"]
    with container.main_session() as session:
        [ordered] = session.execute(
            select(OutboxEvent).where(OutboxEvent.order_no == order_no)
        ).scalars()
    for consumer in ("learning.open_learning", "notification.send_sms"):
        consume(container, BY_CONSUMER[consumer], [ordered.to_event().envelope()])

    text = client.get("/metrics").get_data(as_text=True)
    gauges = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("onlinestudy_bookkeeping_")
    }
    for table in (
        "outbox_deliveries_done",
        "outbox_deliveries_pending",
        "processed_messages",
        "notification_processed_messages",
    ):
        assert gauges[f'onlinestudy_bookkeeping_rows{{table="{table}"}}'] >= 1, table
        assert gauges[f'onlinestudy_bookkeeping_oldest_age_seconds{{table="{table}"}}'] >= 0, table


def samples(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by name and labels."""
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_show_backlog_oldest_age_and_dead_letters_for_every_consumer(client):
    course = client.post("/courses", json=course_body()).json
    client.post("/orders", json=order_body(course["course_no"]))
    seen = samples(client)
    for consumer in BY_CONSUMER:
        labels = (("consumer", consumer),)
        assert seen[("onlinestudy_dead_letters", labels)] >= 0, consumer
        assert ("onlinestudy_outbox_backlog", labels) in seen, consumer
        assert ("onlinestudy_outbox_oldest_undelivered_age_seconds", labels) in seen, consumer
    # The order's own events wait for My page (no workers here): it has the oldest at least.
    mypage = (("consumer", "mypage.project"),)
    assert seen[("onlinestudy_outbox_backlog", mypage)] >= 1
    assert seen[("onlinestudy_outbox_oldest_undelivered_age_seconds", mypage)] > 0


def test_metrics_show_the_breaker_open_and_the_final_scores_it_refuses(
    client_with, container, it_settings
):
    namespace = f"test-breaker-{uuid.uuid4()}"
    chain = CeleryScoreChain(container.celery, it_settings, make_breaker(it_settings, namespace))
    container.__dict__["score_chain"] = chain  # the cached adapter, with a breaker of its own
    client = client_with()
    refused = ("onlinestudy_score_breaker_refusals_total", ())
    before = samples(client)
    assert before[("onlinestudy_score_breaker_open", ())] == 0
    try:
        chain.breaker.open()
        with pytest.raises(ScoreUnavailable):
            chain.run("O1", 1, 80)
        after = samples(client)
    finally:
        for key in redis.Redis.from_url(REDIS_URL).scan_iter(f"*{namespace}*"):
            redis.Redis.from_url(REDIS_URL).delete(key)
    assert after[("onlinestudy_score_breaker_open", ())] == 1
    assert after[refused] == before.get(refused, 0) + 1


def test_metrics_show_how_old_each_heartbeat_is(client, it_settings):
    stalled = it_settings.heartbeats_dir / "worker-stalled@test"
    stalled.parent.mkdir(parents=True, exist_ok=True)
    stalled.touch()
    minutes_ago = time.time() - 120
    os.utime(stalled, (minutes_ago, minutes_ago))
    try:
        age = samples(client)[("onlinestudy_heartbeat_age_seconds", (("process", stalled.name),))]
    finally:
        stalled.unlink()
    assert 120 <= age < 180
    assert not any(name == "onlinestudy_heartbeat_age_seconds" for name, _ in samples(client))


def http_series(client) -> set[str]:
    """The label sets of the HTTP metrics /metrics shows (their values left out)."""
    text = client.get("/metrics").get_data(as_text=True)
    return {
        line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith("onlinestudy_http")
    }


def test_made_up_http_methods_do_not_grow_the_metrics(client):
    anonymous = client.application.test_client()
    anonymous.open("/courses", method="MADEUP")
    before = http_series(anonymous)

    for n in range(70):
        assert anonymous.open(f"/x{n}", method=f"M{n:02d}X").status_code in (401, 429)
    after = http_series(anonymous)

    assert after - before <= {s for s in after if "/metrics" in s}  # the scrapes themselves
    assert not any("M42X" in series or 'method="MADEUP"' in series for series in after)
    assert any('method="other"' in series for series in after)
