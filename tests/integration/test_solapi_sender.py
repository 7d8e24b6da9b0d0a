"""The SOLAPI sender against a server on loopback that speaks SOLAPI's documented API: the
HMAC-SHA256 Authorization header (checked as SOLAPI does), POST /messages/v4/send, SMS or LMS
by EUC-KR bytes, the message status codes. Nothing leaves the machine."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from app.config import ConfigError, Settings
from app.notification.senders import (
    Outgoing,
    PermanentSendError,
    SolapiSender,
    TransientSendError,
    make_sender,
)
from app.shared.states import SmsStatus
from tests.integration.sms import a_pending_sms, send, stored
from tests.loopback import no_proxy, serving

API_KEY = "NCSTESTKEY0000001"
API_SECRET = "test-secret-0123456789abcdefghijklmnopqrstuv"
SENDER_NUMBER = "02-1234-5678"  # registered with the test SOLAPI
TIMEOUT_S = 0.3
SLOW_S = 0.6
AUTH = re.compile(
    r"^HMAC-SHA256 apiKey=(?P<key>[^,]+), date=(?P<date>[^,]+), "
    r"salt=(?P<salt>[^,]+), signature=(?P<signature>[0-9a-f]{64})$"
)
ACCEPTED = "정상 접수(이통사로 접수 예정) "


@dataclass(frozen=True)
class Refuse:
    """Answer 200 with this message status code (the message refused, the request fine)."""

    code: str
    text: str = "refused"


@dataclass(frozen=True)
class Fail:
    """Answer with this HTTP status and SOLAPI error body."""

    status: int
    error_code: str = "InternalError"


@dataclass(frozen=True)
class Delay:
    seconds: float = SLOW_S


@dataclass
class Solapi:
    """The test SOLAPI: what it received and accepted, and a script of what it answers next."""

    url: str = ""
    script: list = field(default_factory=list)
    received: list[dict] = field(default_factory=list)  # every request body
    accepted: list[dict] = field(default_factory=list)  # the messages taken
    signatures: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, authorization: str, body: dict) -> tuple[int, dict, float]:
        with self.lock:
            self.received.append(body)
            refused = self.authenticate(authorization)
            if refused:
                return 401, {"errorCode": refused, "errorMessage": refused}, 0.0
            step = self.script.pop(0) if self.script else None
            if isinstance(step, Fail):
                return step.status, {"errorCode": step.error_code, "errorMessage": "scripted"}, 0
            message = body.get("message")
            if not isinstance(message, dict) or not all(
                message.get(k) for k in ("to", "from", "text")
            ):
                return 400, {"errorCode": "ValidationError", "errorMessage": "to, from, text"}, 0
            code = self.status_of(message) if not isinstance(step, Refuse) else step.code
            if code != "2000":
                return 200, self.result(message, code, "refused"), 0.0
            self.accepted.append(message)
            delay = step.seconds if isinstance(step, Delay) else 0.0
            return 200, self.result(message, code, ACCEPTED), delay

    def authenticate(self, authorization: str) -> str | None:
        """SOLAPI's checks of the Authorization header; the error code, or None."""
        parts = AUTH.match(authorization or "")
        if not parts or parts["key"] != API_KEY:
            return "InvalidApiKey"
        expected = hmac.new(
            API_SECRET.encode(), (parts["date"] + parts["salt"]).encode(), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, parts["signature"]):
            return "SignatureDoesNotMatch"
        sent_at = datetime.fromisoformat(parts["date"].replace("Z", "+00:00"))
        if abs(datetime.now(UTC) - sent_at) > timedelta(minutes=15):
            return "RequestTimeTooSkewed"
        if not 12 <= len(parts["salt"]) <= 64:
            return "InvalidApiKey"
        if parts["signature"] in self.signatures:
            return "DuplicatedSignature"
        self.signatures.add(parts["signature"])
        return None

    @staticmethod
    def status_of(message: dict) -> str:
        """SOLAPI's receipt checks of one message (its message status codes)."""
        if message["from"] != SENDER_NUMBER.replace("-", ""):
            return "1062"  # the sender number is not registered
        kind, text, subject = message.get("type"), message["text"], message.get("subject")
        if kind == "SMS":
            if subject:
                return "1013"
            try:
                size = len(text.encode("euc-kr"))
            except UnicodeEncodeError:
                return "1029"
            return "1031" if size > 90 else "2000"
        if kind == "LMS":
            if subject and len(subject.encode("euc-kr")) > 40:
                return "1014"
            return "1031" if len(text.encode("utf-8")) > 4000 else "2000"
        return "1025"

    def result(self, message: dict, code: str, status_message: str) -> dict:
        return {
            "groupId": f"G4V{uuid.uuid4().hex[:29].upper()}",
            "messageId": f"M4V{len(self.accepted):029d}" if code == "2000" else None,
            "accountId": "12925149",
            "statusCode": code,
            "statusMessage": status_message,
            "to": message["to"],
            "from": message["from"],
            "type": message.get("type"),
            "country": "82",
        }

    @property
    def keys(self) -> list[str]:
        return [b["message"]["customFields"]["idempotencyKey"] for b in self.received]


