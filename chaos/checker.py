"""The history checker, in the manner of Jepsen's queue checker: after the load and the faults,
and once the system has drained, compare what the client was told with what every context holds.

- lost: an accepted command whose events or effects are missing, or a delivery never DONE;
- duplicated: a side effect that happened twice (two SMS for one event and phone, two
  LearningStarted for one order, a record stored twice);
- unexpected: something that should not have happened (an SMS whose event is not in the
  outbox, an order the client was never given, a FINAL evaluation of an order not COMPLETED
  with that score, an order cancelled that nobody cancelled);
- inconsistent: an order whose states disagree across orders, learning, evaluation and My page;
- oversold: a course with more orders holding a seat than its capacity (SPEC 11);
- seats_lost: a seat free while orders wait for one, or a course's counts of seats taken and
  orders waiting that disagree with its orders.

`check()` is pure: the snapshot of the databases and the history are plain data.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from chaos.history import INDETERMINATE, OrderHistory

KINDS = ("lost", "duplicated", "unexpected", "inconsistent", "oversold", "seats_lost")

# Events an order raises at most once, whatever the redeliveries.
ONCE_PER_ORDER = (
    "CourseOrdered",
    "OrderWaitlisted",
    "SeatConfirmed",
    "CourseOrderCancelled",
    "LearningStarted",
    "LearningCancelled",
    "OrderCompleted",
    "FinalEvaluationRegistered",
)
SMS_CONSUMER = "notification.send_sms"


@dataclass
class Snapshot:
    """The rows the checker reads, one list of dicts per table (see `read_snapshot`)."""

    orders: list[dict] = field(default_factory=list)
    courses: list[dict] = field(default_factory=list)
    learnings: list[dict] = field(default_factory=list)
    evaluations: list[dict] = field(default_factory=list)
    evaluation_records: list[dict] = field(default_factory=list)
    mypage: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    deliveries: list[dict] = field(default_factory=list)
    processed: list[dict] = field(default_factory=list)  # main database
    notification_processed: list[dict] = field(default_factory=list)
    sms: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Anomaly:
    kind: str  # one of KINDS
    what: str  # a short name of the rule
    subject: str  # the order, event or SMS it is about
    detail: str = ""


@dataclass
class Report:
    anomalies: list[Anomaly]
    orders: int  # accepted by the API (201), probes included
    indeterminate: int  # orders and commands whose outcome the client never learned
    coverage: dict = field(default_factory=dict)  # how much there was to check

    def count(self, kind: str) -> int:
        return sum(1 for a in self.anomalies if a.kind == kind)

    @property
    def counts(self) -> dict[str, int]:
        return {kind: self.count(kind) for kind in KINDS}

    @property
    def valid(self) -> bool:
        return not self.anomalies


def default_subscribers() -> dict[str, tuple[str, ...]]:
    """Event type -> its consumers, from the application's own policy table."""
    from app.policies import POLICIES

    table: dict[str, list[str]] = defaultdict(list)
    for policy in POLICIES:
        for event_type in policy.events:
            table[str(event_type)].append(policy.consumer)
    return {k: tuple(v) for k, v in table.items()}


