"""Policies of the notification context: store the SMS in the transaction, send after commit."""

from __future__ import annotations

import structlog
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from app.notification.model import idempotency_key
from app.notification.repository import SmsRepository
from app.notification.senders import Outgoing, PermanentSendError, SmsSender, TransientSendError
from app.notification.templates import render
from app.shared.db.base import utcnow
from app.shared.events import Event
from app.shared.states import SmsStatus
from app.shared.uow import SessionFactory, UnitOfWork

log = structlog.get_logger(__name__)


class NotificationUnitOfWork(UnitOfWork):
    """The notification database and the SMS gateway the context sends through."""

    messages: SmsRepository

    def __init__(self, session_factory: SessionFactory, sender: SmsSender, max_attempts: int):
        super().__init__(session_factory, None)  # notification raises no events: no outbox
        self.sender = sender
        self.max_attempts = max_attempts

    def __enter__(self) -> NotificationUnitOfWork:
        super().__enter__()
        self.messages = SmsRepository(self.session)
        return self


def record_sms(uow: NotificationUnitOfWork, events: list[Event]) -> None:
    """Write the message rows (PENDING) for the events' students, once per event and phone."""
    now = utcnow()
    messages = {}
    for event in events:
        text = render(event)
        phone = event.payload.get("phone")
        if text is None or not phone:
            continue
        messages[event.event_id, phone] = {
            "event_id": event.event_id,
            "event_type": str(event.event_type),
            "phone": phone,
            "order_no": event.order_no,
            "message": text,
            "status": SmsStatus.PENDING,
            "provider": uow.sender.name,
            "attempts": 0,
            "created_at": now,
        }
    uow.messages.add_missing(list(messages.values()))


def send_pending_sms(
    uow: NotificationUnitOfWork,
    events: list[Event],
    quick_retries: int = 3,
) -> dict[str, str]:
    """Send the events' PENDING messages, in one locked pass. A transient failure is retried
    here with backoff, then again on the event's redelivery; after MAX_ATTEMPTS rounds the
    message FAILS. Returns the events to deliver again, with the reason."""
    retry: dict[str, str] = {}
    # One policy for the batch: each iteration over it starts afresh.
    retrying = Retrying(
        retry=retry_if_exception_type(TransientSendError),
        stop=stop_after_attempt(quick_retries),
        wait=wait_random_exponential(multiplier=0.2, max=2),
        reraise=True,
    )
    attempts = []
    with uow:
        keys = [(event.event_id, event.payload.get("phone")) for event in events]
        for message in uow.messages.pending_for(keys):
            if retry:
                # The gateway just failed a whole round: the rest wait for their redelivery
                # instead of each waiting out its own retries now.
                retry[message.event_id] = "not tried: the gateway was failing"
                continue
            attempt = {
                "id": message.id,
                "status": SmsStatus.PENDING,
                "attempts": message.attempts + 1,
                "provider_message_id": None,
                "last_error": message.last_error,
                "sent_at": None,
            }
            outgoing = Outgoing(
                idempotency_key(message.event_id, message.phone), message.phone, message.message
            )
            try:
                for tried in retrying:
                    with tried:
                        attempt["provider_message_id"] = uow.sender.send(outgoing)
                attempt.update(status=SmsStatus.SENT, sent_at=utcnow())
            except PermanentSendError as exc:
                attempt.update(status=SmsStatus.FAILED, last_error=str(exc))
            except TransientSendError as exc:
                attempt["last_error"] = str(exc)
                if attempt["attempts"] >= uow.max_attempts:
                    attempt["status"] = SmsStatus.FAILED
                else:
                    retry[message.event_id] = f"TransientSendError: {exc}"
            attempts.append(attempt)
            log.info(
                "sms.result",
                sms_id=message.id,
                status=attempt["status"],
                event_type=message.event_type,
            )
        uow.messages.record_attempts(attempts)
        uow.commit()
    return retry
