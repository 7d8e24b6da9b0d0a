"""The chaos suite's history checker, given fabricated histories and database snapshots."""

from __future__ import annotations

import itertools

import pytest

from chaos.checker import KINDS, Snapshot, check, default_subscribers
from chaos.history import Command, OrderHistory

SUBSCRIBERS = default_subscribers()
_ids = itertools.count(1)


class World:
    """A clean run to spoil: what the client was told and what the databases hold."""

    def __init__(self):
        self.history: list[OrderHistory] = []
        self.snap = Snapshot()

    def event(self, order: OrderHistory, event_type: str, **payload) -> str:
        event_id = f"ev-{next(_ids)}"
        self.snap.events.append(
            {
                "event_id": event_id,
                "event_type": event_type,
                "order_no": order.order_no,
                "sequence": next(_ids),
                "payload": {"order_no": order.order_no, "phone": order.phone, **payload},
            }
        )
        for consumer in SUBSCRIBERS[event_type]:
            self.snap.deliveries.append(
                {"event_id": event_id, "consumer": consumer, "status": "DONE", "failures": 0}
            )
            processed = (
                self.snap.notification_processed
                if consumer.startswith("notification.")
                else self.snap.processed
            )
            processed.append({"consumer": consumer, "event_id": event_id})
            if consumer == "notification.send_sms":
                self.snap.sms.append(
                    {
                        "id": next(_ids),
                        "event_id": event_id,
                        "event_type": event_type,
                        "phone": order.phone,
                        "order_no": order.order_no,
                        "status": "SENT",
                    }
                )
        return event_id

    def order(self, status: str = "ORDERED", records: tuple[int, ...] = (), final=None):
        """An accepted order that went through the whole flow up to `status`."""
        n = next(_ids)
        order = OrderHistory(f"key-{n}", f"010-2000-{n:04d}", "C1", [201], f"O{n:06d}")
        self.history.append(order)
        self.event(order, "CourseOrdered")
        self.event(order, "LearningStarted", manager_name="김매니저")
        evaluation_id = next(_ids)
        for score in records:
            order.commands.append(Command("record", score, [201]))
            self.snap.evaluation_records.append(
                {"id": next(_ids), "evaluation_id": evaluation_id, "score": score}
            )
            self.event(order, "EvaluationRecorded", score=score)
        learning, evaluation = "STARTED", "IN_PROGRESS"
        if status == "COMPLETED":
            order.commands.append(Command("final", final, [503, 200]))
            self.event(order, "OrderCompleted", score=final)
            self.event(order, "FinalEvaluationRegistered", score=final)
            learning, evaluation = "COMPLETED", "FINAL"
        elif status == "CANCELLED":
            order.commands.append(Command("cancel", None, [None, 200]))
            self.event(order, "CourseOrderCancelled")
            self.event(order, "LearningCancelled")
            learning = evaluation = "CANCELLED"
        score = final if status == "COMPLETED" else None
        self.snap.orders.append(
            {
                "order_no": order.order_no,
                "status": status,
                "score": score,
                "phone": order.phone,
                "idempotency_key": order.key,
            }
        )
        self.snap.learnings.append({"order_no": order.order_no, "status": learning})
        self.snap.evaluations.append(
            {
                "id": evaluation_id,
                "order_no": order.order_no,
                "status": evaluation,
                "final_score": score,
            }
        )
        self.snap.mypage.append(
            {
                "order_no": order.order_no,
                "phone": order.phone,
                "order_status": status,
                "learning_status": learning,
                "evaluation_status": evaluation,
                "latest_score": records[-1] if records else None,
                "final_score": score,
            }
        )
        return order

    def waiting(self, ticket: int, status: str = "WAITLISTED") -> OrderHistory:
        """An order in course C1's waitlist with this ticket (or cancelled while it waited)."""
        n = next(_ids)
        order = OrderHistory(f"key-{n}", f"010-2000-{n:04d}", "C1", [201], f"O{n:06d}")
        self.history.append(order)
        self.event(order, "OrderWaitlisted", waitlist_ticket=ticket)
        if status == "CANCELLED":
            order.commands.append(Command("cancel", None, [200]))
            self.event(order, "CourseOrderCancelled", waitlisted=True)
        self.snap.orders.append(
            {
                "order_no": order.order_no,
                "status": status,
                "score": None,
                "phone": order.phone,
                "idempotency_key": order.key,
                "course_no": "C1",
                "waitlist_ticket": ticket,
            }
        )
        self.snap.mypage.append(
            {
                "order_no": order.order_no,
                "phone": order.phone,
                "order_status": status,
                "learning_status": None,
                "evaluation_status": None,
                "latest_score": None,
                "final_score": None,
            }
        )
        return order

    def check(self):
        return check(self.history, self.snap, SUBSCRIBERS)


