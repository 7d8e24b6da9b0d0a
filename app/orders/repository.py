"""Queries on the orders context's tables."""

from __future__ import annotations

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.orm import Session

from app.orders.model import Course, CourseToOrder, Order
from app.shared.db.paging import paged, where_given
from app.shared.states import OrderStatus

_courses = Course.__table__
_COURSE_TO_ORDER = select(_courses.c.course_no, _courses.c.title, _courses.c.active).where(
    _courses.c.course_no == bindparam("course_no")
)


class CourseRepository:
    def __init__(self, session: Session):
        self.session = session

    def add(self, course: Course) -> None:
        self.session.add(course)

    def get(self, course_no: str) -> Course | None:
        return self.session.execute(
            select(Course).where(Course.course_no == course_no)
        ).scalar_one_or_none()

    def course_to_order(self, course_no: str) -> CourseToOrder | None:
        """What an order needs of its course (course_no, title, active): every order asks, so
        the statement is built once, on the table rather than the entity."""
        return self.session.execute(_COURSE_TO_ORDER, {"course_no": course_no}).one_or_none()

    def search(
        self, q: str | None, category: str | None, offset: int, limit: int
    ) -> tuple[list[Course], int]:
        stmt = select(Course).where(Course.active.is_(True))
        if q:
            # lower() is Unicode-aware on PostgreSQL; Korean has no case, so LIKE on it is exact.
            pattern = f"%{_escape_like(q.lower())}%"
            stmt = stmt.where(
                or_(
                    func.lower(Course.title).like(pattern, escape="\\"),
                    func.lower(Course.description).like(pattern, escape="\\"),
                )
            )
        stmt = where_given(stmt, (Course.category, category))
        return paged(self.session, stmt, Course.id, offset, limit)


class OrderRepository:
    def __init__(self, session: Session):
        self.session = session

    def add(self, order: Order) -> None:
        self.session.add(order)

    def get(self, order_no: str, for_update: bool = False) -> Order | None:
        stmt = select(Order).where(Order.order_no == order_no)
        if for_update:
            stmt = stmt.with_for_update()
        return self.session.execute(stmt).scalar_one_or_none()

    def by_idempotency_key(self, caller: str, key: str) -> Order | None:
        """The order this caller placed with this Idempotency-Key (keys are per caller)."""
        return self.session.execute(
            select(Order).where(Order.idempotency_caller == caller, Order.idempotency_key == key)
        ).scalar_one_or_none()

    def has_ordered(self, phone: str | None, course_no: str) -> bool:
        """Whether the phone has an order of the course, in any state."""
        return (
            phone is not None
            and self.session.execute(
                select(Order.id).where(Order.phone == phone, Order.course_no == course_no).limit(1)
            ).first()
            is not None
        )

    def live_order(self, phone: str, course_no: str) -> Order | None:
        return self.session.execute(
            select(Order).where(
                Order.phone == phone,
                Order.course_no == course_no,
                Order.status == OrderStatus.ORDERED,
            )
        ).scalar_one_or_none()

    def list(
        self, phone: str | None, status: str | None, offset: int, limit: int
    ) -> tuple[list[Order], int]:
        stmt = where_given(select(Order), (Order.phone, phone), (Order.status, status))
        return paged(self.session, stmt, Order.id.desc(), offset, limit)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
