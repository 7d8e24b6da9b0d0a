"""SMS senders, chosen by SMS_PROVIDER. Each gets the message id as an idempotency key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import requests
import structlog

log = structlog.get_logger(__name__)


class TransientSendError(Exception):
    """Worth retrying: timeout, connection error, 5xx, 429."""


class PermanentSendError(Exception):
    """The provider refused the message for good (other 4xx)."""


@dataclass(frozen=True)
class Outgoing:
    idempotency_key: str
    phone: str
    text: str


class SmsSender(Protocol):
    name: str

    def send(self, sms: Outgoing) -> str:
        """Send and return the provider's message id; raise a *SendError on failure."""


class ConsoleSender:
    """Logs the message; the row in the database is the record. The default."""

    name = "console"

    def send(self, sms: Outgoing) -> str:
        log.info("sms.console", phone=sms.phone, text=sms.text, key=sms.idempotency_key)
        return sms.idempotency_key


class HttpSender:
    """POSTs JSON to a gateway; `Idempotency-Key` lets it drop a resend."""

    name = "http"

    def __init__(self, url: str, timeout_s: float):
        self.url = url
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def send(self, sms: Outgoing) -> str:
        try:
            response = self._session.post(
                self.url,
                json={"to": sms.phone, "text": sms.text, "client_ref": sms.idempotency_key},
                headers={"Idempotency-Key": sms.idempotency_key},
                timeout=self.timeout_s,
            )
        except requests.RequestException as exc:
            raise TransientSendError(f"gateway unreachable: {exc.__class__.__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientSendError(f"gateway answered {response.status_code}")
        if response.status_code >= 400:
            raise PermanentSendError(
                f"gateway refused: {response.status_code} {response.text[:200]}"
            )
        try:
            return str(response.json().get("message_id") or sms.idempotency_key)
        except ValueError:
            return sms.idempotency_key


def make_sender(provider: str, http_url: str = "", timeout_s: float = 3.0) -> SmsSender:
    if provider == "http":
        return HttpSender(http_url, timeout_s)
    return ConsoleSender()