@pytest.fixture
def solapi(monkeypatch):
    no_proxy(monkeypatch)
    state = Solapi()

    def answer(path, headers, body):
        if path != "/messages/v4/send":
            return 404, {"errorCode": "NotFound"}, 0.0
        return state.answer(headers.get("Authorization", ""), body)

    with serving(answer) as url:
        state.url = url
        yield state


def settings_for(solapi: Solapi, **env: str) -> Settings:
    return Settings.from_env(
        {
            "SMS_PROVIDER": "solapi",
            "SOLAPI_API_KEY": API_KEY,
            "SOLAPI_API_SECRET": API_SECRET,
            "SMS_SENDER_NUMBER": SENDER_NUMBER,
            "SOLAPI_BASE_URL": solapi.url,
            "SMS_HTTP_TIMEOUT_S": str(TIMEOUT_S),
            **env,
        }
    )


@pytest.fixture
def sender(solapi) -> SolapiSender:
    made = make_sender(settings_for(solapi))
    assert isinstance(made, SolapiSender)
    return made


def an_sms(text: str = "[온라인스터디] 수강 안내") -> Outgoing:
    return Outgoing(f"onlinestudy-sms-{uuid.uuid4().hex}", "010-1234-5678", text)


# The sender alone


def test_given_a_short_text_then_it_goes_as_an_sms_and_solapis_message_id_comes_back(
    solapi, sender
):
    sms = an_sms()
    assert sender.send(sms) == "M4V" + "0" * 28 + "1"
    [message] = solapi.accepted
    assert message == {
        "to": "01012345678",
        "from": "0212345678",
        "text": sms.text,
        "type": "SMS",
        "customFields": {"idempotencyKey": sms.idempotency_key},
    }


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("가" * 45, "SMS"),  # 90 bytes of EUC-KR
        ("가" * 46, "LMS"),  # 92
        ("a" * 90, "SMS"),
        ("a" * 91, "LMS"),
        ("수료를 축하합니다 🎉", "LMS"),  # outside EUC-KR: an SMS could not carry it
    ],
    ids=["45-hangul", "46-hangul", "90-ascii", "91-ascii", "emoji"],
)
def test_the_byte_length_in_euc_kr_chooses_sms_or_lms_with_a_subject(solapi, sender, text, kind):
    sender.send(an_sms(text))
    [message] = solapi.accepted
    assert message["type"] == kind
    assert message.get("subject") == ("온라인스터디" if kind == "LMS" else None)


def test_the_lms_subject_is_a_setting(solapi):
    sender = make_sender(settings_for(solapi, SMS_LMS_SUBJECT="[스터디] 알림"))
    sender.send(an_sms("가" * 60))
    assert solapi.accepted[0]["subject"] == "[스터디] 알림"


def test_every_request_is_signed_afresh_so_solapi_never_sees_a_signature_twice(solapi, sender):
    for _ in range(3):
        sender.send(an_sms())
    assert len(solapi.accepted) == 3 and len(solapi.signatures) == 3


@pytest.mark.parametrize(
    ("step", "error", "message"),
    [
        (Fail(500), TransientSendError, "500"),
        (Fail(503), TransientSendError, "503"),
        (Fail(429, "TooManyRequests"), TransientSendError, "429"),
        (Delay(), TransientSendError, "ReadTimeout"),
        (Refuse("1030", "잔액 부족"), TransientSendError, "1030"),  # the operator tops up
        (Refuse("2024", "서버 오류"), TransientSendError, "2024"),
        (Refuse("1061", "수신거부"), PermanentSendError, "1061.*refused messages"),
        (Refuse("1060", "차단된 수신번호"), PermanentSendError, "1060"),
        (Refuse("3010", "수신번호 형식 오류"), PermanentSendError, "3010"),
        (Fail(400, "ValidationError"), PermanentSendError, "ValidationError"),
        (Fail(403, "Forbidden"), TransientSendError, "Forbidden"),
    ],
    ids=[
        "500",
        "503",
        "429",
        "timeout",
        "balance",
        "server-error",
        "opted-out",
        "blocked",
        "bad-recipient",
        "validation",
        "forbidden",
    ],
)
def test_solapis_errors_say_whether_to_retry(solapi, sender, step, error, message):
    solapi.script.append(step)
    started = time.monotonic()
    with pytest.raises(error, match=message):
        sender.send(an_sms())
    assert time.monotonic() - started < SLOW_S
    assert len(solapi.received) == 1


def test_a_sender_number_solapi_does_not_know_is_retried_until_the_operator_registers_it(solapi):
    sender = make_sender(settings_for(solapi, SMS_SENDER_NUMBER="02-9999-0000"))
    with pytest.raises(TransientSendError, match="1062"):
        sender.send(an_sms())


