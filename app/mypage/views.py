"""Read queries on the My page read model (never on other contexts' tables)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, aliased

from app.mypage.model import MyPageRow
from app.shared.states import OrderStatus

_ahead = aliased(MyPageRow)
# A waiting row's place in its course's waitlist (1 is next): the waiting rows of the course
# with a ticket up to its own, as the read model has them.
_POSITION = case(
    (
        MyPageRow.order_status == OrderStatus.WAITLISTED,
        select(func.count())
        .where(
            _ahead.course_no == MyPageRow.course_no,
            _ahead.order_status == OrderStatus.WAITLISTED,
            _ahead.waitlist_ticket <= MyPageRow.waitlist_ticket,
        )
        .correlate(MyPageRow)
        .scalar_subquery(),
    ),
    else_=None,
)


def rows_for_phone(session: Session, phone: str, offset: int, limit: int) -> list[dict[str, Any]]:
    """The phone's rows, newest first, each with its waitlist position (None unless waiting)."""
    found = session.execute(
        select(MyPageRow, _POSITION)
        .where(MyPageRow.phone == phone)
        .order_by(MyPageRow.ordered_at.desc(), MyPageRow.order_no.desc())
        .offset(offset)
        .limit(limit)
    )
    columns = [column.key for column in MyPageRow.__table__.columns]
    return [
        {**{name: getattr(row, name) for name in columns}, "waitlist_position": position}
        for row, position in found
    ]


def count_for_phone(session: Session, phone: str) -> int:
    return session.execute(
        select(func.count()).select_from(MyPageRow).where(MyPageRow.phone == phone)
    ).scalar_one()
