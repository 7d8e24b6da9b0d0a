"""The consumer's side: a delivery done, a failed attempt (parked after the last), a task ended."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.shared.db.base import utcnow
from app.shared.db.bulk import among
from app.shared.db.dialects import rowcount, statements
from app.shared.outbox.backoff import backoff_s
from app.shared.outbox.notices import NOTIFY_CHANNEL, TASK_DONE
from app.shared.outbox.tables import Delivery, DeliveryStatus


def announce_task_done(session: Session, consumer: str) -> None:
    """Tell the relay that one of `consumer`'s tasks has finished (a PostgreSQL NOTIFY; SQLite
    has none, and its relay does not count tasks in flight)."""
    statements(session).notify(session, NOTIFY_CHANNEL, f"{TASK_DONE}{consumer}")


def record_done(session: Session, consumer: str, event_ids: Sequence[str]) -> None:
    if not event_ids:
        return
    d = Delivery.__table__.c
    # On the table, not the entity: the ORM would match the rows against its session first.
    session.execute(
        update(Delivery.__table__)
        .where(
            d.consumer == consumer,
            among(session, d.event_id, event_ids),
            d.status != DeliveryStatus.DONE,
        )
        .values(status=DeliveryStatus.DONE, done_at=utcnow(), last_error=None)
    )


def park(session: Session, consumer: str, event_ids: Sequence[str], reason: str) -> int:
    """Park these deliveries as DEAD with `reason`, unless they are DONE already (applied:
    nothing is owed). Returns how many were parked."""
    d = Delivery.__table__.c
    result = session.execute(
        update(Delivery.__table__)
        .where(
            d.consumer == consumer,
            among(session, d.event_id, list(event_ids)),
            d.status != DeliveryStatus.DONE,
        )
        .values(status=DeliveryStatus.DEAD, last_error=reason)
    )
    return rowcount(result)


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
        seconds=backoff_s(retry_in_s, delivery.failures - 1)
    )
    return False
