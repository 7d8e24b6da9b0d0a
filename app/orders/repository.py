"""Queries on the orders context's tables."""

from __future__ import annotations

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from app.orders.model import Course, CourseToOrder, Order
from app.shared.db.dialects import statements
from app.shared.db.paging import paged, where_given
from app.shared.states import LIVE_ORDER, SEAT_HOLDING, OrderStatus

_courses = Course.__table__
_orders = Order.__table__
_COURSE_TO_ORDER = select(
    _courses.c.course_no,
    _courses.c.title,
    _courses.c.active,
    _courses.c.capacity,
    _courses.c.seats_taken,
    _courses.c.waitlisted,
    # The order an earlier request of this caller with this Idempotency-Key got, if any: in
    # the same read, so that a sold-out answer costs one round trip.
    select(_orders.c.order_no)
    .where(
        _orders.c.idempotency_caller == bindparam("caller"),
        _orders.c.idempotency_key == bindparam("idempotency_key"),
    )
    .scalar_subquery()
    .label("replay_of"),
).where(_courses.c.course_no == bindparam("course_no"))

# The condition an order of a course without a capacity is inserted on, in the statement that
# inserts it (RowWrite.only_if): a capacity set since the course was read sends the order the
# way of the seats instead. The capacity's transaction locks out the order writers first, so
# an insert either is counted by it or sees the capacity.
UNLIMITED_COURSE = (
    f"EXISTS (SELECT 1 FROM {_courses.name} WHERE course_no = :row_course_no AND capacity IS NULL)"
)


class CourseRepository:
    def __init__(self, session: Session):
        self.session = session

    def add(self, course: Course) -> None:
        self.session.add(course)

    def get(self, course_no: str, for_update: bool = False) -> Course | None:
        stmt = select(Course).where(Course.course_no == course_no)
        if for_update:
            # Its seats change under this lock: taken first, before any order's row.
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return self.session.execute(stmt).scalar_one_or_none()

    def seats_for_update(self, course_no: str) -> Course | None:
        """The course, locked, as a detached entity: an order changes only its seats, which
        `save_seats` writes back by one statement rather than by the ORM's flush."""
        row = self.session.execute(
            select(_courses).where(_courses.c.course_no == course_no).with_for_update()
        ).one_or_none()
        return Course(**row._mapping) if row else None

    def save_seats(self, course: Course) -> None:
        self.session.execute(
            update(_courses)
            .where(_courses.c.course_no == course.course_no)
            .values(
                seats_taken=course.seats_taken,
                waitlisted=course.waitlisted,
                last_ticket=course.last_ticket,
            )
        )

    def course_to_order(
        self, course_no: str, caller: str = "", idempotency_key: str | None = None
    ) -> CourseToOrder | None:
        """What an order needs of its course (course_no, title, active and its seats), and the
        order an earlier request with this key got: every order asks, so the statement is
        built once, on the table rather than the entity."""
        return self.session.execute(
            _COURSE_TO_ORDER,
            {"course_no": course_no, "caller": caller, "idempotency_key": idempotency_key},
        ).one_or_none()

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
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return self.session.execute(stmt).scalar_one_or_none()

    def course_of(self, order_no: str) -> str | None:
        return self.session.execute(
            select(Order.course_no).where(Order.order_no == order_no)
        ).scalar_one_or_none()

    def oldest_waitlisted(self, course_no: str, count: int) -> list[Order]:
        """The course's `count` longest-waiting orders, locked, the oldest first."""
        if count <= 0:
            return []
        return list(
            self.session.execute(
                select(Order)
                .where(Order.course_no == course_no, Order.status == OrderStatus.WAITLISTED)
                .order_by(Order.waitlist_ticket)
                .limit(count)
                .with_for_update()
            ).scalars()
        )

    def with_positions(self, orders: list[Order]) -> list[Order]:
        """Give each waiting order its place in its course's waitlist (1 is next)."""
        for order in orders:
            if order.status == OrderStatus.WAITLISTED:
                order.waitlist_position = self.session.execute(
                    select(func.count())
                    .select_from(Order)
                    .where(
                        Order.course_no == order.course_no,
                        Order.status == OrderStatus.WAITLISTED,
                        Order.waitlist_ticket <= order.waitlist_ticket,
                    )
                ).scalar_one()
        return orders

    def seats_held(self, course_no: str) -> int:
        """The course's orders that hold a seat, counted with every order writer locked out
        until the commit: an order placed meanwhile waits, and then sees what was decided."""
        statements(self.session).lock_out_writers(self.session, Order.__table__)
        return self.session.execute(
            select(func.count())
            .select_from(Order)
            .where(Order.course_no == course_no, Order.status.in_(SEAT_HOLDING))
        ).scalar_one()

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
                Order.status.in_(LIVE_ORDER),
            )
        ).scalar_one_or_none()

    def list(
        self, phone: str | None, status: str | None, offset: int, limit: int
    ) -> tuple[list[Order], int]:
        stmt = where_given(select(Order), (Order.phone, phone), (Order.status, status))
        return paged(self.session, stmt, Order.id.desc(), offset, limit)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
