"""The outbox relay: publishes due deliveries to their consumers' queues, batched per consumer.

Woken by PostgreSQL NOTIFY at each commit that wrote events, and at the end of each consumer
task; on SQLite it polls. Each pass also sweeps redeliveries that came due. Beside it, a thread
deletes the bookkeeping older than the deduplication window (workers.retention).

Batches form by counting tasks in flight: a consumer has at most RELAY_INFLIGHT_TASKS published
and unfinished tasks. While they run, its next events wait in the outbox, and the task that
frees a slot takes all of them (up to RELAY_BATCH_MAX): idle, an event travels alone and at
once; under load, batches grow with the backlog.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter, defaultdict, deque

import structlog
from celery import Celery

from app.bootstrap import bootstrap
from app.container import Container
from app.logging import configure_logging
from app.policies import BY_CONSUMER
from app.process import freeze_startup_heap
from app.shared.outbox.claim import claim_due
from app.shared.outbox.notices import NEW_WORK, NOTIFY_CHANNEL, TASK_DONE
from app.shared.tracing import publishing
from app.tracing import install as install_tracing
from app.tracing import shutdown as shutdown_tracing
from workers.retention import start_sweeper

log = structlog.get_logger(__name__)

CLAIM_LIMIT = 500
SWEEP_INTERVAL_S = 1.0


class InFlight:
    """What the relay knows without asking the database: the tasks it published that have not
    told it they ended, and which consumers may have due deliveries.

    A slot whose task never tells (its worker was killed) is freed after `expire_s`, so a lost
    notification only costs a moment; the outbox redelivers the task's events anyway. A
    consumer is looked for when a commit names it, while its last claim filled its quota, and
    at every sweep (redeliveries and retries come due without a NOTIFY)."""

    def __init__(self, per_consumer: int, expire_s: float, sweep_s: float = SWEEP_INTERVAL_S):
        self.per_consumer = per_consumer
        self.expire_s = expire_s
        self.sweep_s = sweep_s
        self._started: dict[str, deque[float]] = defaultdict(deque)
        self._may_have_work: set[str] = set(BY_CONSUMER)
        self._swept_at = time.monotonic()
        self._gather = {c: p.gather_s for c, p in BY_CONSUMER.items() if p.gather_s > 0}
        self._last_published: dict[str, float] = {}

    def heard(self, new_work: set[str], ended: Counter[str]) -> None:
        self._may_have_work |= new_work
        for consumer, n in ended.items():
            started = self._started.get(consumer)
            for _ in range(min(n, len(started or ()))):
                started.popleft()

    def quotas(self, batch_max: int) -> dict[str, int]:
        """How many deliveries to claim for each consumer now (only those worth a look)."""
        now = time.monotonic()
        if now - self._swept_at >= self.sweep_s:
            self._may_have_work = set(BY_CONSUMER)
            self._swept_at = now
        quotas = {}
        for consumer in self._may_have_work:
            if now < self._gathering_until(consumer):
                continue  # its next batch goes a moment later, larger
            started = self._started[consumer]
            while started and now - started[0] > self.expire_s:
                started.popleft()
            free = self.per_consumer - len(started)
            if free > 0:
                quotas[consumer] = free * batch_max
        return quotas

    def claimed(self, quotas: dict[str, int], counts: Counter[str]) -> None:
        """After a claim: a consumer that got less than its quota has nothing more due."""
        for consumer, quota in quotas.items():
            if counts[consumer] < quota:
                self._may_have_work.discard(consumer)

    def _gathering_until(self, consumer: str) -> float:
        """When the consumer's next partial batch may go (in the past: now)."""
        return self._last_published.get(consumer, 0.0) + self._gather.get(consumer, 0.0)

    def published(self, consumer: str, tasks: int, full: bool = False) -> None:
        """`full`: it sent whole batches, so its backlog does not wait to gather the next."""
        now = time.monotonic()
        self._started[consumer].extend([now] * tasks)
        if full:
            self._last_published.pop(consumer, None)
        else:
            self._last_published[consumer] = now

    def wake_in(self) -> float:
        """How long the relay may sleep before a gathering consumer's batch is due."""
        now = time.monotonic()
        waits = [
            until - now
            for c in self._gather
            if c in self._may_have_work and (until := self._gathering_until(c)) > now
        ]
        return max(0.001, min([self.sweep_s, *waits]))


def relay_once(container: Container, celery: Celery, in_flight: InFlight | None = None) -> int:
    """Publish what is due now; returns how many deliveries were published."""
    settings = container.settings
    size = settings.relay_batch_max
    with container.main_session() as session:
        quotas = in_flight.quotas(size) if in_flight else None
        if quotas == {}:
            return 0  # nothing worth a query: every consumer with new work is busy
        due = claim_due(session, CLAIM_LIMIT, settings.redelivery_timeout_s, quotas)
        if in_flight:
            in_flight.claimed(quotas, Counter(d.consumer for d in due))
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
                    with publishing(consumer, policy.queue.value, batch):
                        celery.send_task(
                            consumer,
                            kwargs={"events": batch},
                            # What Flower and the worker's log show of the task. Celery would
                            # otherwise saferepr() the whole batch on every publication.
                            kwargsrepr=f"{{'events': <{len(batch)} events>}}",
                            argsrepr="()",
                            # Nobody reads it; else Celery subscribes to its result channel.
                            ignore_result=True,
                            queue=policy.queue.value,
                            producer=producer,
                        )
                if in_flight:
                    in_flight.published(consumer, len(batches), full=len(batches[-1]) == size)
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

    def wait(self, block: bool, timeout: float = SWEEP_INTERVAL_S) -> tuple[set[str], Counter[str]]:
        """Every notification already there (after waiting for one if `block`); returns the
        consumers that commits gave new deliveries to, and how many tasks of each ended."""
        new_work: set[str] = set()
        ended: Counter[str] = Counter()
        if self._conn is None:
            if block:
                time.sleep(self.settings.relay_poll_interval_s)
            return new_work, ended
        notifies = (
            self._conn.notifies(timeout=timeout, stop_after=1)
            if block
            else self._conn.notifies(timeout=0)
        )
        for notify in notifies:
            if notify.payload.startswith(TASK_DONE):
                ended[notify.payload.removeprefix(TASK_DONE)] += 1
            elif notify.payload.startswith(NEW_WORK):
                names = notify.payload.removeprefix(NEW_WORK).split(",")
                new_work.update(name for name in names if name)
        if block:  # then take the rest that came with it
            more_work, more_ended = self.wait(block=False)
            new_work |= more_work
            ended.update(more_ended)
        return new_work, ended

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
            new_work, ended = waker.wait(
                block=published == 0,
                timeout=in_flight.wake_in() if in_flight else SWEEP_INTERVAL_S,
            )
            if in_flight:
                in_flight.heard(new_work, ended)
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


def main() -> None:
    """The relay process (`onlinestudy relay`): runs until SIGTERM or SIGINT."""
    container = bootstrap()
    settings = container.settings
    configure_logging(settings.log_level)
    install_tracing("relay", settings)
    freeze_startup_heap()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    heartbeat = settings.relay_heartbeat
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    sweeper = start_sweeper(container, stop)
    run_relay(container, container.celery, stop, heartbeat=heartbeat.touch)
    sweeper.join(timeout=5.0)  # between two batches it sees the stop
    shutdown_tracing()


if __name__ == "__main__":
    main()
