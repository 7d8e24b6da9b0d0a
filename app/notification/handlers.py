"""Policies of the notification context: store the SMS in the transaction, send after commit."""

from __future__ import annotations

import structlog
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from app.notification.model import SmsMessage, SmsStatus
from app.notification.repository import SmsRepository
from app.notification.senders import Outgoing, PermanentSendError, SmsSender, TransientSendError
from app.notification.templates import render
from app.shared.db import utcnow
from app.shared.events import Event
from app.shared.uow import UnitOfWork

log = structlog.get_logger(__name__)


class NotificationUnitOfWork(UnitOfWork):
    messages: SmsRepository

    def __enter__(self) -> NotificationUnitOfWork:
        super().__enter__()
        self.messages = SmsRepository(self.session)
        return self


def record_sms(uow: NotificationUnitOfWork, events: list[Event], provider: str) -> None:
    """Write the message rows (PENDING) for the events' students, once per event and phone."""
    written = uow.messages.recipients_of([event.event_id for event in events])
    for event in events:
        text = render(event)
        phone = event.payload.get("phone")
        if text is None or not phone or (event.event_id, phone) in written:
            continue
        written.add((event.event_id, phone))
        uow.messages.add(
            SmsMessage(
                event_id=event.event_id,
                event_type=str(event.event_type),
                phone=phone,
                order_no=event.order_no,
                message=text,
                status=SmsStatus.PENDING,
                provider=provider,
                attempts=0,
                created_at=utcnow(),
            )
        )


def send_pending_sms(
    uow: NotificationUnitOfWork,
    events: list[Event],
    sender: SmsSender,
    max_attempts: int,
    quick_retries: int = 3,
) -> dict[str, str]:
    """Send the events' PENDING messages, in one locked pass. A transient failure is retried
    here with backoff, then again on the event's redelivery; after `max_attempts` rounds the
    message FAILS. Returns the events to deliver again, with the reason."""
    retry: dict[str, str] = {}
    # One policy for the batch: each iteration over it starts afresh.
    retrying = Retrying(
        retry=retry_if_exception_type(TransientSendError),
        stop=stop_after_attempt(quick_retries),
        wait=wait_random_exponential(multiplier=0.2, max=2),
        reraise=True,
    )
    with uow:
        for message in uow.messages.pending_for_events([event.event_id for event in events]):
            if retry:
                # The gateway just failed a whole round: the rest wait for their redelivery
                # instead of each waiting out its own retries now.
                retry[message.event_id] = "not tried: the gateway was failing"
                continue
            message.attempts += 1
            outgoing = Outgoing(message.idempotency_key, message.phone, message.message)
            try:
                for attempt in retrying:
                    with attempt:
                        message.provider_message_id = sender.send(outgoing)
                message.status = SmsStatus.SENT
                message.sent_at = utcnow()
            except PermanentSendError as exc:
                message.status = SmsStatus.FAILED
                message.last_error = str(exc)
            except TransientSendError as exc:
                message.last_error = str(exc)
                if message.attempts >= max_attempts:
                    message.status = SmsStatus.FAILED
                else:
                    retry[message.event_id] = f"TransientSendError: {exc}"
            log.info(
                "sms.result",
                sms_id=message.id,
                status=message.status,
                event_type=message.event_type,
            )
        uow.commit()
    return retry