def test_a_wrong_secret_is_refused_by_solapis_signature_check_and_retried(solapi):
    sender = make_sender(settings_for(solapi, SOLAPI_API_SECRET="not-the-secret-0123456789"))
    with pytest.raises(TransientSendError, match="SignatureDoesNotMatch"):
        sender.send(an_sms())
    assert solapi.accepted == []


# Settings


def test_the_credentials_come_from_files_as_the_other_secrets(solapi, tmp_path):
    (tmp_path / "key").write_text(API_KEY + "\n")
    (tmp_path / "secret").write_text(API_SECRET + "\n")
    settings = Settings.from_env(
        {
            "SMS_PROVIDER": "solapi",
            "SOLAPI_API_KEY_FILE": str(tmp_path / "key"),
            "SOLAPI_API_SECRET_FILE": str(tmp_path / "secret"),
            "SMS_SENDER_NUMBER": SENDER_NUMBER,
            "SOLAPI_BASE_URL": solapi.url,
        }
    )
    assert API_SECRET not in repr(settings)
    make_sender(settings).send(an_sms())
    assert len(solapi.accepted) == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SOLAPI_API_KEY": ""}, "needs SOLAPI_API_KEY"),
        ({"SOLAPI_API_SECRET": ""}, "needs SOLAPI_API_SECRET"),
        ({"SMS_SENDER_NUMBER": ""}, "needs SMS_SENDER_NUMBER"),
        ({"SMS_SENDER_NUMBER": "12345"}, "needs SMS_SENDER_NUMBER"),
        ({"SMS_LMS_SUBJECT": "가" * 21}, "SMS_LMS_SUBJECT must be at most 40 bytes"),
        ({"SOLAPI_BASE_URL": "api.solapi.com"}, "SOLAPI_BASE_URL"),
        ({"SOLAPI_API_KEY_FILE": "/nonexistent/key", "SOLAPI_API_KEY": ""}, "cannot be read"),
    ],
)
def test_a_bad_solapi_setting_stops_the_start_naming_it(env, message):
    base = {
        "SMS_PROVIDER": "solapi",
        "SOLAPI_API_KEY": API_KEY,
        "SOLAPI_API_SECRET": API_SECRET,
        "SMS_SENDER_NUMBER": SENDER_NUMBER,
    }
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**base, **env})


@pytest.mark.parametrize("number", ["02-1234-5678", "031-123-4567", "010-1234-5678", "1588-1234"])
def test_korean_sender_numbers_are_taken(number):
    settings = Settings.from_env(
        {
            "SMS_PROVIDER": "solapi",
            "SOLAPI_API_KEY": API_KEY,
            "SOLAPI_API_SECRET": API_SECRET,
            "SMS_SENDER_NUMBER": number,
        }
    )
    assert settings.sms_sender_number == number


# Through send_pending_sms, on the notification database


def test_a_sent_sms_keeps_solapis_message_id_and_is_not_sent_again(container, solapi, sender):
    event = a_pending_sms(container)
    send(container, event, sender)
    sent = stored(container, event)
    assert (sent.status, sent.attempts) == (SmsStatus.SENT, 1)
    assert sent.provider_message_id == "M4V" + "0" * 28 + "1"
    [message] = solapi.accepted
    assert message["text"] == sent.message
    assert message["to"] == event.payload["phone"].replace("-", "")
    assert solapi.keys == [sent.idempotency_key]
    send(container, event, sender)  # a redelivered event sends nothing more
    assert len(solapi.received) == 1


def test_a_message_solapi_will_never_take_fails_after_one_call(container, solapi, sender):
    event = a_pending_sms(container)
    solapi.script.append(Refuse("1061", "사용자에 의해 수신거부 됨"))
    send(container, event, sender)
    failed = stored(container, event)
    assert (failed.status, failed.attempts, failed.provider_message_id) == (
        SmsStatus.FAILED,
        1,
        None,
    )
    assert "1061" in failed.last_error
    send(container, event, sender)
    assert len(solapi.received) == 1


def test_a_balance_run_dry_is_retried_each_round_and_sent_once_topped_up(container, solapi, sender):
    event = a_pending_sms(container)
    solapi.script.extend([Refuse("1030", "잔액 부족")] * 3)  # one round of quick retries
    assert "1030" in send(container, event, sender)[event.event_id]
    waiting = stored(container, event)
    assert (waiting.status, waiting.attempts) == (SmsStatus.PENDING, 1)

    send(container, event, sender)  # the event's redelivery, after the top-up

    sent = stored(container, event)
    assert (sent.status, sent.attempts) == (SmsStatus.SENT, 2)
    assert len(solapi.accepted) == 1 and len(set(solapi.keys)) == 1


def test_a_balance_never_topped_up_fails_after_max_attempts_rounds(container, solapi, sender):
    event = a_pending_sms(container)
    solapi.script.extend([Refuse("1030", "잔액 부족")] * 6)
    send(container, event, sender, max_attempts=2)
    send(container, event, sender, max_attempts=2)
    failed = stored(container, event)
    assert (failed.status, failed.attempts) == (SmsStatus.FAILED, 2)
    assert solapi.accepted == []