def check(
    history: Sequence[OrderHistory],
    snap: Snapshot,
    subscribers: Mapping[str, Sequence[str]],
    injected: Mapping[str, str] | None = None,
) -> Report:
    """`injected`: orders the suite wrote straight into the outbox (order_no -> the order
    status they stand for); they have no row in orders_orders and no 201, and are checked
    otherwise like the others."""
    injected = dict(injected or {})
    found: list[Anomaly] = []

    def flag(kind: str, what: str, subject: str | None, detail: str = "") -> None:
        anomaly = Anomaly(kind, what, subject or "-", detail)
        if anomaly not in found:
            found.append(anomaly)

    orders = {row["order_no"]: row for row in snap.orders}
    learnings = {row["order_no"]: row for row in snap.learnings}
    evaluations = {row["order_no"]: row for row in snap.evaluations}
    mypage = {row["order_no"]: row for row in snap.mypage}
    events = {row["event_id"]: row for row in snap.events}
    records_of: dict[int, list[dict]] = defaultdict(list)
    for row in sorted(snap.evaluation_records, key=lambda r: r["id"]):
        records_of[row["evaluation_id"]].append(row)
    events_of: dict[str, list[dict]] = defaultdict(list)
    for row in snap.events:
        if row["order_no"]:
            events_of[row["order_no"]].append(row)
    known_orders = set(orders) | set(injected)
    sms_types = {t for t, consumers in subscribers.items() if SMS_CONSUMER in consumers}

    _check_deliveries(snap, events, subscribers, flag)
    _check_sms(snap, events, orders, sms_types, known_orders, flag)
    _check_seats(snap, flag)

    # Rows of any context for an order that does not exist: a rolled-back order, say.
    for table, rows in (
        ("outbox event", events_of),
        ("learning", learnings),
        ("evaluation", evaluations),
        ("My page row", mypage),
    ):
        for order_no in rows:
            if order_no not in known_orders:
                flag("unexpected", f"{table} of an unknown order", order_no)

    by_key = {h.key: h for h in history}
    accepted = {h.order_no: h for h in history if h.order_no}
    for order_no, row in orders.items():
        h = by_key.get(row.get("idempotency_key") or "")
        if h is None:
            flag("unexpected", "order the client never placed", order_no)
        elif h.order_no and h.order_no != order_no:
            flag("unexpected", "order of a replayed key", order_no, f"201 gave {h.order_no}")
        elif h.outcome == "refused":
            flag("unexpected", "order placed though refused", order_no, f"answers {h.answers}")

    for order_no, h in accepted.items():
        order = orders.get(order_no)
        if order is None:
            flag("lost", "accepted order missing", order_no, f"key {h.key}")
            continue
        _check_commands(h, order, evaluations.get(order_no), records_of, flag)

    for order_no in known_orders:
        status = orders[order_no]["status"] if order_no in orders else injected[order_no]
        score = orders[order_no]["score"] if order_no in orders else None
        evaluation = evaluations.get(order_no)
        records = records_of.get(evaluation["id"], []) if evaluation else []
        _check_events(order_no, status, learnings.get(order_no), records, events_of, flag)
        if not _ever_seated(order_no, events_of):
            _check_never_seated(order_no, status, learnings, evaluation, mypage, flag)
            continue
        _check_states(
            order_no, status, score, learnings.get(order_no), evaluation, records, mypage, flag
        )

    indeterminate = sum(1 for h in history if h.outcome == INDETERMINATE and not h.order_no) + sum(
        1 for h in history for c in h.commands if c.outcome == INDETERMINATE
    )
    coverage = {
        "orders_by_status": dict(Counter(row["status"] for row in snap.orders)),
        "events": len(snap.events),
        "deliveries": len(snap.deliveries),
        "sms": len(snap.sms),
        "commands": dict(Counter(f"{c.kind} {c.outcome}" for h in history for c in h.commands)),
    }
    return Report(found, len(accepted), indeterminate, coverage)


def _check_deliveries(snap, events, subscribers, flag) -> None:
    deliveries = defaultdict(dict)
    for row in snap.deliveries:
        deliveries[row["event_id"]][row["consumer"]] = row
    processed = {(r["consumer"], r["event_id"]) for r in snap.processed}
    processed |= {(r["consumer"], r["event_id"]) for r in snap.notification_processed}
    for event_id, event in events.items():
        expected = set(subscribers.get(event["event_type"], ()))
        rows = deliveries.get(event_id, {})
        for consumer in sorted(expected):
            row = rows.get(consumer)
            subject = f"{event['event_type']} {event_id} -> {consumer}"
            if row is None:
                flag("lost", "no delivery row", subject, f"order {event['order_no']}")
            elif row["status"] != "DONE":
                flag("lost", f"delivery {row['status']}", subject, f"order {event['order_no']}")
            elif (consumer, event_id) not in processed:
                flag("lost", "DONE but never processed", subject, f"order {event['order_no']}")
        for consumer in sorted(set(rows) - expected):
            flag("unexpected", "delivery to a non-subscriber", f"{event_id} -> {consumer}")
    for event_id in set(deliveries) - set(events):
        flag("unexpected", "delivery of an unknown event", event_id)


