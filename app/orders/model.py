"""Courses and orders, and the events an order raises."""

from __future__ import annotations

import secrets
from datetime import date, datetime
from typing import Any, Protocol

from sqlalchemy import Boolean, Date, Index, Integer, Row, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.shared.db.base import MainBase, UTCDateTime, utcnow
from app.shared.errors import Conflict, InvalidInput, SoldOut
from app.shared.events import Aggregate, Event, EventType
from app.shared.states import LIVE_ORDER, OrderStatus


class Course(MainBase):
    __tablename__ = "orders_courses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    course_no: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(50), index=True, default="")
    price: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Seats (SPEC 11): none means unlimited. While there is a capacity, the seats taken, the
    # orders waiting and the last waitlist ticket are counted here, under this row's lock, so
    # that a sold-out answer reads one row and writes nothing.
    capacity: Mapped[int | None] = mapped_column(Integer)
    seats_taken: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    waitlisted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_ticket: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    @property
    def seats_left(self) -> int | None:
        return None if self.capacity is None else max(0, self.capacity - self.seats_taken)

    def take_seat(self, waitlist: bool) -> int | None:
        """A seat for a new order (None), or with `waitlist` a waitlist ticket when there is
        none; else SoldOut. A seat is free for a newcomer only when nobody waits: a seat freed
        while orders wait is theirs, in arrival order."""
        ensure_open(self)
        if self.capacity is None:
            return None
        if has_seat_for_newcomer(self):
            self.seats_taken += 1
            return None
        if not waitlist:
            raise SoldOut()
        self.last_ticket += 1
        self.waitlisted += 1
        return self.last_ticket

    def release(self, status: str) -> None:
        """An order of this status was cancelled: its seat, or its place in the waitlist, is
        free."""
        if self.capacity is None:
            return
        if status == OrderStatus.WAITLISTED:
            self.waitlisted -= 1
        elif status == OrderStatus.ORDERED:
            self.seats_taken -= 1

    def seats_for_waitlist(self) -> int:
        """How many of the waiting orders a seat can be given to now."""
        if self.capacity is None:
            return self.waitlisted
        return max(0, min(self.waitlisted, self.capacity - self.seats_taken))

    def seat_from_waitlist(self) -> None:
        self.waitlisted -= 1
        if self.capacity is not None:
            self.seats_taken += 1

    def change_capacity(self, capacity: int | None, seats_taken: int) -> None:
        """A new capacity (None: unlimited), given the seats taken now. Never below them: a
        seat already given is never taken back."""
        if capacity is not None and capacity < max(1, seats_taken):
            raise InvalidInput(
                f"capacity must be at least 1 and at least the {seats_taken} seats taken"
            )
        self.capacity = capacity
        # Counted only while there is a capacity; counted again when one is set.
        self.seats_taken = seats_taken if capacity is not None else 0


class Seats(Protocol):
    capacity: int | None
    seats_taken: int
    waitlisted: int


class Orderable(Protocol):
    course_no: str
    active: bool


def ensure_open(course: Orderable) -> None:
    if not course.active:
        raise Conflict(f"course {course.course_no} is not open for orders")


def has_seat_for_newcomer(course: Seats) -> bool:
    """Whether a new order would get a seat now (a course entity or its row)."""
    return course.capacity is None or (
        course.seats_taken < course.capacity and course.waitlisted == 0
    )


# What an order needs of its course, read as a row (course_no, title, active, capacity,
# seats_taken, waitlisted, and replay_of: the order of an earlier request with the same
# Idempotency-Key): no entity.
CourseToOrder = Row[str, str, bool, int | None, int, int, str | None]


# OR rather than IN: PostgreSQL prints an IN of this column back in a form that reads back
# otherwise, and the benchmark's history preload compares the indexes it made again.
_LIVE = " OR ".join(f"status = '{status}'" for status in LIVE_ORDER)
_WAITING = f"status = '{OrderStatus.WAITLISTED}'"


