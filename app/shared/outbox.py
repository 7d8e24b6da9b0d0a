"""Transactional outbox: the event log, one delivery row per (event, consumer), per-order sequence.

Rows are written in the business transaction (SPEC 5.1). The relay publishes due deliveries and
pushes their next attempt out by the redelivery timeout; a consumer marks its delivery DONE after
its own commit, so an event nobody recorded is published again (SPEC 5.3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.shared.db import MainBase, UTCDateTime, utcnow
from app.shared.events import Event, EventType

NOTIFY_CHANNEL = "onlinestudy_outbox"
# Payload prefix of the NOTIFY a worker sends when a task ends (the commits' NOTIFY has none).
TASK_DONE = "done:"


class DeliveryStatus:
    PENDING = "PENDING"
    DONE = "DONE"
    DEAD = "DEAD"


class OutboxEvent(MainBase):
    """Every event ever committed, in commit order: the event log My page is rebuilt from."""

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    event_type: Mapped[str] = mapped_column(String(64))
    order_no: Mapped[str | None] = mapped_column(String(32), index=True)
    sequence: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    payload: Mapped[dict] = mapped_column(JSON)
    correlation_id: Mapped[str | None] = mapped_column(String(64))

    def to_event(self) -> Event:
        return Event(
            event_type=EventType(self.event_type),
            order_no=self.order_no,
            payload=self.payload,
            event_id=self.event_id,
            occurred_at=self.occurred_at,
            sequence=self.sequence,
            correlation_id=self.correlation_id,
        )


class Delivery(MainBase):
    """One consumer's copy of one event, and how far its delivery got."""

    __tablename__ = "outbox_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "consumer", name="uq_outbox_deliveries_event_consumer"),
        Index("ix_outbox_deliveries_due", "status", "next_attempt_at"),
        Index("ix_outbox_deliveries_backlog", "consumer", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("outbox_events.event_id"))
    consumer: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    published: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)


class OrderSequence(MainBase):
    """The last sequence number given to an order's events, whichever context raised them."""

    __tablename__ = "outbox_order_sequences"

    order_no: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_sequence: Mapped[int] = mapped_column(Integer)


