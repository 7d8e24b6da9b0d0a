"""Queries on the notification context's tables."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.notification.model import SmsMessage, SmsStatus
from app.shared.db import among, paged, where_given


class SmsRepository:
    def __init__(self, session: Session):
        self.session = session

    def add(self, message: SmsMessage) -> None:
        self.session.add(message)

    def recipients_of(self, event_ids: list[str]) -> set[tuple[str, str]]:
        """(event_id, phone) of the messages these events have already."""
        rows = self.session.execute(
            select(SmsMessage.event_id, SmsMessage.phone).where(
                among(self.session, SmsMessage.event_id, event_ids)
            )
        )
        return {(event_id, phone) for event_id, phone in rows}

    def pending_for_events(self, event_ids: list[str]) -> list[SmsMessage]:
        # Locked while sending, so two copies of one event never send one message twice.
        return list(
            self.session.execute(
                select(SmsMessage)
                .where(
                    among(self.session, SmsMessage.event_id, event_ids),
                    SmsMessage.status == SmsStatus.PENDING,
                )
                .order_by(SmsMessage.id)
                .with_for_update()
            ).scalars()
        )

    def list(
        self, phone: str | None, order_no: str | None, offset: int, limit: int
    ) -> tuple[list[SmsMessage], int]:
        stmt = where_given(
            select(SmsMessage), (SmsMessage.phone, phone), (SmsMessage.order_no, order_no)
        )
        return paged(self.session, stmt, SmsMessage.id.desc(), offset, limit)