@pytest.fixture
def world() -> World:
    w = World()
    w.order("ORDERED", records=(60,))
    w.order("COMPLETED", records=(70, 80), final=85)
    w.order("CANCELLED")
    return w


def row(rows: list[dict], **match) -> dict:
    return next(r for r in rows if all(r[k] == v for k, v in match.items()))


def test_given_a_clean_history_then_nothing_is_reported(world):
    # A refused order and one whose answer never came (and that was not placed) are fine too.
    world.history.append(OrderHistory("key-refused", "010-2000-9998", "C1", [409]))
    world.history.append(OrderHistory("key-unknown", "010-2000-9999", "C1", [None, None]))
    report = world.check()
    assert report.anomalies == []
    assert report.counts == dict.fromkeys(KINDS, 0)
    assert (report.orders, report.indeterminate) == (3, 1)


def test_given_a_delivery_never_done_then_the_event_is_lost(world):
    completed = world.history[1]
    final = row(world.snap.events, order_no=completed.order_no, event_type="OrderCompleted")
    row(world.snap.deliveries, event_id=final["event_id"], consumer="mypage.project")["status"] = (
        "PENDING"
    )
    report = world.check()
    assert report.counts["lost"] == 1
    assert report.anomalies[0].what == "delivery PENDING"
    assert "mypage.project" in report.anomalies[0].subject


def test_given_an_accepted_order_that_is_not_there_then_it_is_lost(world):
    order = world.history[0]
    gone = {e["event_id"] for e in world.snap.events if e["order_no"] == order.order_no}
    world.snap = Snapshot(
        **{
            name: [
                r
                for r in rows
                if r.get("order_no") != order.order_no and r.get("event_id") not in gone
            ]
            for name, rows in vars(world.snap).items()
        }
    )
    report = world.check()
    assert [(a.kind, a.what) for a in report.anomalies] == [("lost", "accepted order missing")]


def test_given_a_final_score_answered_200_but_the_order_still_ordered_then_it_is_lost(world):
    world.history[0].commands.append(Command("final", 90, [200]))
    report = world.check()
    assert "final score answered 200 but not on the order" in [a.what for a in report.anomalies]
    assert report.counts["lost"] == 1


def test_given_two_sms_for_one_event_and_phone_then_it_is_duplicated(world):
    sms = row(world.snap.sms, event_type="LearningStarted")
    world.snap.sms.append(dict(sms, id=999_999))
    report = world.check()
    assert report.counts["duplicated"] >= 1
    assert "SMS sent twice" in [a.what for a in report.anomalies if a.kind == "duplicated"]
    assert report.counts["lost"] == report.counts["unexpected"] == 0


def test_given_two_learning_started_for_one_order_then_it_is_duplicated(world):
    order = world.history[0]
    world.event(order, "LearningStarted", manager_name="이매니저")
    report = world.check()
    assert "LearningStarted raised twice" in [a.what for a in report.anomalies]
    assert {a.kind for a in report.anomalies} == {"duplicated"}


def test_given_an_order_completed_but_learning_still_started_then_it_is_inconsistent(world):
    completed = world.history[1]
    row(world.snap.learnings, order_no=completed.order_no)["status"] = "STARTED"
    report = world.check()
    assert report.counts == {**dict.fromkeys(KINDS, 0), "inconsistent": 1}
    assert "learning STARTED" in report.anomalies[0].detail


def test_given_my_page_showing_an_older_state_then_it_is_inconsistent(world):
    cancelled = world.history[2]
    row(world.snap.mypage, order_no=cancelled.order_no)["order_status"] = "ORDERED"
    report = world.check()
    assert report.counts["inconsistent"] == 1


