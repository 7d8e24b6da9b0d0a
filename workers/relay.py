"""The outbox relay: publishes due deliveries to their consumers' queues, batched per consumer.

Woken by PostgreSQL NOTIFY at each commit that wrote events, and at the end of each consumer
task; on SQLite it polls. Each pass also sweeps redeliveries that came due.

Batches form by counting tasks in flight: a consumer has at most RELAY_INFLIGHT_TASKS published
and unfinished tasks. While they run, its next events wait in the outbox, and the task that
frees a slot takes all of them (up to RELAY_BATCH_MAX): idle, an event travels alone and at
once; under load, batches grow with the backlog.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict, deque

import structlog
from celery import Celery

from app.bootstrap import Container
from app.policies import BY_CONSUMER
from app.shared.outbox import NOTIFY_CHANNEL, TASK_DONE, claim_due

log = structlog.get_logger(__name__)

CLAIM_LIMIT = 500
SWEEP_INTERVAL_S = 1.0


class InFlight:
    """The relay's count of the tasks it published that have not told it they ended. A slot
    whose task never tells (its worker was killed) is freed after `expire_s`, so a lost
    notification only costs a moment; the outbox redelivers the task's events anyway."""

    def __init__(self, per_consumer: int, expire_s: float):
        self.per_consumer = per_consumer
        self.expire_s = expire_s
        self._started: dict[str, deque[float]] = defaultdict(deque)

    def quotas(self, batch_max: int) -> dict[str, int]:
        """How many deliveries each consumer may be sent now."""
        now = time.monotonic()
        quotas = {}
        for consumer in BY_CONSUMER:
            started = self._started[consumer]
            while started and now - started[0] > self.expire_s:
                started.popleft()
            quotas[consumer] = (self.per_consumer - len(started)) * batch_max
        return quotas

    def published(self, consumer: str, tasks: int) -> None:
        self._started[consumer].extend([time.monotonic()] * tasks)

    def ended(self, counts: Counter[str]) -> None:
        for consumer, n in counts.items():
            started = self._started.get(consumer)
            for _ in range(min(n, len(started or ()))):
                started.popleft()


def relay_once(container: Container, celery: Celery, in_flight: InFlight | None = None) -> int:
    """Publish what is due now; returns how many deliveries were published."""
    settings = container.settings
    size = settings.relay_batch_max
    with container.main_session() as session:
        quotas = in_flight.quotas(size) if in_flight else None
        if quotas is not None and not any(n > 0 for n in quotas.values()):
            return 0
        due = claim_due(session, CLAIM_LIMIT, settings.redelivery_timeout_s, quotas)
        if not due:
            session.rollback()
            return 0
        by_consumer: dict[str, list[dict]] = defaultdict(list)
        for delivery in due:
            by_consumer[delivery.consumer].append(delivery.envelope)
        with celery.producer_or_acquire() as producer:
            for consumer, envelopes in by_consumer.items():
                policy = BY_CONSUMER[consumer]
                batches = [envelopes[i : i + size] for i in range(0, len(envelopes), size)]
                for batch in batches:
                    celery.send_task(
                        consumer,
                        kwargs={"events": batch},
                        queue=policy.queue.value,
                        producer=producer,
                    )
                if in_flight:
                    in_flight.published(consumer, len(batches))
        session.commit()
    log.debug("relay.published", deliveries=len(due), consumers=len(by_consumer))
    return len(due)


class Waker:
    """Waits for a NOTIFY from PostgreSQL (new events, or a task that ended), or just sleeps
    on SQLite."""

    def __init__(self, container: Container):
        self.settings = container.settings
        self._conn = None
        url = container.db.engine("main").url
        if url.get_backend_name() == "postgresql":
            import psycopg

            self._conn = psycopg.connect(
                url.set(drivername="postgresql").render_as_string(hide_password=False),
                autocommit=True,
            )
            self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")

    @property
    def hears_tasks_end(self) -> bool:
        return self._conn is not None

    def wait(self, block: bool) -> Counter[str]:
        """Every notification already there (after waiting for one if `block`); returns how
        many tasks of each consumer said they ended."""
        ended: Counter[str] = Counter()
        if self._conn is None:
            if block:
                time.sleep(self.settings.relay_poll_interval_s)
            return ended
        notifies = (
            self._conn.notifies(timeout=SWEEP_INTERVAL_S, stop_after=1)
            if block
            else self._conn.notifies(timeout=0)
        )
        for notify in notifies:
            if notify.payload.startswith(TASK_DONE):
                ended[notify.payload[len(TASK_DONE) :]] += 1
        if block:  # then take the rest that came with it
            ended.update(self.wait(block=False))
        return ended

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def run_relay(container: Container, celery: Celery, stop: threading.Event, heartbeat=None) -> None:
    log.info("relay.start", database=container.db.engine("main").url.get_backend_name())
    settings = container.settings
    waker = in_flight = None
    published = None  # a first pass at once: there may be a backlog
    while not stop.is_set():
        try:
            if waker is None:
                waker = Waker(container)
                # Without task-end notifications (SQLite) nothing is counted in flight: the
                # polling interval gathers the batches there.
                in_flight = (
                    InFlight(settings.relay_inflight_tasks, settings.relay_inflight_expire_s)
                    if waker.hears_tasks_end
                    else None
                )
            ended = waker.wait(block=published == 0)
            if in_flight:
                in_flight.ended(ended)
            published = relay_once(container, celery, in_flight)
            if heartbeat:
                heartbeat()
        except Exception as exc:  # noqa: BLE001 - the relay must outlive database/broker outages
            log.warning("relay.error", error=f"{exc.__class__.__name__}: {exc}")
            if waker is not None:
                waker.close()
                waker = None
            published = None
            stop.wait(1.0)
    if waker is not None:
        waker.close()
    log.info("relay.stop")
