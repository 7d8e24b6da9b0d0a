"""Commands of the orders context."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from datetime import date
from typing import Any

from sqlalchemy.exc import IntegrityError

from app.orders.model import Course, Order
from app.orders.repository import CourseRepository, OrderRepository
from app.shared.errors import Conflict, InvalidInput, found
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


@dataclass(frozen=True)
class PlaceOrder:
    course_no: str
    phone: str
    begin_date: date
    end_date: date
    idempotency_key: str | None = None
    caller: str = ""  # whose Idempotency-Key it is: the token's subject

    def fingerprint(self) -> str:
        # The fields one by one: asdict() deep-copies them, needless work on every order.
        # Stored fingerprints are compared with new ones, so the text hashed must not change.
        body = {f.name: str(getattr(self, f.name)) for f in fields(self)}
        del body["idempotency_key"], body["caller"]
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def create_course(uow: OrdersUnitOfWork, cmd: CreateCourse) -> Course:
    with uow:
        if uow.courses.get(cmd.course_no):
            raise Conflict(f"course {cmd.course_no} already exists")
        course = Course(**asdict(cmd))
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
    with uow:
        course = found(uow.courses.get(course_no), f"course {course_no}")
        for name, value in changes.items():
            setattr(course, name, value)
        uow.commit()
        return course


def place_order(uow: OrdersUnitOfWork, cmd: PlaceOrder) -> tuple[Order, bool]:
    """Place the order; with a known idempotency key, return the first one. (order, created)."""
    if cmd.begin_date > cmd.end_date:
        raise InvalidInput("begin_date must be on or before end_date")
    # A read, then one write: on PostgreSQL two round trips in all.
    with uow.statement_by_statement():
        course = found(uow.courses.course_to_order(cmd.course_no), f"course {cmd.course_no}")
        try:
            order = Order.place(
                course,
                cmd.phone,
                cmd.begin_date,
                cmd.end_date,
                cmd.idempotency_key,
                cmd.fingerprint() if cmd.idempotency_key else None,
                cmd.caller,
            )
        except Conflict:
            replay = _replayed(uow, cmd)  # the course closed after the first request
            if replay:
                return replay, False
            raise
        try:
            uow.commit_new(order)
        except IntegrityError:
            # The unique indexes decide, without a query before every order: the caller's
            # same Idempotency-Key replays their first order, else the phone has a live order.
            uow.rollback()
            replay = _replayed(uow, cmd)
            if replay:
                return replay, False
            if uow.orders.live_order(cmd.phone, cmd.course_no):
                raise Conflict(
                    f"{cmd.phone} already has a live order of course {cmd.course_no}"
                ) from None
            raise
        return order, True


def _replayed(uow: OrdersUnitOfWork, cmd: PlaceOrder) -> Order | None:
    if not cmd.idempotency_key:
        return None
    earlier = uow.orders.by_idempotency_key(cmd.caller, cmd.idempotency_key)
    if earlier and earlier.request_fingerprint != cmd.fingerprint():
        raise InvalidInput("this Idempotency-Key was used with a different request body")
    return earlier


def get_order(uow: OrdersUnitOfWork, order_no: str) -> Order:
    with uow.statement_by_statement():  # reads only
        order = found(uow.orders.get(order_no), f"order {order_no}")
        return order


def cancel_order(uow: OrdersUnitOfWork, order_no: str) -> Order:
    """Cancel; cancelling again answers the cancelled order, a completed one is a conflict.
    The row lock makes a cancel and a final score exclude each other (SPEC 6)."""
    with uow:
        order = found(uow.orders.get(order_no, for_update=True), f"order {order_no}")
        order.cancel()
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