def test_given_an_sms_for_a_rolled_back_order_then_it_is_unexpected(world):
    world.snap.sms.append(
        {
            "id": 123_456,
            "event_id": "ev-rolled-back",
            "event_type": "CourseOrdered",
            "phone": "010-2000-9997",
            "order_no": "OROLLEDBACK",
            "status": "SENT",
        }
    )
    report = world.check()
    assert [a.what for a in report.anomalies] == ["SMS whose event is not in the outbox"]


def test_given_an_order_the_client_was_refused_then_its_existence_is_unexpected(world):
    refused = OrderHistory("key-refused", "010-2000-9998", "C1", [503, 409])
    world.history.append(refused)
    ghost = world.order("ORDERED")
    world.history.remove(ghost)
    row(world.snap.orders, order_no=ghost.order_no)["idempotency_key"] = refused.key
    report = world.check()
    assert [a.what for a in report.anomalies] == ["order placed though refused"]


def test_given_a_final_evaluation_of_a_cancelled_order_then_it_is_unexpected(world):
    cancelled = world.history[2]
    evaluation = row(world.snap.evaluations, order_no=cancelled.order_no)
    evaluation.update(status="FINAL", final_score=50)
    report = world.check()
    kinds = {a.kind for a in report.anomalies}
    assert kinds == {"unexpected", "inconsistent"}


def test_given_an_injected_order_it_is_checked_without_a_201(world):
    injected = world.order("ORDERED")
    world.history.remove(injected)
    world.snap.orders = [r for r in world.snap.orders if r["order_no"] != injected.order_no]
    report = check(world.history, world.snap, SUBSCRIBERS, {injected.order_no: "ORDERED"})
    assert report.anomalies == []
    report = world.check()
    assert report.counts["unexpected"] >= 1


# --- seats (SPEC 11) -------------------------------------------------------------------------


def a_full_course(world: World, waiting: int = 2) -> list[OrderHistory]:
    """The world's orders hold every seat of course C1, and `waiting` orders are in its
    waitlist (returned, the oldest first)."""
    for order in world.snap.orders:
        order.update(course_no="C1", waitlist_ticket=None)
    capacity = len(world.snap.orders)
    world.snap.courses.append(
        {"course_no": "C1", "capacity": capacity, "seats_taken": capacity, "waitlisted": waiting}
    )
    return [world.waiting(ticket) for ticket in range(1, waiting + 1)]


@pytest.fixture
def seats_world() -> World:
    w = World()
    w.order("ORDERED")
    w.order("COMPLETED", final=90)
    return w


def test_given_a_full_course_with_a_waitlist_then_nothing_is_reported(seats_world):
    a_full_course(seats_world)
    seats_world.waiting(9, status="CANCELLED")  # left while it waited: no learning, fine
    seats_world.snap.courses[0]["waitlisted"] = 2
    report = seats_world.check()
    assert report.anomalies == [] and report.counts == dict.fromkeys(KINDS, 0)


def test_given_more_seats_held_than_the_capacity_then_the_course_is_oversold(seats_world):
    a_full_course(seats_world, waiting=0)
    seats_world.snap.courses[0]["capacity"] = 1
    assert seats_world.check().counts["oversold"] == 1


def test_given_a_seat_free_while_orders_wait_then_a_seat_is_lost(seats_world):
    a_full_course(seats_world)
    row(seats_world.snap.orders, status="ORDERED")["status"] = "CANCELLED"
    report = seats_world.check()
    assert report.counts["seats_lost"] == 2  # a free seat, and the counts that disagree
    assert {a.what for a in report.anomalies if a.kind == "seats_lost"} == {
        "a seat free while orders wait",
        "the course's counts disagree with its orders",
    }


def test_given_a_later_waiting_order_seated_before_an_earlier_one_then_it_is_unexpected(
    seats_world,
):
    _first, second = a_full_course(seats_world)
    row(seats_world.snap.orders, status="ORDERED")["status"] = "CANCELLED"
    row(seats_world.snap.orders, order_no=second.order_no)["status"] = "ORDERED"
    report = seats_world.check()
    assert "a later waiting order seated before an earlier one" in {
        a.what for a in report.anomalies
    }


def test_given_a_waiting_order_with_a_learning_then_it_is_inconsistent(seats_world):
    [waiting] = a_full_course(seats_world, waiting=1)
    seats_world.snap.learnings.append({"order_no": waiting.order_no, "status": "STARTED"})
    assert seats_world.check().counts["inconsistent"] == 1
