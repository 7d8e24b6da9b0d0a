"""My page rebuilt from the event log gives back the rows the live projection wrote."""

from datetime import date

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from app.consumer import consume
from app.evaluation.handlers import RecordEvaluation, record_evaluation
from app.learning.handlers import RegisterManager, register_manager
from app.mypage.model import MyPageRow
from app.mypage.projection import new_row
from app.mypage.rebuild import rebuild
from app.orders import handlers
from app.policies import BY_CONSUMER, POLICIES
from app.shared.events import EventType
from app.shared.idempotency import PROCESSED
from app.shared.outbox.tables import Delivery, DeliveryStatus, OutboxEvent
from app.shared.retention import prune
from tests.helpers import counting, random_course_no, random_phone
from tests.integration.test_retention import age

# The My page answer of SPEC section 8.
COLUMNS = (
    "order_no",
    "course_no",
    "course_title",
    "order_status",
    "learning_status",
    "manager_name",
    "evaluation_status",
    "latest_score",
    "final_score",
    "ordered_at",
    "begin_date",
    "end_date",
    "updated_at",
)
STATE = ("order_status", "learning_status", "manager_name", "evaluation_status")
PROJECT = BY_CONSUMER["mypage.project"]


def an_order(container, title="데이터 분석") -> str:
    course_no = random_course_no()
    handlers.create_course(
        container.orders_uow(), handlers.CreateCourse(course_no=course_no, title=title, price=1000)
    )
    order, _ = handlers.place_order(
        container.orders_uow(),
        handlers.PlaceOrder(course_no, random_phone(), date(2026, 12, 1), date(2027, 2, 28)),
    )
    run_policies(container, [order.order_no])
    return order.order_no


def run_policies(container, order_nos) -> None:
    """Deliver the orders' events to every policy but My page's until no new event appears."""
    seen = -1
    while seen != (seen := sum(len(envelopes(container, o)) for o in order_nos)):
        for policy in POLICIES:
            if policy is not PROJECT:
                for order_no in order_nos:
                    history = envelopes(container, order_no)
                    consume(
                        container, policy, [e for e in history if e["event_type"] in policy.events]
                    )


def envelopes(container, order_no, event_type=None) -> list[dict]:
    with container.main_session() as session:
        stmt = select(OutboxEvent).where(OutboxEvent.order_no == order_no)
        if event_type:
            stmt = stmt.where(OutboxEvent.event_type == str(event_type))
        return [
            e.to_event().envelope()
            for e in session.execute(stmt.order_by(OutboxEvent.sequence)).scalars()
        ]


def evaluation_of(container, order_no) -> int:
    with container.evaluation_uow() as uow:
        return uow.evaluations.of_order(order_no).id


def visible(container, order_nos) -> dict[str, dict | None]:
    """The My page answer's columns of each order's row (None: no row)."""
    with container.main_session() as session:
        rows = {order_no: session.get(MyPageRow, order_no) for order_no in order_nos}
    return {
        order_no: row and {name: getattr(row, name) for name in COLUMNS}
        for order_no, row in rows.items()
    }


def pick(row: dict, *names: str) -> tuple:
    return tuple(row[name] for name in names)


def run_rebuild(container) -> None:
    """Rebuild and commit; the count returned is that of the rows now in the table. (Tests with
    real commits leave rows of their own, so the table holds more than this test's orders.)"""
    with container.main_session() as session:
        count = rebuild(session, PROJECT.consumer, PROJECT.events)
        session.commit()
        assert count == session.execute(select(func.count()).select_from(MyPageRow)).scalar_one()


def recorded(container, consumer: str, envelopes: list[dict]) -> set[str]:
    """Which of these events `consumer` has a processed-messages record of."""
    table = PROCESSED["main"]
    with container.main_session() as session:
        return set(
            session.execute(
                select(table.c.event_id).where(
                    table.c.consumer == consumer,
                    table.c.event_id.in_([e["event_id"] for e in envelopes]),
                )
            ).scalars()
        )


