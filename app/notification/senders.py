"""SMS senders, chosen by SMS_PROVIDER. Each gets the message's idempotency key (derived from
its event and recipient) and answers the provider's message id."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import requests
import structlog

from app.config import Settings

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


class SolapiSender:
    """SOLAPI (solapi.com, also CoolSMS), through its REST API: one message per
    POST /messages/v4/send, signed with the API key's secret (HMAC-SHA256 over a date and a
    salt, which SOLAPI accepts once and within 15 minutes of its clock). An SMS carries 90
    bytes in EUC-KR; a longer text, or one with a character outside EUC-KR, goes as an LMS
    with a subject. The sender number must be one registered with SOLAPI (Korean carriers
    refuse any other).

    SOLAPI keeps no idempotency key: the message's goes in its custom fields, where a
    duplicate can be found, and the row lock of send_pending_sms keeps two workers from
    sending one message."""

    name = "solapi"

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        sender_number: str,
        lms_subject: str,
        base_url: str,
        timeout_s: float,
    ):
        self.api_key = api_key
        self._secret = api_secret.encode()
        self.sender_number = digits(sender_number)
        self.lms_subject = lms_subject
        self.url = f"{base_url.rstrip('/')}/messages/v4/send"
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def send(self, sms: Outgoing) -> str:
        kind = message_type(sms.text)
        message: dict[str, Any] = {
            "to": digits(sms.phone),
            "from": self.sender_number,
            "text": sms.text,
            "type": kind,
            "customFields": {"idempotencyKey": sms.idempotency_key},
        }
        if kind == "LMS":
            message["subject"] = self.lms_subject
        try:
            response = self._session.post(
                self.url,
                json={"message": message},
                headers={"Authorization": self.authorization()},
                timeout=self.timeout_s,
            )
        except requests.RequestException as exc:
            raise TransientSendError(f"SOLAPI unreachable: {exc.__class__.__name__}") from exc
        body = _json_object(response)
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientSendError(f"SOLAPI answered {response.status_code}")
        if response.status_code >= 400:
            # An error of the request or the account: {"errorCode": ..., "errorMessage": ...}.
            code = str(body.get("errorCode") or response.status_code)
            raise solapi_refusal(code, body.get("errorMessage"), response.status_code)
        code = str(body.get("statusCode") or "")
        if code not in SOLAPI_ACCEPTED or not body.get("messageId"):
            raise solapi_refusal(code or "no statusCode", body.get("statusMessage"))
        return str(body["messageId"])

    def authorization(self) -> str:
        """The Authorization header of one request: a fresh date and salt each time."""
        date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        salt = secrets.token_hex(16)
        signature = hmac.new(self._secret, (date + salt).encode(), hashlib.sha256).hexdigest()
        return f"HMAC-SHA256 apiKey={self.api_key}, date={date}, salt={salt}, signature={signature}"


# SMS carries at most this many bytes of EUC-KR; longer goes as LMS.
SMS_MAX_BYTES = 90

# SOLAPI's message status codes of a message taken: accepted (2000), handed to the carrier
# (3000), received (4000).
SOLAPI_ACCEPTED = frozenset({"2000", "3000", "4000"})

# The codes that say this message can never go, whatever is retried: SOLAPI's message status
# codes (1xxx refused on receipt, 2xxx by the platform, 3xxx by the carrier). Every other
# code is retried: the provider's own errors (1024, 2024), and what the operator fixes (the
# balance 1030/2230, an unregistered sender number 1062/2062, a blocked account 2063, the API
# key), each round counting towards MAX_ATTEMPTS.
SOLAPI_NEVER_DELIVERABLE = {
    "1010": "a required value is missing",
    "1011": "format error",
    "1013": "an SMS takes no subject",
    "1014": "the subject is over 40 bytes",
    "1025": "unknown message type",
    "1027": "not UTF-8",
    "1028": "non-printable characters",
    "1029": "an SMS takes only EUC-KR characters",
    "1031": "the text is too long",
    "1032": "invalid custom field",
    "1060": "the recipient is blocked",
    "1061": "the recipient refused messages (080)",
    "1064": "blocked after a KISA report",
    "2011": "format error",
    "2060": "the recipient is blocked",
    "2061": "the recipient refused messages (080)",
    "2064": "blocked after a KISA report",
    "2254": "taken for spam",
    "3010": "malformed recipient number",
}
# Request errors of the API (HTTP 4xx): the key, the signature or the clock, which the
# operator fixes; any other 4xx is this request's fault, for good.
SOLAPI_ACCOUNT_ERRORS = frozenset(
    {
        "InvalidApiKey",
        "SignatureDoesNotMatch",
        "RequestTimeTooSkewed",
        "DuplicatedSignature",
        "Unauthorized",
        "Forbidden",
        "NotEnoughBalance",
    }
)


def solapi_refusal(code: str, message: Any, http_status: int | None = None) -> Exception:
    """The error to raise for SOLAPI's answer `code`: permanent when the message can never go,
    else transient."""
    said = f"SOLAPI refused: {code}" + (f" {message}" if message else "")
    if code in SOLAPI_NEVER_DELIVERABLE:
        return PermanentSendError(f"{said} ({SOLAPI_NEVER_DELIVERABLE[code]})")
    bad_request = (
        http_status is not None
        and http_status not in (401, 403)
        and code not in SOLAPI_ACCOUNT_ERRORS
        and not code.isdigit()  # a status code: the table above said
    )
    if bad_request:
        return PermanentSendError(f"{said} (HTTP {http_status})")
    return TransientSendError(said)


def message_type(text: str) -> str:
    """SMS when the text fits 90 bytes of EUC-KR, else LMS."""
    try:
        size = len(text.encode("euc-kr"))
    except UnicodeEncodeError:
        return "LMS"  # an SMS carries EUC-KR only
    return "SMS" if size <= SMS_MAX_BYTES else "LMS"


def digits(phone: str) -> str:
    return "".join(c for c in phone if c.isdigit())


def _json_object(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def make_sender(settings: Settings) -> SmsSender:
    if settings.sms_provider == "http":
        return HttpSender(settings.sms_http_url, settings.sms_http_timeout_s)
    if settings.sms_provider == "solapi":
        assert settings.solapi_api_key and settings.solapi_api_secret  # checked by Settings
        return SolapiSender(
            settings.solapi_api_key,
            settings.solapi_api_secret,
            settings.sms_sender_number,
            settings.sms_lms_subject,
            settings.solapi_base_url,
            settings.sms_http_timeout_s,
        )
    return ConsoleSender()