def next_sequence(session: Session, order_no: str) -> int:
    """Allocate the order's next sequence. The row lock held to commit orders commits too."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(OrderSequence)
        .values(order_no=order_no, last_sequence=1)
        .on_conflict_do_update(
            index_elements=[OrderSequence.order_no],
            set_={"last_sequence": OrderSequence.last_sequence + 1},
        )
        .returning(OrderSequence.last_sequence)
    )
    return session.execute(stmt).scalar_one()


Subscribers = Callable[[EventType], Sequence[str]]


class OutboxWriter:
    """Writes events and their deliveries into the caller's transaction."""

    def __init__(self, subscribers: Subscribers):
        self._subscribers = subscribers

    def write(self, session: Session, events: Iterable[Event]) -> list[Event]:
        now = utcnow()
        written, event_rows, delivery_rows = [], [], []
        for event in events:
            if event.order_no:
                event.sequence = next_sequence(session, event.order_no)
            event_rows.append(
                {
                    "event_id": event.event_id,
                    "event_type": str(event.event_type),
                    "order_no": event.order_no,
                    "sequence": event.sequence,
                    "occurred_at": event.occurred_at,
                    "payload": event.payload,
                    "correlation_id": event.correlation_id,
                }
            )
            delivery_rows.extend(
                {
                    "event_id": event.event_id,
                    "consumer": consumer,
                    "status": DeliveryStatus.PENDING,
                    "published": 0,
                    "failures": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for consumer in self._subscribers(event.event_type)
            )
            written.append(event)
        # Core inserts, events first: the deliveries refer to them.
        if event_rows:
            session.execute(insert(OutboxEvent), event_rows)
        if delivery_rows:
            session.execute(insert(Delivery), delivery_rows)
        if written and session.get_bind().dialect.name == "postgresql":
            # NOTIFY is transactional: the relay hears it at commit, never for a rollback.
            session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
        return written


@dataclass(frozen=True)
class DueDelivery:
    delivery_id: int
    consumer: str
    envelope: dict


def claim_due(
    session: Session,
    limit: int,
    redelivery_timeout_s: float,
    quotas: dict[str, int] | None = None,
) -> list[DueDelivery]:
    """Lock due deliveries (skipping those another relay holds) and schedule their redelivery;
    with `quotas`, only for those consumers and at most that many each.

    The caller publishes them and then commits; if publishing fails it rolls back and they stay
    due. A publish that succeeds but whose commit is lost only causes a duplicate, which the
    consumers absorb.
    """
    now = utcnow()
    stmt = (
        select(Delivery, OutboxEvent)
        .join(OutboxEvent, OutboxEvent.event_id == Delivery.event_id)
        .where(Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now)
        .order_by(Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Delivery)
    )
    if quotas is not None:
        stmt = stmt.where(Delivery.consumer.in_([c for c, n in quotas.items() if n > 0]))
        left = dict(quotas)
    due = []
    for delivery, outbox_event in session.execute(stmt):
        if quotas is not None:
            if left[delivery.consumer] <= 0:
                continue  # over its quota: stays due, for the next pass
            left[delivery.consumer] -= 1
        delivery.published += 1
        # Capped exponential: a consumer that is down for long is not flooded with copies.
        factor = 2 ** min(delivery.published - 1, 4)
        delivery.next_attempt_at = now + timedelta(seconds=redelivery_timeout_s * factor)
        due.append(DueDelivery(delivery.id, delivery.consumer, outbox_event.to_event().envelope()))
    return due


def announce_task_done(session: Session, consumer: str) -> None:
    """Tell the relay that one of `consumer`'s tasks has finished (a PostgreSQL NOTIFY; SQLite
    has none, and its relay does not count tasks in flight)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": NOTIFY_CHANNEL, "payload": f"{TASK_DONE}{consumer}"},
        )


def record_done(session: Session, consumer: str, event_ids: Sequence[str]) -> None:
    if not event_ids:
        return
    session.execute(
        update(Delivery)
        .where(
            Delivery.consumer == consumer,
            Delivery.event_id.in_(event_ids),
            Delivery.status != DeliveryStatus.DONE,
        )
        .values(status=DeliveryStatus.DONE, done_at=utcnow(), last_error=None)
    )


def record_failure(
    session: Session, consumer: str, event_id: str, error: str, max_attempts: int, retry_in_s: float
) -> bool:
    """Count a failed attempt; park the delivery as DEAD after `max_attempts`. True if parked."""
    delivery = session.execute(
        select(Delivery)
        .where(Delivery.consumer == consumer, Delivery.event_id == event_id)
        .with_for_update()
    ).scalar_one_or_none()
    if delivery is None or delivery.status == DeliveryStatus.DONE:
        return False
    delivery.failures += 1
    delivery.last_error = error[-2000:]
    if delivery.failures >= max_attempts:
        delivery.status = DeliveryStatus.DEAD
        return True
    delivery.next_attempt_at = utcnow() + timedelta(
        seconds=retry_in_s * 2 ** (delivery.failures - 1)
    )
    return False


def dead_deliveries(session: Session) -> list[tuple[Delivery, OutboxEvent]]:
    rows = session.execute(
        select(Delivery, OutboxEvent)
        .join(OutboxEvent, OutboxEvent.event_id == Delivery.event_id)
        .where(Delivery.status == DeliveryStatus.DEAD)
        .order_by(Delivery.id)
    )
    return [(delivery, event) for delivery, event in rows]


def replay_dead(session: Session, event_id: str | None = None, consumer: str | None = None) -> int:
    """Make parked deliveries due again, with a fresh attempt count. Returns how many."""
    stmt = update(Delivery).where(Delivery.status == DeliveryStatus.DEAD)
    if event_id:
        stmt = stmt.where(Delivery.event_id == event_id)
    if consumer:
        stmt = stmt.where(Delivery.consumer == consumer)
    result = session.execute(
        stmt.values(
            status=DeliveryStatus.PENDING, failures=0, published=0, next_attempt_at=utcnow()
        )
    )
    return result.rowcount


def pending_deliveries(session: Session, consumers: Sequence[str]) -> int:
    """How many events these consumers have not recorded yet."""
    return session.execute(
        select(func.count(Delivery.id)).where(
            Delivery.status == DeliveryStatus.PENDING, Delivery.consumer.in_(consumers)
        )
    ).scalar_one()
