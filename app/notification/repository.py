"""Queries on the notification context's tables."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.notification.model import SmsMessage, SmsStatus


class SmsRepository:
    def __init__(self, session: Session):
        self.session = session

    def add(self, message: SmsMessage) -> None:
        self.session.add(message)

    def for_event(self, event_id: str, phone: str) -> SmsMessage | None:
        return self.session.execute(
            select(SmsMessage).where(SmsMessage.event_id == event_id, SmsMessage.phone == phone)
        ).scalar_one_or_none()

    def pending_for_event(self, event_id: str) -> list[SmsMessage]:
        # Locked while sending, so two copies of one event never send one message twice.
        return list(
            self.session.execute(
                select(SmsMessage)
                .where(SmsMessage.event_id == event_id, SmsMessage.status == SmsStatus.PENDING)
                .order_by(SmsMessage.id)
                .with_for_update()
            ).scalars()
        )

    def list(
        self, phone: str | None, order_no: str | None, offset: int, limit: int
    ) -> tuple[list[SmsMessage], int]:
        stmt = select(SmsMessage)
        if phone:
            stmt = stmt.where(SmsMessage.phone == phone)
        if order_no:
            stmt = stmt.where(SmsMessage.order_no == order_no)
        total = self.session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
        items = (
            self.session.execute(stmt.order_by(SmsMessage.id.desc()).offset(offset).limit(limit))
            .scalars()
            .all()
        )
        return list(items), total
