"""Managers and learnings, and the events a learning raises."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, Row, String
from sqlalchemy.orm import Mapped, mapped_column

from app.shared.db.base import MainBase, UTCDateTime, utcnow
from app.shared.errors import Conflict
from app.shared.events import Aggregate, Event, EventType
from app.shared.states import LearningStatus


class Manager(MainBase):
    __tablename__ = "learning_managers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # How many of their learnings are STARTED, kept in step by the learning handlers: choosing
    # the least-loaded manager must not count every learning there is.
    started_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


# A manager as the batch starts read it (id, name, started_count): no entity to load.
ManagerLoadRow = Row[int, str, int]


class Learning(MainBase, Aggregate):
    __tablename__ = "learning_learnings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_no: Mapped[str] = mapped_column(String(32), unique=True)
    course_no: Mapped[str | None] = mapped_column(String(32))
    course_title: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(20), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    manager_id: Mapped[int | None] = mapped_column(Integer, index=True)
    manager_name: Mapped[str | None] = mapped_column(String(100))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @classmethod
    def open(cls, order_no: str, course_no: str, course_title: str | None, phone: str) -> Learning:
        return cls(
            order_no=order_no,
            course_no=course_no,
            course_title=course_title,
            phone=phone,
            status=LearningStatus.WAITING,
            opened_at=utcnow(),
        )

    @classmethod
    def cancelled_before_opening(cls, order_no: str, phone: str | None) -> Learning:
        """A tombstone: the order was cancelled before its CourseOrdered got here."""
        now = utcnow()
        return cls(
            order_no=order_no,
            phone=phone,
            status=LearningStatus.CANCELLED,
            opened_at=now,
            cancelled_at=now,
        )

    def start(self, manager: Manager | ManagerLoadRow, announce: bool = True) -> None:
        """Start with `manager` (an entity, or a row of its id and name). A learning not yet
        stored starts with `announce=False` and calls announce_started() once it has its id
        (the event carries it)."""
        if self.status != LearningStatus.WAITING:
            raise Conflict(f"learning {self.id} is {self.status}, not WAITING")
        self.status = LearningStatus.STARTED
        self.manager_id = manager.id
        self.manager_name = manager.name
        self.started_at = utcnow()
        if announce:
            self.announce_started()

    def announce_started(self) -> None:
        assert self.started_at is not None, "a learning is announced started once it started"
        self.raise_event(
            Event(
                EventType.LEARNING_STARTED,
                self.order_no,
                {
                    "learning_id": self.id,
                    "order_no": self.order_no,
                    "course_no": self.course_no,
                    "course_title": self.course_title,
                    "phone": self.phone,
                    "manager_id": self.manager_id,
                    "manager_name": self.manager_name,
                    "started_at": self.started_at.isoformat(),
                },
            )
        )

    def cancel(self) -> bool:
        """Cancel unless already over; True if it changed. Raises LearningCancelled."""
        if self.status in (LearningStatus.CANCELLED, LearningStatus.COMPLETED):
            return False
        self.status = LearningStatus.CANCELLED
        self.cancelled_at = utcnow()
        self.announce_cancelled()
        return True

    def announce_cancelled(self) -> None:
        assert self.cancelled_at is not None, "a learning is announced cancelled once it is"
        self.raise_event(
            Event(
                EventType.LEARNING_CANCELLED,
                self.order_no,
                {
                    "learning_id": self.id,
                    "order_no": self.order_no,
                    "phone": self.phone,
                    "cancelled_at": self.cancelled_at.isoformat(),
                },
            )
        )

    def complete(self) -> bool:
        """Complete a started learning (its final evaluation is in); True if it changed."""
        if self.status != LearningStatus.STARTED:
            return False
        self.status = LearningStatus.COMPLETED
        self.completed_at = utcnow()
        return True
