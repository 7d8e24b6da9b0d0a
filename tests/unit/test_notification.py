"""SMS texts and sending: retries, failures, one message per event and phone (fakes)."""

from app.notification.handlers import record_sms, send_pending_sms
from app.notification.senders import PermanentSendError, TransientSendError
from app.notification.templates import render
from app.shared.events import Event, EventType
from app.shared.states import SmsStatus
from tests.unit.fakes import FakeNotificationUnitOfWork, FakeSender


def learning_started() -> Event:
    return Event(
        EventType.LEARNING_STARTED,
        "O1",
        {"order_no": "O1", "phone": "010-1234-5678", "manager_name": "김매니저"},
    )


def test_every_milestone_has_a_korean_text_with_its_details():
    def text(event_type, **payload):
        return render(Event(event_type, "O1", {"phone": "010-1234-5678", **payload}))

    assert "강좌 주문" in text(EventType.COURSE_ORDERED, course_title="파이썬 입문")
    assert "파이썬 입문" in text(EventType.COURSE_ORDERED, course_title="파이썬 입문")
    assert "강좌 주문 취소" in text(EventType.COURSE_ORDER_CANCELLED)
    assert "학습관리 시작" in text(EventType.LEARNING_STARTED, manager_name="김매니저")
    assert "김매니저" in text(EventType.LEARNING_STARTED, manager_name="김매니저")
    assert "학습관리 취소" in text(EventType.LEARNING_CANCELLED)
    assert "수료" in text(EventType.FINAL_EVALUATION_REGISTERED, score=93)
    assert "93" in text(EventType.FINAL_EVALUATION_REGISTERED, score=93)
    assert text(EventType.EVALUATION_RECORDED, score=50) is None


def test_given_the_same_event_twice_then_one_message_is_stored_and_sent_once():
    sender = FakeSender()
    uow = FakeNotificationUnitOfWork(sender)
    event = learning_started()
    for _ in range(2):
        record_sms(uow, [event])
        uow.commit()  # as the consumer runner does, before the send
        send_pending_sms(uow, [event])
    [message] = uow.messages.items
    assert message.status == SmsStatus.SENT and message.provider_message_id == "provider-1"
    assert len(sender.sent) == 1
    assert sender.sent[0].idempotency_key == message.idempotency_key


def test_given_a_gateway_hiccup_when_sending_then_it_is_retried_and_sent():
    sender = FakeSender([TransientSendError("503")])
    uow = FakeNotificationUnitOfWork(sender)
    event = learning_started()
    record_sms(uow, [event])
    send_pending_sms(uow, [event])
    assert uow.messages.items[0].status == SmsStatus.SENT
    assert sender.calls == 2


def test_given_a_permanent_refusal_then_the_message_fails_at_once():
    sender = FakeSender([PermanentSendError("400")])
    uow = FakeNotificationUnitOfWork(sender)
    event = learning_started()
    record_sms(uow, [event])
    send_pending_sms(uow, [event])
    assert uow.messages.items[0].status == SmsStatus.FAILED
    assert sender.calls == 1


def test_given_a_gateway_down_for_good_then_the_message_fails_after_the_last_round():
    sender = FakeSender([TransientSendError("timeout")] * 100)
    uow = FakeNotificationUnitOfWork(sender, max_attempts=3)
    event = learning_started()
    record_sms(uow, [event])
    raised = 0
    for _ in range(3):
        if send_pending_sms(uow, [event], quick_retries=2):
            raised += 1
    message = uow.messages.items[0]
    assert raised == 2  # the first two rounds ask for a redelivery, the last one gives up
    assert message.status == SmsStatus.FAILED and message.attempts == 3


def test_given_a_batch_when_the_gateway_fails_a_whole_round_then_the_rest_wait_untried():
    sender = FakeSender([TransientSendError("503")] * 2)
    uow = FakeNotificationUnitOfWork(sender)
    events = [learning_started() for _ in range(3)]
    record_sms(uow, events)

    retry = send_pending_sms(uow, events, quick_retries=2)

    assert set(retry) == {e.event_id for e in events}
    assert [m.attempts for m in uow.messages.items] == [1, 0, 0]
    assert sender.calls == 2  # the first message's round; the others did not wait it out
    assert send_pending_sms(uow, events) == {}  # the redelivery
    assert [m.status for m in uow.messages.items] == [SmsStatus.SENT] * 3


def test_the_key_given_to_the_provider_is_the_same_in_a_re_created_database():
    """A restored or re-created database numbers its rows anew: the key follows the event and
    the recipient, not the row."""
    event = learning_started()
    keys = []
    for first_id in (1, 500):
        sender = FakeSender()
        uow = FakeNotificationUnitOfWork(sender)
        uow.messages.next_id = first_id
        record_sms(uow, [event])
        send_pending_sms(uow, [event])
        keys.append(sender.sent[0].idempotency_key)
    assert keys[0] == keys[1]
    other = Event(EventType.LEARNING_STARTED, "O1", {**event.payload, "phone": "010-9999-8888"})
    sender = FakeSender()
    uow = FakeNotificationUnitOfWork(sender)
    record_sms(uow, [other])
    send_pending_sms(uow, [other])
    assert sender.sent[0].idempotency_key != keys[0]  # another recipient, another message
