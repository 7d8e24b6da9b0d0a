"""Queries on the notification context's tables."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from app.notification.model import SmsMessage
from app.shared.db.bulk import among_keys, insert_missing, update_rows
from app.shared.db.paging import paged, where_given
from app.shared.states import SmsStatus

_SMS = SmsMessage.__table__


# What a send needs of a PENDING message: id, event_id, event_type, phone, message, attempts,
# last_error.
PendingSms = Row[int, str, str, str, str, int, str | None]


class SmsRepository:
    def __init__(self, session: Session):
        self.session = session

    def add_missing(self, messages: list[dict[str, Any]]) -> None:
        """Store these PENDING messages, except those whose (event, phone) has one already."""
        insert_missing(self.session, _SMS, messages)

    def pending_for(self, keys: list[tuple[str, str | None]]) -> list[PendingSms]:
        """What a send needs of the PENDING messages of these (event_id, phone) keys, as rows
        (no ORM objects): locked while sending, so two copies of one event never send one
        message twice."""
        return list(
            self.session.execute(
                select(
                    _SMS.c.id,
                    _SMS.c.event_id,
                    _SMS.c.event_type,
                    _SMS.c.phone,
                    _SMS.c.message,
                    _SMS.c.attempts,
                    _SMS.c.last_error,
                )
                .where(
                    among_keys(self.session, (_SMS.c.event_id, _SMS.c.phone), keys),
                    _SMS.c.status == SmsStatus.PENDING,
                )
                .order_by(_SMS.c.id)
                .with_for_update()
            )
        )

    def record_attempts(self, attempts: list[dict[str, Any]]) -> None:
        """Each dict: id, status, attempts, provider_message_id, last_error, sent_at. One
        statement for the batch on PostgreSQL."""
        update_rows(self.session, _SMS, "id", attempts)

    def list(
        self, phone: str | None, order_no: str | None, offset: int, limit: int
    ) -> tuple[list[SmsMessage], int]:
        stmt = where_given(
            select(SmsMessage), (SmsMessage.phone, phone), (SmsMessage.order_no, order_no)
        )
        return paged(self.session, stmt, SmsMessage.id.desc(), offset, limit)
