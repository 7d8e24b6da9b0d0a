"""SMS on the notification database, as the sender tests need them: a PENDING message of a new
order, the stored row, one send_pending_sms round through a given sender."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from app.notification.handlers import NotificationUnitOfWork, record_sms, send_pending_sms
from app.notification.model import SmsMessage
from app.shared.events import Event, EventType
from tests.helpers import random_phone


def a_pending_sms(container) -> Event:
    """A new order's event, its SMS stored PENDING; returns the event."""
    order_no = "O" + uuid.uuid4().hex[:12].upper()
    event = Event(
        EventType.COURSE_ORDERED,
        order_no,
        {"order_no": order_no, "phone": random_phone(), "course_title": "파이썬 입문"},
    )
    with container.notification_uow() as uow:
        record_sms(uow, [event])
        uow.commit()
    return event


def stored(container, event: Event) -> SmsMessage:
    with container.notification_uow() as uow:
        return uow.session.execute(
            select(SmsMessage).where(
                SmsMessage.event_id == event.event_id, SmsMessage.phone == event.payload["phone"]
            )
        ).scalar_one()


def send(container, event, sender, max_attempts=3) -> dict[str, str]:
    """One round of send_pending_sms for the event; returns what is to be delivered again."""
    uow = NotificationUnitOfWork(lambda: container.db.session("notification"), sender, max_attempts)
    return send_pending_sms(uow, [event])