def _check_sms(snap, events, orders, sms_types, known_orders, flag) -> None:
    per_event_phone = Counter((row["event_id"], row["phone"]) for row in snap.sms)
    for (event_id, phone), count in per_event_phone.items():
        if count > 1:
            flag("duplicated", "SMS sent twice", f"{event_id} {phone}", f"{count} rows")
    per_order_type = Counter((row["order_no"], row["event_type"]) for row in snap.sms)
    for (order_no, event_type), count in per_order_type.items():
        if count > 1 and event_type in ONCE_PER_ORDER:
            flag("duplicated", "two SMS of one milestone", f"{order_no} {event_type}")
    sms_of_event = defaultdict(list)
    for row in snap.sms:
        sms_of_event[row["event_id"]].append(row)
        event = events.get(row["event_id"])
        if event is None:
            flag("unexpected", "SMS whose event is not in the outbox", f"SMS {row['id']}")
        elif row["order_no"] not in known_orders:
            flag("unexpected", "SMS of an unknown order", f"SMS {row['id']}", row["order_no"])
        elif row["order_no"] in orders and row["phone"] != orders[row["order_no"]]["phone"]:
            flag("unexpected", "SMS to another phone", f"SMS {row['id']}", row["phone"])
    for event_id, event in events.items():
        phone = (event.get("payload") or {}).get("phone")
        if event["event_type"] not in sms_types or not phone:
            continue
        rows = sms_of_event.get(event_id, [])
        if not rows:
            flag("lost", "SMS never written", f"{event['event_type']} {event_id}")
        for row in rows:
            if row["status"] != "SENT":
                flag("lost", f"SMS {row['status']}", f"{event['event_type']} {event_id}")


def _check_commands(h: OrderHistory, order, evaluation, records_of, flag) -> None:
    """What the client was told about its commands against where the order ended."""
    order_no, status = h.order_no, order["status"]
    finals, cancels = h.attempted("final"), h.attempted("cancel")
    final_ok = [c for c in finals if c.outcome == "ok"]
    cancel_ok = [c for c in cancels if c.outcome == "ok"]
    if final_ok and cancel_ok:
        flag("unexpected", "both the final score and the cancel won", order_no)
    for command in final_ok:
        if (status, order["score"]) != ("COMPLETED", command.score):
            flag("lost", "final score answered 200 but not on the order", order_no, status)
    if cancel_ok and status != "CANCELLED":
        flag("lost", "cancel answered 200 but order not CANCELLED", order_no, status)
    if status == "COMPLETED":
        tried = {c.score for c in finals if c.outcome in ("ok", INDETERMINATE)}
        if order["score"] not in tried:
            flag("unexpected", "COMPLETED with a score nobody sent", order_no, str(order["score"]))
    if status == "CANCELLED" and not [c for c in cancels if c.outcome != "conflict"]:
        flag("unexpected", "CANCELLED though nobody cancelled", order_no)
    records = h.attempted("record")
    stored = len(records_of.get(evaluation["id"], [])) if evaluation else 0
    surely = sum(1 for c in records if c.outcome == "ok")
    maybe = sum(1 for c in records if c.outcome == INDETERMINATE)
    if stored < surely:
        flag("lost", "evaluation record missing", order_no, f"{stored} stored, {surely} answered")
    if stored > surely + maybe:
        flag("duplicated", "evaluation record stored twice", order_no, f"{stored} stored")


def _ever_seated(order_no, events_of) -> bool:
    """Whether the order held a seat at some point: it raised CourseOrdered (an order that
    waited raises it when it gets its seat)."""
    return any(e["event_type"] == "CourseOrdered" for e in events_of.get(order_no, []))


