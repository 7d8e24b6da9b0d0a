"""The operator's side: list the parked (dead) deliveries and make them due again."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.shared.db.base import utcnow
from app.shared.db.dialects import rowcount
from app.shared.outbox.tables import Delivery, DeliveryStatus, OutboxEvent, has_status


def dead_deliveries(session: Session) -> list[tuple[Delivery, OutboxEvent]]:
    rows = session.execute(
        select(Delivery, OutboxEvent)
        .join(OutboxEvent, OutboxEvent.event_id == Delivery.event_id)
        .where(has_status(Delivery.status, DeliveryStatus.DEAD))
        .order_by(Delivery.id)
    )
    return [(delivery, event) for delivery, event in rows]


def replay_dead(session: Session, event_id: str | None = None, consumer: str | None = None) -> int:
    """Make parked deliveries due again, with a fresh attempt count. Returns how many."""
    stmt = update(Delivery).where(has_status(Delivery.status, DeliveryStatus.DEAD))
    if event_id:
        stmt = stmt.where(Delivery.event_id == event_id)
    if consumer:
        stmt = stmt.where(Delivery.consumer == consumer)
    result = session.execute(
        stmt.values(
            status=DeliveryStatus.PENDING, failures=0, published=0, next_attempt_at=utcnow()
        )
    )
    return rowcount(result)
