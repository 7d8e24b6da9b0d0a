"""Prometheus metrics: HTTP requests, Celery tasks, and the pipeline's state read at scrape time.

Counters and histograms of several processes (gunicorn workers, Celery pool children) are summed
through PROMETHEUS_MULTIPROC_DIR when it is set: `onlinestudy run` sets it for everything it
starts, so the API's /metrics shows the whole embedded system.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from celery import Celery
from flask import Flask, Response, g, request
from kombu.exceptions import ChannelError, OperationalError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.shared.credentials import bearer_token, same_secret
from app.shared.outbox.tables import Delivery, DeliveryStatus, has_status, pending
from app.shared.queues import Queue
from app.shared.retention import extents
from app.shared.tracing import set_attributes as set_span_attributes
from app.shared.uow import correlation_id

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
PRUNED_ROWS = Counter(
    "onlinestudy_bookkeeping_pruned_rows_total",
    "Bookkeeping rows deleted by the retention sweep, older than DEDUP_WINDOW",
    ["table"],
)
SCORE_BREAKER_REFUSALS = Counter(
    "onlinestudy_score_breaker_refusals_total",
    "Final scores refused at once because the orders side's breaker is open",
)
TASK_LATENCY = Histogram(
    "onlinestudy_task_duration_seconds",
    "Celery task run time",
    ["task", "queue"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30),
)


# The methods that get a series of their own; any other (a client may send any token as a
# method) counts as "other", so that made-up methods cannot grow /metrics without bound.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in HTTP_METHODS else "other"


class HeartbeatCollector:
    """The age of each heartbeat file this process can see (the relay's, each worker's), as
    `onlinestudy health relay|worker` reads them; a process that stopped cleanly removes its
    own, one that was killed or stalled leaves it to age."""

    def __init__(self, files: Callable[[], Iterable[Path]]):
        self.files = files

    def collect(self) -> Iterator[Metric]:
        ages = GaugeMetricFamily(
            "onlinestudy_heartbeat_age_seconds",
            "Seconds since a process last proved it works (relay pass, worker canary consumed)",
            labels=["process"],
        )
        now = time.time()
        for path in self.files():
            with contextlib.suppress(FileNotFoundError):  # a clean stop removed it just now
                ages.add_metric([path.name.removesuffix(".heartbeat")], now - path.stat().st_mtime)
        yield ages


class PipelineCollector:
    """Gauges read from the outbox, the bookkeeping of both databases, the broker and the
    final score's breaker at each scrape (cheap indexed queries)."""

    def __init__(
        self,
        session_for: Callable[[str], Session],
        celery: Celery,
        consumers: Sequence[str] = (),
        breaker_state: Callable[[], str] | None = None,
    ):
        self.session_for = session_for
        self.celery = celery
        self.consumers = consumers  # reported at 0 when nothing of theirs waits
        self.breaker_state = breaker_state

    def collect(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "onlinestudy_outbox_backlog",
            "Events not yet recorded by a consumer",
            labels=["consumer"],
        )
        oldest = GaugeMetricFamily(
            "onlinestudy_outbox_oldest_undelivered_age_seconds",
            "Age of the oldest event a consumer has not recorded (0 when none waits)",
            labels=["consumer"],
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
        with self.session_for("main") as session:
            # One query per partial index (PENDING by consumer, DEAD by consumer): the DONE
            # rows, nearly all of the table, are never read.
            pending_rows = session.execute(
                select(Delivery.consumer, func.count(), func.min(Delivery.created_at))
                .where(pending(Delivery.status))
                .group_by(Delivery.consumer)
            ).all()
            dead_rows = session.execute(
                select(Delivery.consumer, func.count())
                .where(has_status(Delivery.status, DeliveryStatus.DEAD))
                .group_by(Delivery.consumer)
            ).all()
        waiting: dict[str, int] = dict.fromkeys(self.consumers, 0)
        parked: dict[str, int] = dict.fromkeys(self.consumers, 0)
        oldest_at: dict[str, float] = {}
        for consumer, count, created_at in pending_rows:
            waiting[consumer] = count
            if created_at is not None:
                oldest_at[consumer] = created_at.timestamp()
        for consumer, count in dead_rows:
            parked[consumer] = count
        for consumer, count in waiting.items():
            backlog.add_metric([consumer], count)
            age = now - oldest_at[consumer] if consumer in oldest_at else 0.0
            oldest.add_metric([consumer], max(0.0, age))
        for consumer, count in parked.items():
            dead.add_metric([consumer], count)
        lag.add_metric(
            [], now - oldest_at["mypage.project"] if "mypage.project" in oldest_at else 0.0
        )
        yield from (backlog, oldest, dead, lag)
        yield from self._bookkeeping(now)
        yield self._queue_depths()
        if self.breaker_state is not None:
            yield self._breaker(self.breaker_state)

    def _breaker(self, state: Callable[[], str]) -> GaugeMetricFamily:
        is_open = GaugeMetricFamily(
            "onlinestudy_score_breaker_open",
            "1 while the final score's breaker is open (shared by the API processes on Redis): "
            "final scores fail at once until one tries again after its reset time",
        )
        # pybreaker answers its fallback state (closed) when Redis does not answer.
        is_open.add_metric([], 1.0 if state() == "open" else 0.0)
        return is_open

    def _bookkeeping(self, now: float) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        rows = GaugeMetricFamily(
            "onlinestudy_bookkeeping_rows",
            "Rows of a bookkeeping table (deliveries DONE or PENDING, processed-messages records)",
            labels=["table"],
        )
        oldest = GaugeMetricFamily(
            "onlinestudy_bookkeeping_oldest_age_seconds",
            "Age of the oldest row of a bookkeeping table (0 when empty); DEDUP_WINDOW bounds "
            "it for all but PENDING deliveries",
            labels=["table"],
        )
        for extent in extents(self.session_for):
            rows.add_metric([extent.name], extent.rows)
            age = now - extent.oldest.timestamp() if extent.oldest is not None else 0.0
            oldest.add_metric([extent.name], max(0.0, age))
        return rows, oldest

    def _queue_depths(self) -> GaugeMetricFamily:
        depth = GaugeMetricFamily(
            "onlinestudy_queue_depth", "Messages waiting in a queue", labels=["queue"]
        )
        try:
            with self.celery.connection_for_read() as connection:
                for queue in Queue:
                    channel = connection.channel()  # a failed passive declare closes it (AMQP)
                    try:
                        # kombu's stubs give the channel base class, without the transports'
                        # queue_declare and close.
                        declared = channel.queue_declare(  # type: ignore[attr-defined]
                            queue=queue.value, passive=True
                        )
                        count = declared.message_count
                    except ChannelError:
                        count = 0  # never declared: nothing is waiting
                    finally:
                        channel.close()  # type: ignore[attr-defined]
                    depth.add_metric([queue.value], count)
        except (OperationalError, OSError):
            pass  # broker down: no depth rather than no metrics at all
        return depth


def metrics_response(
    *collectors: PipelineCollector | HeartbeatCollector,
) -> tuple[bytes, int, dict[str, str]]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        # prometheus_client leaves this constructor unannotated.
        multiprocess.MultiProcessCollector(processes)  # type: ignore[no-untyped-call]
    else:
        processes = REGISTRY
    pipeline = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        pipeline.register(collector)
    # The text format is a list of families: two registries' outputs concatenate.
    body = generate_latest(processes) + generate_latest(pipeline)
    return body, 200, {"Content-Type": CONTENT_TYPE_LATEST}


def install(
    app: Flask,
    pipeline: PipelineCollector,
    heartbeats: HeartbeatCollector,
    metrics_token: str | None,
) -> None:
    """Per request: a correlation id (X-Request-ID in, or a new one) and the HTTP metrics;
    /metrics, with the pipeline's gauges and the heartbeats read at each scrape."""
    valid_id = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if valid_id.match(incoming) else uuid.uuid4().hex
        g.correlation_token = correlation_id.set(g.request_id)
        set_span_attributes({"onlinestudy.correlation_id": g.request_id})  # find it by X-Request-ID
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        method = method_label(request.method)
        HTTP_REQUESTS.labels(method, endpoint, str(response.status_code)).inc()
        if "started" in g:
            HTTP_LATENCY.labels(method, endpoint).observe(time.perf_counter() - g.started)
        if "request_id" in g:
            response.headers["X-Request-ID"] = g.request_id
        return response

    @app.teardown_request
    def _forget(_exc: BaseException | None) -> None:
        if "correlation_token" in g:
            correlation_id.reset(g.pop("correlation_token"))

    @app.get("/metrics")
    def metrics() -> Response:
        given = bearer_token(request.headers.get("Authorization", ""))
        if metrics_token and not same_secret(given, metrics_token):
            return Response(
                "metrics need METRICS_TOKEN\n", status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        body, status, headers = metrics_response(pipeline, heartbeats)
        return Response(body, status=status, headers=headers)


def record_task(task_name: str, queue: str, outcome: str, seconds: float | None) -> None:
    TASKS.labels(task_name, queue, outcome).inc()
    if seconds is not None:
        TASK_LATENCY.labels(task_name, queue).observe(seconds)
