"""Courses and orders, and the events an order raises."""

from __future__ import annotations

import secrets
from datetime import date, datetime

from sqlalchemy import Boolean, Date, Index, Integer, Row, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.shared.db.base import MainBase, UTCDateTime, utcnow
from app.shared.errors import Conflict
from app.shared.events import Aggregate, Event, EventType
from app.shared.states import OrderStatus


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


# What an order needs of its course, read as a row (course_no, title, active): no entity.
CourseToOrder = Row[str, str, bool]


class Order(MainBase, Aggregate):
    __tablename__ = "orders_orders"
    __table_args__ = (
        # One live order per phone and course, even under concurrent requests.
        Index(
            "uq_orders_orders_live",
            "phone",
            "course_no",
            unique=True,
            sqlite_where=text(f"status = '{OrderStatus.ORDERED}'"),
            postgresql_where=text(f"status = '{OrderStatus.ORDERED}'"),
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

    @classmethod
    def place(
        cls,
        course: Course | CourseToOrder,
        phone: str,
        begin_date: date,
        end_date: date,
        idempotency_key: str | None = None,
        request_fingerprint: str | None = None,
        idempotency_caller: str = "",
    ) -> Order:
        if not course.active:
            raise Conflict(f"course {course.course_no} is not open for orders")
        order = cls(
            order_no="O" + secrets.token_hex(6).upper(),
            course_no=course.course_no,
            phone=phone,
            status=OrderStatus.ORDERED,
            ordered_at=utcnow(),
            begin_date=begin_date,
            end_date=end_date,
            idempotency_key=idempotency_key,
            idempotency_caller=idempotency_caller if idempotency_key else None,
            request_fingerprint=request_fingerprint,
        )
        order.raise_event(
            Event(
                EventType.COURSE_ORDERED,
                order.order_no,
                {
                    "order_no": order.order_no,
                    "course_no": course.course_no,
                    "course_title": course.title,
                    "phone": phone,
                    "ordered_at": order.ordered_at.isoformat(),
                    "begin_date": begin_date.isoformat(),
                    "end_date": end_date.isoformat(),
                },
            )
        )
        return order

    def cancel(self) -> bool:
        """Cancel the order; True if it changed (cancelling again is a no-op)."""
        if self.status == OrderStatus.CANCELLED:
            return False
        if self.status == OrderStatus.COMPLETED:
            raise Conflict(f"order {self.order_no} is completed and can no longer be cancelled")
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
                },
            )
        )
        return True

    def register_score(self, score: int) -> bool:
        """Put the final score on the order and complete it; True if it changed. The same score
        again is a no-op; another score, or a cancelled order, is a conflict."""
        if self.status == OrderStatus.CANCELLED:
            raise Conflict(f"order {self.order_no} is cancelled")
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