def _check_never_seated(order_no, status, learnings, evaluation, mypage, flag) -> None:
    """An order still waiting, or cancelled while it waited: no learning, no evaluation, and
    My page shows its status alone."""
    problems = []
    if status not in ("WAITLISTED", "CANCELLED"):
        problems.append(f"order status {status} without CourseOrdered")
    if order_no in learnings or evaluation is not None:
        problems.append("a learning or an evaluation of an order that never had a seat")
    row = mypage.get(order_no)
    shown = row and (
        row["order_status"],
        row["learning_status"],
        row["evaluation_status"],
        row["final_score"],
        row["latest_score"],
    )
    if shown != (status, None, None, None, None):
        problems.append(f"My page {shown}")
    if problems:
        flag("inconsistent", "states disagree", order_no, f"order {status}: " + "; ".join(problems))


def _check_seats(snap, flag) -> None:
    """Per course with a capacity: never more seats held than it has, never a seat free while
    orders wait, its counts equal to its orders, and the seats given from the waitlist given in
    arrival order."""
    of_course: dict[str, list[dict]] = defaultdict(list)
    for row in snap.orders:
        of_course[row.get("course_no")].append(row)
    for course in snap.courses:
        if course["capacity"] is None:
            continue
        course_no, capacity = course["course_no"], course["capacity"]
        orders = of_course.get(course_no, [])
        holding = [o for o in orders if o["status"] in ("ORDERED", "COMPLETED")]
        waiting = sorted(o["waitlist_ticket"] for o in orders if o["status"] == "WAITLISTED")
        if len(holding) > capacity:
            flag("oversold", "more seats held than the capacity", course_no, f"{len(holding)}")
        if waiting and len(holding) < capacity:
            flag(
                "seats_lost",
                "a seat free while orders wait",
                course_no,
                f"{len(holding)}/{capacity} held, {len(waiting)} waiting",
            )
        counted = (course["seats_taken"], course["waitlisted"])
        if counted != (len(holding), len(waiting)):
            flag(
                "seats_lost",
                "the course's counts disagree with its orders",
                course_no,
                f"counted {counted}, orders {(len(holding), len(waiting))}",
            )
        seated_from_line = [
            o["waitlist_ticket"]
            for o in orders
            if o["waitlist_ticket"] is not None and o["status"] in ("ORDERED", "COMPLETED")
        ]
        if waiting and seated_from_line and max(seated_from_line) > waiting[0]:
            flag(
                "unexpected",
                "a later waiting order seated before an earlier one",
                course_no,
                f"ticket {max(seated_from_line)} seated, {waiting[0]} still waiting",
            )


def _check_events(order_no, status, learning, records, events_of, flag) -> None:
    kinds = Counter(e["event_type"] for e in events_of.get(order_no, []))
    for event_type in ONCE_PER_ORDER:
        if kinds[event_type] > 1:
            flag("duplicated", f"{event_type} raised twice", order_no, f"{kinds[event_type]}x")
    if kinds["OrderWaitlisted"]:
        # It waited: CourseOrdered comes with its seat, and with it SeatConfirmed.
        if kinds["CourseOrdered"] != kinds["SeatConfirmed"]:
            flag("lost", "a seat from the waitlist without both its events", order_no)
        if not kinds["CourseOrdered"]:
            required = ["CourseOrderCancelled"] if status == "CANCELLED" else []
            for event_type in required:
                if not kinds[event_type]:
                    flag("lost", f"no {event_type}", order_no, f"order {status}")
            return
    elif kinds["SeatConfirmed"]:
        flag("unexpected", "a seat confirmed to an order that never waited", order_no)
    required = ["CourseOrdered"]
    if learning is not None and learning["status"] in ("STARTED", "COMPLETED"):
        required.append("LearningStarted")
    if status == "CANCELLED":
        required += ["CourseOrderCancelled", "LearningCancelled"]
    if status == "COMPLETED":
        required += ["OrderCompleted", "FinalEvaluationRegistered"]
    for event_type in required:
        if not kinds[event_type]:
            flag("lost", f"no {event_type}", order_no, f"order {status}")
    if kinds["EvaluationRecorded"] < len(records):
        flag("lost", "EvaluationRecorded missing", order_no)
    elif kinds["EvaluationRecorded"] > len(records):
        flag("duplicated", "EvaluationRecorded raised twice", order_no)


