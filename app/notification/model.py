"""SMS messages: one row per (event, recipient), written before the send."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.shared.db.base import NotificationBase, UTCDateTime


class SmsMessage(NotificationBase):
    __tablename__ = "notification_sms"
    __table_args__ = (
        # The guarantee "one SMS per (event, recipient)" lives in the schema.
        UniqueConstraint("event_id", "phone", name="uq_notification_sms_event_phone"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(20), index=True)
    order_no: Mapped[str | None] = mapped_column(String(32), index=True)
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(32))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.event_id, self.phone)


def idempotency_key(event_id: str, phone: str) -> str:
    """Given to the provider, so that a resend after a crash is not a second SMS. Derived from
    what the message is, its event and recipient (the row's own key), not from its row id,
    which a restored or re-created database gives again to another message."""
    digest = hashlib.sha256(f"{event_id}/{phone}".encode()).hexdigest()[:32]
    return f"onlinestudy-sms-{digest}"