def test_given_rows_projected_live_when_rebuilt_then_the_same_rows_come_back(container):
    waiting = an_order(container)  # no manager yet (ManagerRegistered is not delivered here)
    register_manager(container.learning_uow(), RegisterManager("한매니저", "010-9999-0101"))
    cancelled, completed = an_order(container), an_order(container, "웹 개발")
    handlers.cancel_order(container.orders_uow(), cancelled)
    evaluation_id = evaluation_of(container, completed)
    for score in (70, 85):
        record_evaluation(container.evaluation_uow(), RecordEvaluation(evaluation_id, score))
    assert handlers.register_score(container.orders_uow(), completed, 90) == "completed"
    run_policies(container, [cancelled, completed])
    orders = [waiting, cancelled, completed]
    for order_no in orders:  # live: newest first, and twice
        history = envelopes(container, order_no)
        consume(container, PROJECT, list(reversed(history)) + history)
    before = visible(container, orders)
    scores = ("latest_score", "final_score")
    assert pick(before[completed], *STATE, *scores) == (
        "COMPLETED",
        "COMPLETED",
        "한매니저",
        "FINAL",
        85,
        90,
    )
    assert pick(before[cancelled], *STATE) == ("CANCELLED", "CANCELLED", "한매니저", "CANCELLED")
    assert pick(before[waiting], *STATE) == ("ORDERED", None, None, None)
    # A damaged read model: a row lost, one wrong, one of no order at all.
    with container.main_session() as session:
        session.delete(session.get(MyPageRow, waiting))
        session.get(MyPageRow, completed).final_score = 1
        session.add(new_row("ONOSUCHORDER", random_phone()))
        session.commit()

    run_rebuild(container)

    assert visible(container, orders) == before
    assert visible(container, ["ONOSUCHORDER"]) == {"ONOSUCHORDER": None}


def test_given_a_rebuild_when_a_folded_event_is_redelivered_then_nothing_changes(container):
    register_manager(container.learning_uow(), RegisterManager("윤매니저", "010-9999-0102"))
    order_no = an_order(container)
    history = envelopes(container, order_no)  # CourseOrdered, LearningStarted: never projected
    run_rebuild(container)
    rebuilt = visible(container, [order_no])
    assert pick(rebuilt[order_no], *STATE) == ("ORDERED", "STARTED", "윤매니저", "IN_PROGRESS")
    assert recorded(container, PROJECT.consumer, history) == {e["event_id"] for e in history}
    # The other consumers' records are theirs: the rebuild leaves them alone.
    assert recorded(container, "learning.open_learning", history[:1]) == {history[0]["event_id"]}
    policy, handled = counting(PROJECT)

    # Both copies of each event are recorded done; none is applied.
    assert consume(container, policy, history + history) == [e["event_id"] for e in history]

    assert handled == []
    assert visible(container, [order_no]) == rebuilt
    with container.main_session() as session:
        statuses = session.execute(
            select(Delivery.status).where(
                Delivery.consumer == PROJECT.consumer,
                Delivery.event_id.in_([e["event_id"] for e in history]),
            )
        ).scalars()
        assert set(statuses) == {DeliveryStatus.DONE}
    # An event the rebuild did not see is still projected live.
    evaluation_id = evaluation_of(container, order_no)
    record_evaluation(container.evaluation_uow(), RecordEvaluation(evaluation_id, 77))
    [recorded_score] = envelopes(container, order_no, EventType.EVALUATION_RECORDED)
    consume(container, policy, [recorded_score])
    assert handled == [recorded_score["event_id"]]
    assert visible(container, [order_no])[order_no]["latest_score"] == 77


def test_given_a_rebuild_in_progress_then_the_live_projection_waits_and_readers_do_not(
    container, engines
):
    an_order(container)
    with container.main_session() as session:
        rebuild(
            session, PROJECT.consumer, PROJECT.events
        )  # not committed yet: the test's transaction holds the lock
        with engines["main"].connect() as other:
            other.execute(text("SET lock_timeout = '100ms'"))
            other.execute(select(MyPageRow.order_no)).all()  # a reader does not wait
            with pytest.raises(OperationalError, match="lock timeout"):
                other.execute(select(MyPageRow).with_for_update())
            other.rollback()


def facts(container, order_no: str) -> dict:
    """The row's answer but for updated_at (which follows the events' times, moved here)."""
    row = visible(container, [order_no])[order_no]
    return {name: value for name, value in row.items() if name != "updated_at"}


def test_given_the_bookkeeping_pruned_when_rebuilt_then_the_rows_come_back_and_old_copies_stay_out(
    container,
):
    register_manager(container.learning_uow(), RegisterManager("정리매니저", "010-9999-0103"))
    order_no = an_order(container)
    history = envelopes(container, order_no)
    consume(container, PROJECT, history)
    before = facts(container, order_no)
    age(container, order_no, days=8)
    prune(container.db.session, 7 * 86400)
    assert recorded(container, PROJECT.consumer, history) == set()

    run_rebuild(container)

    assert facts(container, order_no) == before
    assert recorded(container, PROJECT.consumer, history) == {e["event_id"] for e in history}
    policy, handled = counting(PROJECT)
    consume(container, policy, envelopes(container, order_no))  # old copies, aged
    assert handled == []
    assert facts(container, order_no) == before
