"""What other contexts may ask the learning context synchronously (read-only)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.learning.model import Learning


def manager_of_order(session: Session, order_no: str) -> int | None:
    """The manager running the order's learning, if any (for the managers' access rule)."""
    return session.execute(
        select(Learning.manager_id).where(Learning.order_no == order_no)
    ).scalar_one_or_none()
