"""How many deliveries consumers have not recorded yet (the backlog metric and health)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.shared.outbox.tables import Delivery, pending


def pending_deliveries(session: Session, consumers: Sequence[str]) -> int:
    """How many events these consumers have not recorded yet."""
    return session.execute(
        select(func.count(Delivery.id)).where(
            pending(Delivery.status), Delivery.consumer.in_(consumers)
        )
    ).scalar_one()