class Order(MainBase, Aggregate):
    __tablename__ = "orders_orders"
    __table_args__ = (
        # One live order per phone and course, even under concurrent requests.
        Index(
            "uq_orders_orders_live",
            "phone",
            "course_no",
            unique=True,
            sqlite_where=text(_LIVE),
            postgresql_where=text(_LIVE),
        ),
        # A course's waitlist in arrival order: the oldest first on a freed seat, and the
        # position of each.
        Index(
            "ix_orders_orders_waitlist",
            "course_no",
            "waitlist_ticket",
            sqlite_where=text(_WAITING),
            postgresql_where=text(_WAITING),
        ),
        # An Idempotency-Key is its caller's: another caller may use the same one.
        UniqueConstraint("idempotency_caller", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_no: Mapped[str] = mapped_column(String(32), unique=True)
    course_no: Mapped[str] = mapped_column(String(32))
    phone: Mapped[str] = mapped_column(String(20), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    ordered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    begin_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    score: Mapped[int | None] = mapped_column(Integer)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    # Who sent the key: the token's subject (OpenID Connect bounds it to 255 characters).
    idempotency_caller: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # Its place in the course's waitlist, in arrival order (kept once it has a seat).
    waitlist_ticket: Mapped[int | None] = mapped_column(Integer)

    @property
    def waitlist_position(self) -> int | None:
        """Not stored: its place in the waitlist (1 is next) when it was read, as the handler
        that read it counted; None once it no longer waits."""
        if self.status != OrderStatus.WAITLISTED:
            return None
        position: int | None = self.__dict__.get("_waitlist_position")
        return position

    @waitlist_position.setter
    def waitlist_position(self, position: int | None) -> None:
        self.__dict__["_waitlist_position"] = position

    @classmethod
    def place(
        cls,
        course: Course | CourseToOrder,
        phone: str,
        begin_date: date,
        end_date: date,
        idempotency_key: str | None = None,
        request_fingerprint: str | None = None,
        waitlist_ticket: int | None = None,
        idempotency_caller: str = "",
    ) -> Order:
        """A new order: ORDERED, or with a waitlist ticket WAITLISTED (SPEC 11)."""
        ensure_open(course)
        waiting = waitlist_ticket is not None
        order = cls(
            order_no="O" + secrets.token_hex(6).upper(),
            course_no=course.course_no,
            phone=phone,
            status=OrderStatus.WAITLISTED if waiting else OrderStatus.ORDERED,
            ordered_at=utcnow(),
            begin_date=begin_date,
            end_date=end_date,
            idempotency_key=idempotency_key,
            idempotency_caller=idempotency_caller if idempotency_key else None,
            request_fingerprint=request_fingerprint,
            waitlist_ticket=waitlist_ticket,
        )
        if waiting:
            facts = {**order._facts(course.title), "waitlist_ticket": waitlist_ticket}
            order.raise_event(Event(EventType.ORDER_WAITLISTED, order.order_no, facts))
        else:
            order.raise_event(
                Event(EventType.COURSE_ORDERED, order.order_no, order._facts(course.title))
            )
        return order

    def _facts(self, course_title: str) -> dict[str, Any]:
        """What the order's CourseOrdered and OrderWaitlisted tell: the facts fixed when it was
        placed."""
        return {
            "order_no": self.order_no,
            "course_no": self.course_no,
            "course_title": course_title,
            "phone": self.phone,
            "ordered_at": self.ordered_at.isoformat(),
            "begin_date": self.begin_date.isoformat(),
            "end_date": self.end_date.isoformat(),
        }

    def seat_from_waitlist(self, course: Course) -> None:
        """A freed seat is this waiting order's: it is ORDERED and goes the usual way
        (CourseOrdered), and the student is told the seat is confirmed (SeatConfirmed)."""
        if self.status != OrderStatus.WAITLISTED:
            raise Conflict(f"order {self.order_no} is not waitlisted")
        course.seat_from_waitlist()
        self.status = OrderStatus.ORDERED
        self.raise_event(Event(EventType.COURSE_ORDERED, self.order_no, self._facts(course.title)))
        self.raise_event(
            Event(
                EventType.SEAT_CONFIRMED,
                self.order_no,
                {
                    "order_no": self.order_no,
                    "course_no": self.course_no,
                    "course_title": course.title,
                    "phone": self.phone,
                    "waitlist_ticket": self.waitlist_ticket,
                },
            )
        )

    def cancel(self) -> bool:
        """Cancel the order; True if it changed (cancelling again is a no-op)."""
        if self.status == OrderStatus.CANCELLED:
            return False
        if self.status == OrderStatus.COMPLETED:
            raise Conflict(f"order {self.order_no} is completed and can no longer be cancelled")
        was_waitlisted = self.status == OrderStatus.WAITLISTED
        self.status = OrderStatus.CANCELLED
        self.cancelled_at = utcnow()
        self.raise_event(
            Event(
                EventType.COURSE_ORDER_CANCELLED,
                self.order_no,
                {
                    "order_no": self.order_no,
                    "course_no": self.course_no,
                    "phone": self.phone,
                    "cancelled_at": self.cancelled_at.isoformat(),
                    # It never had a seat, so never a learning: learning has nothing to cancel.
                    "waitlisted": was_waitlisted,
                },
            )
        )
        return True

    def register_score(self, score: int) -> bool:
        """Put the final score on the order and complete it; True if it changed. The same score
        again is a no-op; another score, or a cancelled order, is a conflict."""
        if self.status == OrderStatus.CANCELLED:
            raise Conflict(f"order {self.order_no} is cancelled")
        if self.status == OrderStatus.WAITLISTED:
            raise Conflict(f"order {self.order_no} is waitlisted")
        if self.status == OrderStatus.COMPLETED:
            if self.score != score:
                raise Conflict(f"order {self.order_no} is completed with another score")
            return False
        self.status = OrderStatus.COMPLETED
        self.score = score
        self.completed_at = utcnow()
        self.raise_event(
            Event(
                EventType.ORDER_COMPLETED,
                self.order_no,
                {
                    "order_no": self.order_no,
                    "course_no": self.course_no,
                    "phone": self.phone,
                    "score": score,
                    "completed_at": self.completed_at.isoformat(),
                },
            )
        )
        return True
