"""The My page projection: every event updates its order's row; the newest state always wins."""

from __future__ import annotations

from datetime import date, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select

from app.mypage.model import MyPageRow
from app.shared.db.bulk import among, insert_missing, update_rows
from app.shared.events import Event, EventType
from app.shared.states import EvaluationStatus, LearningStatus, OrderStatus
from app.shared.uow import UnitOfWork

E = EventType
_TABLE = MyPageRow.__table__

# For each event, the parts of the row it sets. A part is applied only if the event's sequence
# is newer than the one that last set that part, so any arrival order converges.
_CHANGES: dict[EventType, list[tuple[str, dict[str, Any]]]] = {
    E.COURSE_ORDERED: [("order", {"order_status": OrderStatus.ORDERED})],
    E.ORDER_WAITLISTED: [("order", {"order_status": OrderStatus.WAITLISTED})],
    E.COURSE_ORDER_CANCELLED: [("order", {"order_status": OrderStatus.CANCELLED})],
    E.ORDER_COMPLETED: [("order", {"order_status": OrderStatus.COMPLETED})],
    # The evaluation is opened on LearningStarted and cancelled on LearningCancelled.
    E.LEARNING_STARTED: [
        ("learning", {"learning_status": LearningStatus.STARTED}),
        ("evaluation", {"evaluation_status": EvaluationStatus.IN_PROGRESS}),
    ],
    E.LEARNING_CANCELLED: [
        ("learning", {"learning_status": LearningStatus.CANCELLED}),
        ("evaluation", {"evaluation_status": EvaluationStatus.CANCELLED}),
    ],
    E.EVALUATION_RECORDED: [("score", {})],
    # The learning completes on FinalEvaluationRegistered; and an evaluation is FINAL only
    # after its order was COMPLETED (SPEC 6), so the row need not wait for OrderCompleted's
    # copy (which comes later: it is behind the score chain).
    E.FINAL_EVALUATION_REGISTERED: [
        ("evaluation", {"evaluation_status": EvaluationStatus.FINAL}),
        ("learning", {"learning_status": LearningStatus.COMPLETED}),
        ("order", {"order_status": OrderStatus.COMPLETED}),
    ],
}


def apply(row: MyPageRow | SimpleNamespace, event: Event) -> None:
    """Fold one event into the row, an entity or plain values (pure: no I/O)."""
    p = event.payload
    if event.event_type in (E.COURSE_ORDERED, E.ORDER_WAITLISTED):
        # Facts fixed at order time: every copy carries the same values, in any order (an
        # order that waited for its seat tells them again when it gets it).
        if event.event_type == E.ORDER_WAITLISTED:
            row.waitlist_ticket = p["waitlist_ticket"]
        row.course_no = p["course_no"]
        row.course_title = p.get("course_title")
        row.ordered_at = datetime.fromisoformat(p["ordered_at"])
        row.begin_date = date.fromisoformat(p["begin_date"])
        row.end_date = date.fromisoformat(p["end_date"])
    elif event.event_type == E.LEARNING_STARTED:
        row.manager_name = p.get("manager_name")  # a fact of the start, not a state
    for part, values in _CHANGES.get(event.event_type, []):
        seq_field = f"{part}_seq"
        if event.sequence <= (getattr(row, seq_field) or 0):
            continue
        setattr(row, seq_field, event.sequence)
        for name, value in values.items():
            setattr(row, name, value)
        if event.event_type == E.EVALUATION_RECORDED:
            row.latest_score = p.get("score")
        elif event.event_type == E.FINAL_EVALUATION_REGISTERED and part == "evaluation":
            row.final_score = p.get("score")
    if row.updated_at is None or event.occurred_at > row.updated_at:
        row.updated_at = event.occurred_at


def project(uow: UnitOfWork, events: list[Event]) -> None:
    """Policy: fold each event into its order's row, in three statements for the whole batch:
    create the missing rows, lock and read them all, write back those that changed. The rows
    are plain values, not entities: the ORM's flush would write them one statement each."""
    phones = {event.order_no: event.payload["phone"] for event in events if event.order_no}
    if not phones:
        return  # an event of no order has no row
    # In order_no order, so that two batches lock the rows they share in one order.
    order_nos = sorted(phones)
    session = uow.session
    insert_missing(
        session, _TABLE, [empty_values(order_no, phones[order_no]) for order_no in order_nos]
    )
    read = session.execute(
        select(_TABLE)
        .where(among(session, _TABLE.c.order_no, order_nos))
        .order_by(_TABLE.c.order_no)
        .with_for_update()
    ).mappings()
    rows = {values["order_no"]: SimpleNamespace(**values) for values in read}
    stored = {order_no: dict(vars(row)) for order_no, row in rows.items()}
    for event in events:
        if event.order_no:
            apply(rows[event.order_no], event)
    changed = [vars(row) for order_no, row in rows.items() if vars(row) != stored[order_no]]
    update_rows(session, _TABLE, "order_no", changed)


def empty_values(order_no: str, phone: str) -> dict[str, Any]:
    return {
        "order_no": order_no,
        "phone": phone,
        "order_seq": 0,
        "learning_seq": 0,
        "evaluation_seq": 0,
        "score_seq": 0,
    }


def new_row(order_no: str, phone: str) -> MyPageRow:
    """The empty row of an order, before any event is folded into it."""
    return MyPageRow(**empty_values(order_no, phone))
