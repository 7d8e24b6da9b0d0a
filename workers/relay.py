"""The outbox relay: publishes due deliveries to their consumers' queues, batched per consumer.

Woken by PostgreSQL NOTIFY at each commit that wrote events (tens of milliseconds from commit
to consumer); on SQLite it polls. Each pass also sweeps redeliveries that came due.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import structlog
from celery import Celery

from app.bootstrap import Container
from app.policies import BY_CONSUMER
from app.shared.outbox import NOTIFY_CHANNEL, claim_due

log = structlog.get_logger(__name__)

CLAIM_LIMIT = 500
SWEEP_INTERVAL_S = 1.0


def relay_once(container: Container, celery: Celery) -> int:
    """Publish what is due now; returns how many deliveries were published."""
    settings = container.settings
    with container.main_session() as session:
        due = claim_due(session, CLAIM_LIMIT, settings.redelivery_timeout_s)
        if not due:
            session.rollback()
            return 0
        by_consumer: dict[str, list[dict]] = defaultdict(list)
        for delivery in due:
            by_consumer[delivery.consumer].append(delivery.envelope)
        # Batches grow with the backlog: idle, each event travels alone; behind, up to
        # RELAY_BATCH_MAX events share one task.
        with celery.producer_or_acquire() as producer:
            for consumer, envelopes in by_consumer.items():
                policy = BY_CONSUMER[consumer]
                size = settings.relay_batch_max
                for start in range(0, len(envelopes), size):
                    celery.send_task(
                        consumer,
                        kwargs={"events": envelopes[start : start + size]},
                        queue=policy.queue.value,
                        producer=producer,
                    )
        session.commit()
    log.debug("relay.published", deliveries=len(due), consumers=len(by_consumer))
    return len(due)


class _Waker:
    """Waits for a NOTIFY from PostgreSQL, or just sleeps on SQLite."""

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

    def wait(self) -> None:
        if self._conn is None:
            time.sleep(self.settings.relay_poll_interval_s)
            return
        # Drain every notification that is already there; one pass serves them all.
        for _ in self._conn.notifies(timeout=SWEEP_INTERVAL_S, stop_after=1):
            pass

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def run_relay(container: Container, celery: Celery, stop: threading.Event, heartbeat=None) -> None:
    log.info("relay.start", database=container.db.engine("main").url.get_backend_name())
    waker = None
    while not stop.is_set():
        try:
            if waker is None:
                waker = _Waker(container)
            published = relay_once(container, celery)
            if heartbeat:
                heartbeat()
            if published == 0:
                waker.wait()
            elif published < CLAIM_LIMIT:
                # Busy: let the next events gather for a moment, so that they travel in
                # batches (one task, one transaction for many). Idle, the first event of a
                # burst still goes at once, on its NOTIFY.
                stop.wait(container.settings.relay_coalesce_s)
        except Exception as exc:  # noqa: BLE001 - the relay must outlive database/broker outages
            log.warning("relay.error", error=f"{exc.__class__.__name__}: {exc}")
            if waker is not None:
                waker.close()
                waker = None
            stop.wait(1.0)
    if waker is not None:
        waker.close()
    log.info("relay.stop")
