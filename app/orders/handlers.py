"""Commands of the orders context."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import date
from typing import Any

from sqlalchemy.exc import IntegrityError

from app.orders.model import Course, CourseToOrder, Order, ensure_open, has_seat_for_newcomer
from app.orders.repository import UNLIMITED_COURSE, CourseRepository, OrderRepository
from app.shared.errors import Conflict, InvalidInput, SoldOut, found
from app.shared.states import OrderStatus
from app.shared.uow import UnitOfWork


class OrdersUnitOfWork(UnitOfWork):
    courses: CourseRepository
    orders: OrderRepository

    def __enter__(self) -> OrdersUnitOfWork:
        super().__enter__()
        self.courses = CourseRepository(self.session)
        self.orders = OrderRepository(self.session)
        return self


@dataclass(frozen=True)
class CreateCourse:
    course_no: str
    title: str
    price: int
    description: str = ""
    category: str = ""
    active: bool = True
    capacity: int | None = None


@dataclass(frozen=True)
class PlaceOrder:
    course_no: str
    phone: str
    begin_date: date
    end_date: date
    idempotency_key: str | None = None
    caller: str = ""  # whose Idempotency-Key it is: the token's subject
    waitlist: bool = False  # on a full course, wait for a seat rather than be refused

    def fingerprint(self) -> str:
        # The fields one by one: asdict() deep-copies them, needless work on every order.
        # Stored fingerprints are compared with new ones, so the text hashed must not change:
        # `waitlist` counts only when asked, as orders had no such field before.
        body = {f.name: str(getattr(self, f.name)) for f in fields(self)}
        del body["idempotency_key"], body["caller"]
        if not self.waitlist:
            del body["waitlist"]
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def create_course(uow: OrdersUnitOfWork, cmd: CreateCourse) -> Course:
    with uow:
        if uow.courses.get(cmd.course_no):
            raise Conflict(f"course {cmd.course_no} already exists")
        if cmd.capacity is not None and cmd.capacity < 1:
            raise InvalidInput("capacity must be at least 1 (none: unlimited)")
        course = Course(**asdict(cmd), seats_taken=0, waitlisted=0, last_ticket=0)
        uow.courses.add(course)
        try:
            uow.commit()
        except IntegrityError:
            raise Conflict(f"course {cmd.course_no} already exists") from None
        return course


def get_course(uow: OrdersUnitOfWork, course_no: str) -> Course:
    with uow.statement_by_statement():  # reads only
        course = found(uow.courses.get(course_no), f"course {course_no}")
        return course


def update_course(uow: OrdersUnitOfWork, course_no: str, changes: dict[str, Any]) -> Course:
    """Change a course. A new capacity (SPEC 11) is never below the seats taken, and the seats
    it adds go to the waiting orders, the oldest first, in the same transaction."""
    changes = dict(changes)
    seats = "capacity" in changes
    capacity = changes.pop("capacity", None)
    with uow:
        course = found(uow.courses.get(course_no, for_update=seats), f"course {course_no}")
        if seats:
            # Without a capacity the seats were not counted: count them now, if one is set.
            counting = course.capacity is None and capacity is not None
            taken = uow.orders.seats_held(course_no) if counting else course.seats_taken
            course.change_capacity(capacity, taken)
            _seat_the_waitlist(uow, course)
        for name, value in changes.items():
            setattr(course, name, value)
        uow.commit()
        return course


def _seat_the_waitlist(uow: OrdersUnitOfWork, course: Course) -> None:
    """Give the free seats to the orders that wait longest (the course row is locked)."""
    for order in uow.orders.oldest_waitlisted(course.course_no, course.seats_for_waitlist()):
        order.seat_from_waitlist(course)


def _no_limit() -> None:
    pass


def place_order(
    uow: OrdersUnitOfWork, cmd: PlaceOrder, admit: Callable[[], None] = _no_limit
) -> tuple[Order, bool]:
    """Place the order; with a known idempotency key, return the first one. (order, created).
    On a course with a capacity: a seat, or with `waitlist` a place in its waitlist, or
    SoldOut (SPEC 11). `admit()` runs once, just before the order is written, and may refuse
    it by raising (the caller's order limit): a replay, a sold-out answer or an unknown course
    never call it."""
    if cmd.begin_date > cmd.end_date:
        raise InvalidInput("begin_date must be on or before end_date")
    try:
        return _place(uow, cmd, admit)
    except _SoldOutAsRead:
        raise  # its read found no earlier request with this key
    except (Conflict, IntegrityError) as refused:
        # The unique indexes decide, without a query before every order: the same
        # Idempotency-Key replays the first order (also once the course closed or sold out),
        # else the phone has a live order, else the refusal stands.
        with uow.statement_by_statement():  # reads only
            replay = _replayed(uow, cmd)
            if replay:
                return replay, False
            if isinstance(refused, IntegrityError) and uow.orders.live_order(
                cmd.phone, cmd.course_no
            ):
                raise Conflict(
                    f"{cmd.phone} already has a live order of course {cmd.course_no}"
                ) from None
        raise


class _SoldOutAsRead(SoldOut):
    """Sold out as the course was read, with no earlier request of the same key."""


def _place(uow: OrdersUnitOfWork, cmd: PlaceOrder, admit: Callable[[], None]) -> tuple[Order, bool]:
    # Without a capacity: a read, then one write; on PostgreSQL two round trips in all.
    with uow.statement_by_statement():  # reads only
        course = found(
            uow.courses.course_to_order(cmd.course_no, cmd.caller, cmd.idempotency_key),
            f"course {cmd.course_no}",
        )
        if course.replay_of is not None:
            replay = _replayed(uow, cmd)
            if replay:
                return replay, False
    if course.capacity is not None:
        ensure_open(course)  # a closed course is closed, full or not
        if not cmd.waitlist and not has_seat_for_newcomer(course):
            raise _SoldOutAsRead()  # one read, and no write
    # Outside any transaction: the limit may count in this very database, and SQLite takes
    # its write lock at BEGIN.
    admit()
    if course.capacity is None:
        with uow.statement_by_statement():
            order = _new_order(cmd, course)
            if uow.commit_new(order, only_if=UNLIMITED_COURSE):
                return order, True
            # The course has had a capacity since it was read: its seats decide.
    # With a capacity: the course row locked (its lock queue is the arrival order), a seat or
    # a ticket, and the order, in one transaction.
    with uow:
        locked = found(uow.courses.seats_for_update(cmd.course_no), f"course {cmd.course_no}")
        ticket = locked.take_seat(cmd.waitlist)
        order = _new_order(cmd, locked, ticket)
        if ticket is not None:
            order.waitlist_position = locked.waitlisted  # the last in line
        uow.courses.save_seats(locked)
        uow.commit_new(order)
        return order, True


def _new_order(cmd: PlaceOrder, course: Course | CourseToOrder, ticket: int | None = None) -> Order:
    return Order.place(
        course,
        cmd.phone,
        cmd.begin_date,
        cmd.end_date,
        cmd.idempotency_key,
        cmd.fingerprint() if cmd.idempotency_key else None,
        waitlist_ticket=ticket,
        idempotency_caller=cmd.caller,
    )


def _replayed(uow: OrdersUnitOfWork, cmd: PlaceOrder) -> Order | None:
    if not cmd.idempotency_key:
        return None
    earlier = uow.orders.by_idempotency_key(cmd.caller, cmd.idempotency_key)
    if earlier and earlier.request_fingerprint != cmd.fingerprint():
        raise InvalidInput("this Idempotency-Key was used with a different request body")
    if earlier:
        uow.orders.with_positions([earlier])  # a waiting order: where it stands now
    return earlier


def get_order(uow: OrdersUnitOfWork, order_no: str) -> Order:
    with uow.statement_by_statement():  # reads only
        order = found(uow.orders.get(order_no), f"order {order_no}")
        uow.orders.with_positions([order])
        return order


def cancel_order(uow: OrdersUnitOfWork, order_no: str) -> Order:
    """Cancel; cancelling again answers the cancelled order, a completed one is a conflict.
    The row lock makes a cancel and a final score exclude each other (SPEC 6). A seat freed
    goes to the order waiting longest for one, in the same transaction (SPEC 11); a place in
    the waitlist freed moves those behind up."""
    with uow:
        course_no = found(uow.orders.course_of(order_no), f"order {order_no}")
        # The course row first, then the order's: the order in which a place takes them.
        course = uow.courses.get(course_no, for_update=True)
        order = found(uow.orders.get(order_no, for_update=True), f"order {order_no}")
        status = order.status
        if order.cancel() and course is not None:
            course.release(status)
            _seat_the_waitlist(uow, course)
        uow.commit()
        return order


def register_score(uow: OrdersUnitOfWork, order_no: str, score: int) -> str:
    """Step 1 of the score chain: the order takes the score and completes. Returns an outcome
    of app.evaluation.handlers.ScoreOutcome (as a plain string: contexts share no code)."""
    with uow:
        order = uow.orders.get(order_no, for_update=True)
        if order is None:
            return "order_conflict"
        try:
            order.register_score(score)
        except Conflict:
            return "order_cancelled" if order.status == OrderStatus.CANCELLED else "order_conflict"
        uow.commit_changed(order)  # the caller waits: the update rides the outbox statement
        return "completed"
