"""Prometheus metrics: HTTP requests, Celery tasks, and the pipeline's state read at scrape time.

Counters and histograms of several processes (gunicorn workers, Celery pool children) are summed
through PROMETHEUS_MULTIPROC_DIR when it is set: `onlinestudy run` sets it for everything it
starts, so the API's /metrics shows the whole embedded system.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

HTTP_REQUESTS = Counter(
    "onlinestudy_http_requests_total", "HTTP requests answered", ["method", "endpoint", "status"]
)
HTTP_LATENCY = Histogram(
    "onlinestudy_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
TASKS = Counter(
    "onlinestudy_tasks_total", "Celery tasks finished, by outcome", ["task", "queue", "outcome"]
)
EVENTS = Counter(
    "onlinestudy_events_total", "Events handled by consumers, by outcome", ["consumer", "outcome"]
)
TASK_LATENCY = Histogram(
    "onlinestudy_task_duration_seconds",
    "Celery task run time",
    ["task", "queue"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30),
)


class PipelineCollector:
    """Gauges read from the outbox and the broker at each scrape (cheap indexed queries)."""

    def __init__(self, container):
        self.container = container

    def collect(self):
        from sqlalchemy import func, select

        from app.shared.outbox.tables import Delivery, DeliveryStatus

        backlog = GaugeMetricFamily(
            "onlinestudy_outbox_backlog",
            "Events not yet recorded by a consumer",
            labels=["consumer"],
        )
        oldest = GaugeMetricFamily(
            "onlinestudy_outbox_oldest_undelivered_age_seconds",
            "Age of the oldest event a consumer has not recorded",
        )
        dead = GaugeMetricFamily(
            "onlinestudy_dead_letters",
            "Deliveries parked after too many failures",
            labels=["consumer"],
        )
        lag = GaugeMetricFamily(
            "onlinestudy_mypage_lag_seconds",
            "How far My page is behind: age of its oldest pending event",
        )
        now = time.time()
        with self.container.main_session() as session:
            rows = session.execute(
                select(
                    Delivery.consumer,
                    Delivery.status,
                    func.count(Delivery.id),
                    func.min(Delivery.created_at),
                )
                .where(Delivery.status != DeliveryStatus.DONE)
                .group_by(Delivery.consumer, Delivery.status)
            ).all()
        oldest_at = {}
        for consumer, status, count, created_at in rows:
            family = backlog if status == DeliveryStatus.PENDING else dead
            family.add_metric([consumer], count)
            if status == DeliveryStatus.PENDING and created_at is not None:
                oldest_at[consumer] = created_at.timestamp()
        oldest.add_metric([], now - min(oldest_at.values()) if oldest_at else 0.0)
        lag.add_metric(
            [], now - oldest_at["mypage.project"] if "mypage.project" in oldest_at else 0.0
        )
        yield from (backlog, oldest, dead, lag)
        yield self._queue_depths()

    def _queue_depths(self):
        from kombu.exceptions import ChannelError, OperationalError

        from app.shared.queues import Queue
        from workers.celery_app import app as celery

        depth = GaugeMetricFamily(
            "onlinestudy_queue_depth", "Messages waiting in a queue", labels=["queue"]
        )
        try:
            with celery.connection_for_read() as connection:
                for queue in Queue:
                    channel = connection.channel()  # a failed passive declare closes it (AMQP)
                    try:
                        count = channel.queue_declare(queue=queue.value, passive=True).message_count
                    except ChannelError:
                        count = 0  # never declared: nothing is waiting
                    finally:
                        channel.close()
                    depth.add_metric([queue.value], count)
        except (OperationalError, OSError):
            pass  # broker down: no depth rather than no metrics at all
        return depth


def metrics_response(container) -> tuple[bytes, int, dict]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes)
    else:
        processes = REGISTRY
    pipeline = CollectorRegistry(auto_describe=False)
    pipeline.register(PipelineCollector(container))
    # The text format is a list of families: two registries' outputs concatenate.
    body = generate_latest(processes) + generate_latest(pipeline)
    return body, 200, {"Content-Type": CONTENT_TYPE_LATEST}


def install(app, container) -> None:
    """Per request: a correlation id (X-Request-ID in, or a new one) and the HTTP metrics."""
    import re
    import uuid

    from flask import Response, g, request

    from app.shared.uow import correlation_id

    valid_id = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

    @app.before_request
    def _start():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if valid_id.match(incoming) else uuid.uuid4().hex
        g.correlation_token = correlation_id.set(g.request_id)
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response):
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        HTTP_REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
        if "started" in g:
            HTTP_LATENCY.labels(request.method, endpoint).observe(time.perf_counter() - g.started)
        if "request_id" in g:
            response.headers["X-Request-ID"] = g.request_id
        return response

    @app.teardown_request
    def _forget(_exc):
        if "correlation_token" in g:
            correlation_id.reset(g.pop("correlation_token"))

    @app.get("/metrics")
    def metrics():
        token = container.settings.metrics_token
        if token and request.headers.get("Authorization") != f"Bearer {token}":
            return Response(
                "metrics need METRICS_TOKEN\n", status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        body, status, headers = metrics_response(container)
        return Response(body, status=status, headers=headers)


def record_task(task_name: str, queue: str, outcome: str, seconds: float | None) -> None:
    TASKS.labels(task_name, queue, outcome).inc()
    if seconds is not None:
        TASK_LATENCY.labels(task_name, queue).observe(seconds)
