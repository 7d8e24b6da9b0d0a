"""The HTTP SMS sender against a test gateway on loopback: retries, refusals, idempotency keys."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest

from app.notification.senders import HttpSender, Outgoing, PermanentSendError, TransientSendError
from app.shared.states import SmsStatus
from tests.integration.sms import a_pending_sms, send, stored
from tests.loopback import no_proxy, serving

TIMEOUT_S = 0.3
SLOW_S = 0.6  # longer than the sender's timeout


@dataclass(frozen=True)
class Delay:
    """Accept the message, but answer only after `seconds`."""

    seconds: float = SLOW_S


@dataclass
class Gateway:
    """What the test gateway received, and how it answers next: a script of HTTP statuses or
    Delays; once the script is spent, every request is accepted."""

    url: str = ""
    script: list[int | Delay] = field(default_factory=list)
    requests: list[tuple[str | None, dict]] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)  # Idempotency-Key -> message id
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, key: str | None, body: dict) -> tuple[int, dict, float]:
        with self.lock:
            self.requests.append((key, body))
            step = self.script.pop(0) if self.script else 200
            if isinstance(step, int) and step != 200:
                return step, {"error": f"scripted {step}"}, 0.0
            # Accepted. Like a real gateway, a known key gets the first message id back.
            if key not in self.messages:
                self.messages[key] = f"gw-{len(self.messages) + 1}"
            delay = step.seconds if isinstance(step, Delay) else 0.0
            return 200, {"message_id": self.messages[key]}, delay

    @property
    def keys(self) -> list[str | None]:
        return [key for key, _ in self.requests]


@pytest.fixture
def gateway(monkeypatch):
    no_proxy(monkeypatch)
    state = Gateway()

    def answer(_path, headers, body):
        return state.answer(headers.get("Idempotency-Key"), body)

    with serving(answer) as url:
        state.url = f"{url}/sms"
        yield state


@pytest.fixture
def sender(gateway) -> HttpSender:
    return HttpSender(gateway.url, TIMEOUT_S)


def an_sms(n: int = 1) -> Outgoing:
    return Outgoing(f"onlinestudy-sms-test-{uuid.uuid4()}", "010-1234-5678", f"안녕하세요 {n}")


# HttpSender alone


def test_given_an_accepting_gateway_then_the_message_id_comes_back_and_the_key_is_sent(
    gateway, sender
):
    sms = an_sms()
    assert sender.send(sms) == "gw-1"
    assert gateway.requests == [
        (
            sms.idempotency_key,
            {"to": sms.phone, "text": sms.text, "client_ref": sms.idempotency_key},
        )
    ]


@pytest.mark.parametrize(
    ("step", "error", "message"),
    [
        (503, TransientSendError, "503"),
        (500, TransientSendError, "500"),
        (429, TransientSendError, "429"),
        (Delay(), TransientSendError, "ReadTimeout"),
        (400, PermanentSendError, "400"),
        (422, PermanentSendError, "scripted 422"),
    ],
    ids=["503", "500", "429", "timeout", "400", "422"],
)
def test_given_a_failing_gateway_then_the_error_says_whether_to_retry(
    gateway, sender, step, error, message
):
    gateway.script.append(step)
    started = time.monotonic()
    with pytest.raises(error, match=message):
        sender.send(an_sms())
    assert time.monotonic() - started < SLOW_S
    assert len(gateway.requests) == 1


def test_given_no_gateway_listening_then_the_send_is_transient():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more: connection refused.
    with pytest.raises(TransientSendError, match="ConnectionError"):
        HttpSender(f"http://127.0.0.1:{port}/sms", TIMEOUT_S).send(an_sms())


def test_given_the_same_key_twice_then_the_gateway_keeps_one_message(gateway, sender):
    first, other = an_sms(1), an_sms(2)
    assert [sender.send(first), sender.send(other), sender.send(first)] == ["gw-1", "gw-2", "gw-1"]
    assert len(gateway.messages) == 2


# send_pending_sms through the real sender, on the notification database


@pytest.mark.parametrize(
    "script",
    [[503, 200], [429, 200], [Delay(), 200], [503, Delay(), 200], [502, 429]],
    ids=["5xx", "429", "timeout", "5xx-timeout", "5xx-429"],
)
def test_given_transient_failures_then_they_are_retried_and_the_sms_is_sent(
    container, gateway, sender, script
):
    event = a_pending_sms(container)
    message = stored(container, event)
    gateway.script.extend(script)

    send(container, event, sender)

    sent = stored(container, event)
    assert (sent.status, sent.provider_message_id, sent.attempts) == (SmsStatus.SENT, "gw-1", 1)
    assert sent.sent_at is not None
    assert gateway.keys == [message.idempotency_key] * (len([s for s in script if s != 200]) + 1)
    assert len(gateway.messages) == 1


def test_given_a_refusal_then_the_sms_fails_at_once_after_one_call(container, gateway, sender):
    event = a_pending_sms(container)
    message = stored(container, event)
    gateway.script.append(400)

    send(container, event, sender)

    failed = stored(container, event)
    assert (failed.status, failed.attempts, failed.provider_message_id) == (
        SmsStatus.FAILED,
        1,
        None,
    )
    assert "400" in failed.last_error
    assert gateway.keys == [message.idempotency_key]
    send(container, event, sender)  # a redelivered event sends nothing more
    assert len(gateway.requests) == 1


def test_given_a_gateway_down_for_a_whole_round_then_the_redelivery_sends_it(
    container, gateway, sender
):
    event = a_pending_sms(container)
    message = stored(container, event)
    gateway.script.extend([503, 503, 503])

    assert "503" in send(container, event, sender)[event.event_id]
    waiting = stored(container, event)
    assert (waiting.status, waiting.attempts) == (SmsStatus.PENDING, 1)
    assert "503" in waiting.last_error

    send(container, event, sender)  # the event's redelivery

    sent = stored(container, event)
    assert (sent.status, sent.attempts, sent.provider_message_id) == (SmsStatus.SENT, 2, "gw-1")
    assert gateway.keys == [message.idempotency_key] * 4


def test_given_a_gateway_down_for_every_round_then_the_sms_fails(container, gateway, sender):
    event = a_pending_sms(container)
    gateway.script.extend([503] * 6)

    assert event.event_id in send(container, event, sender, max_attempts=2)
    send(container, event, sender, max_attempts=2)

    failed = stored(container, event)
    assert (failed.status, failed.attempts) == (SmsStatus.FAILED, 2)
    assert len(gateway.requests) == 6 and gateway.messages == {}


class Crash(Exception):
    """The worker dies after the gateway took the message, before its commit."""


class CrashAfterSend:
    name = "http"

    def __init__(self, sender: HttpSender):
        self.sender = sender

    def send(self, sms: Outgoing) -> str:
        self.sender.send(sms)
        raise Crash


def test_given_a_crash_after_the_gateway_took_it_then_the_resend_is_the_same_message(
    container, gateway, sender
):
    event = a_pending_sms(container)
    message = stored(container, event)
    with pytest.raises(Crash):
        send(container, event, CrashAfterSend(sender))
    assert stored(container, event).status == SmsStatus.PENDING  # nothing of it was committed

    send(container, event, sender)

    sent = stored(container, event)
    assert (sent.status, sent.provider_message_id) == (SmsStatus.SENT, "gw-1")
    assert gateway.keys == [message.idempotency_key] * 2
    assert len(gateway.messages) == 1
