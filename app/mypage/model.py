"""The My page row of one order, with the sequence that last set each part."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.shared.db.base import MainBase, UTCDateTime
from app.shared.states import OrderStatus

WAITING = f"order_status = '{OrderStatus.WAITLISTED}'"


class MyPageRow(MainBase):
    __tablename__ = "mypage_rows"
    __table_args__ = (
        Index("ix_mypage_rows_phone_ordered", "phone", "ordered_at"),
        # A course's waiting rows in ticket order: each one's position is counted on it.
        Index(
            "ix_mypage_rows_waitlist",
            "course_no",
            "waitlist_ticket",
            sqlite_where=text(WAITING),
            postgresql_where=text(WAITING),
        ),
    )

    order_no: Mapped[str] = mapped_column(String(32), primary_key=True)
    phone: Mapped[str] = mapped_column(String(20))
    course_no: Mapped[str | None] = mapped_column(String(32))
    course_title: Mapped[str | None] = mapped_column(String(200))
    order_status: Mapped[str | None] = mapped_column(String(16))
    learning_status: Mapped[str | None] = mapped_column(String(16))
    manager_name: Mapped[str | None] = mapped_column(String(100))
    evaluation_status: Mapped[str | None] = mapped_column(String(16))
    latest_score: Mapped[int | None] = mapped_column(Integer)
    final_score: Mapped[int | None] = mapped_column(Integer)
    ordered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    begin_date: Mapped[date | None] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Its ticket in the course's waitlist, if it waited: the position is counted from it.
    waitlist_ticket: Mapped[int | None] = mapped_column(Integer)
    # Per part, the sequence of the event that last wrote it: an older event never overwrites.
    order_seq: Mapped[int] = mapped_column(Integer, default=0)
    learning_seq: Mapped[int] = mapped_column(Integer, default=0)
    evaluation_seq: Mapped[int] = mapped_column(Integer, default=0)
    score_seq: Mapped[int] = mapped_column(Integer, default=0)