# What learning, evaluation and My page must show for each order status at the end.
EXPECTED = {
    "COMPLETED": {"learning": {"COMPLETED"}, "evaluation": {"FINAL"}},
    "CANCELLED": {"learning": {"CANCELLED"}, "evaluation": {"CANCELLED"}},
    "ORDERED": {"learning": {"STARTED", "WAITING"}, "evaluation": {"IN_PROGRESS", None}},
}


def _check_states(order_no, status, score, learning, evaluation, records, mypage, flag) -> None:
    problems = []
    expected = EXPECTED.get(status)
    learning_status = learning["status"] if learning else None
    evaluation_status = evaluation["status"] if evaluation else None
    if expected is None:
        problems.append(f"order status {status}")
        expected = {"learning": set(), "evaluation": set()}
    if learning_status not in expected["learning"]:
        problems.append(f"learning {learning_status}")
    if evaluation_status not in expected["evaluation"]:
        problems.append(f"evaluation {evaluation_status}")
    if status == "ORDERED" and (learning_status == "STARTED") != (evaluation is not None):
        problems.append(f"learning {learning_status} but evaluation {evaluation_status}")
    final_score = evaluation["final_score"] if evaluation else None
    if status == "COMPLETED" and final_score != score:
        problems.append(f"evaluation final score {final_score}, order {score}")
    if evaluation_status == "FINAL" and (status, score) != ("COMPLETED", final_score):
        flag("unexpected", "FINAL evaluation of an order not COMPLETED with its score", order_no)
    row = mypage.get(order_no)
    if row is None:
        problems.append("no My page row")
    else:
        shown = (
            row["order_status"],
            row["learning_status"],
            row["evaluation_status"],
            row["final_score"],
            row["latest_score"],
        )
        truth = (
            status,
            None if learning_status == "WAITING" else learning_status,  # WAITING raises nothing
            evaluation_status,
            score if status == "COMPLETED" else None,
            records[-1]["score"] if records else None,
        )
        if shown != truth:
            problems.append(f"My page {shown} != {truth}")
    if problems:
        flag("inconsistent", "states disagree", order_no, f"order {status}: " + "; ".join(problems))


def read_snapshot(main_url: str, notification_url: str) -> Snapshot:
    """Read the tables the checker needs (plain postgresql:// URLs)."""
    import psycopg
    from psycopg.rows import dict_row

    queries = {
        "orders": "SELECT order_no, status, score, phone, idempotency_key, course_no,"
        " waitlist_ticket FROM orders_orders",
        "courses": "SELECT course_no, capacity, seats_taken, waitlisted FROM orders_courses",
        "learnings": "SELECT order_no, status, manager_id FROM learning_learnings",
        "evaluations": "SELECT id, order_no, status, final_score FROM evaluation_evaluations",
        "evaluation_records": "SELECT id, evaluation_id, score FROM evaluation_records",
        "mypage": "SELECT order_no, phone, order_status, learning_status, evaluation_status,"
        " latest_score, final_score FROM mypage_rows",
        "events": "SELECT event_id, event_type, order_no, sequence, payload FROM outbox_events",
        "deliveries": "SELECT event_id, consumer, status, failures FROM outbox_deliveries",
        "processed": "SELECT consumer, event_id FROM processed_messages",
    }
    snap = Snapshot()
    with psycopg.connect(main_url, row_factory=dict_row) as conn:
        for name, sql in queries.items():
            setattr(snap, name, conn.execute(sql).fetchall())
    with psycopg.connect(notification_url, row_factory=dict_row) as conn:
        snap.sms = conn.execute(
            "SELECT id, event_id, event_type, phone, order_no, status FROM notification_sms"
        ).fetchall()
        snap.notification_processed = conn.execute(
            "SELECT consumer, event_id FROM notification_processed_messages"
        ).fetchall()
    return snap
