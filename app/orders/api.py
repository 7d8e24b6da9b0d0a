"""HTTP API of the orders context: /courses and /orders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask.views import MethodView
from flask_smorest import abort
from flask_smorest.pagination import PaginationParameters
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy.orm import Session

from app.learning import public as learning
from app.orders import handlers
from app.orders.model import Course, Order
from app.security import (
    Limits,
    current,
    ensure_visible,
    manager_scope,
    require_role,
    student_phone,
)
from app.shared.api import Blueprint, KoreanMobile, page
from app.shared.errors import Unavailable
from app.shared.states import OrderStatus

# SPEC 7: shown to the student when learning is overloaded.
OVERLOADED = "주문이 많아 처리가 지연되고 있습니다. 잠시 후 다시 시도해 주세요."


SEATS = validate.Range(1, 1_000_000)
_CAPACITY = {
    "description": "Seats; null for unlimited. Never below the seats already taken; the seats "
    "it adds go to the waitlist, the oldest first."
}


class CourseSchema(Schema):
    course_no = fields.Str(required=True, validate=validate.Length(1, 32))
    title = fields.Str(required=True, validate=validate.Length(1, 200))
    description = fields.Str(load_default="", validate=validate.Length(max=5000))
    category = fields.Str(load_default="", validate=validate.Length(max=50))
    price = fields.Int(required=True, strict=True, validate=validate.Range(0, 100_000_000))
    active = fields.Bool(load_default=True)
    # SPEC 11: seats; none (or null) is unlimited.
    capacity = fields.Int(
        load_default=None, allow_none=True, strict=True, validate=SEATS, metadata=_CAPACITY
    )
    seats_left = fields.Int(dump_only=True, allow_none=True)
    waitlisted = fields.Int(dump_only=True)


class CoursePatchSchema(Schema):
    title = fields.Str(validate=validate.Length(1, 200))
    description = fields.Str(validate=validate.Length(max=5000))
    category = fields.Str(validate=validate.Length(max=50))
    price = fields.Int(strict=True, validate=validate.Range(0, 100_000_000))
    active = fields.Bool()
    capacity = fields.Int(allow_none=True, strict=True, validate=SEATS, metadata=_CAPACITY)


class CourseQuerySchema(Schema):
    q = fields.Str(validate=validate.Length(max=200))
    category = fields.Str(validate=validate.Length(max=50))


class PlaceOrderSchema(Schema):
    course_no = fields.Str(required=True, validate=validate.Length(1, 32))
    phone = KoreanMobile(required=True)
    begin_date = fields.Date(required=True)
    end_date = fields.Date(required=True)
    waitlist = fields.Bool(
        load_default=False,
        metadata={
            "description": "On a full course, wait for a seat (201 WAITLISTED) rather "
            "than be refused (409 SOLD_OUT)."
        },
    )

    @validates_schema
    def _dates_in_order(self, data: dict[str, Any], **kwargs: Any) -> None:
        if (
            data.get("begin_date")
            and data.get("end_date")
            and data["begin_date"] > data["end_date"]
        ):
            raise ValidationError("begin_date must be on or before end_date", "end_date")


class OrderSchema(Schema):
    order_no = fields.Str()
    course_no = fields.Str()
    phone = fields.Str()
    status = fields.Str()
    ordered_at = fields.DateTime()
    begin_date = fields.Date()
    end_date = fields.Date()
    score = fields.Int(allow_none=True)
    waitlist_position = fields.Int(
        allow_none=True, metadata={"description": "While WAITLISTED: 1 is next for a seat."}
    )


class OrderQuerySchema(Schema):
    phone = KoreanMobile()
    status = fields.Str(validate=validate.OneOf(list(OrderStatus)))


class IdempotencyHeaderSchema(Schema):
    idempotency_key = fields.Str(data_key="Idempotency-Key", validate=validate.Length(1, 128))


def blueprints(
    orders_uow: Callable[[], handlers.OrdersUnitOfWork],
    read_session: Callable[[], Session],
    learning_overloaded: Callable[[], bool],
    limits: Limits,
) -> list[Blueprint]:
    """/courses and /orders, on the orders context's unit of work."""
    courses_blp = Blueprint(
        "courses", __name__, url_prefix="/courses", description="Course catalog"
    )
    orders_blp = Blueprint("orders", __name__, url_prefix="/orders", description="Course orders")

    @courses_blp.route("")
    class Courses(MethodView):
        @courses_blp.arguments(CourseQuerySchema, location="query")
        @courses_blp.response(200, CourseSchema(many=True))
        @courses_blp.paginate()
        def get(
            self, query: dict[str, Any], pagination_parameters: PaginationParameters
        ) -> list[Course]:
            """Search the active courses by title/description (`q`) and category."""
            with orders_uow() as uow:
                return page(
                    pagination_parameters,
                    lambda offset, limit: uow.courses.search(
                        query.get("q"), query.get("category"), offset, limit
                    ),
                )

        @courses_blp.arguments(CourseSchema)
        @courses_blp.response(201, CourseSchema)
        def post(self, body: dict[str, Any]) -> Course:
            """Add a course to the catalog (admin)."""
            require_role()
            return handlers.create_course(orders_uow(), handlers.CreateCourse(**body))

    def visible_course(course_no: str) -> Course:
        """The course if the caller may see it: an active one, anybody; one off the catalog,
        admins and the students who ordered it; else 404 as if it did not exist."""
        course = handlers.get_course(orders_uow(), course_no)
        if not course.active:
            principal = current()
            visible = principal.is_admin
            if principal.role == "student":
                with orders_uow() as uow:
                    visible = uow.orders.has_ordered(student_phone(), course_no)
            ensure_visible(visible, f"course {course_no}")
        return course

    @courses_blp.route("/<course_no>")
    class CourseByNo(MethodView):
        @courses_blp.response(200, CourseSchema)
        def get(self, course_no: str) -> Course:
            return visible_course(course_no)

        @courses_blp.arguments(CoursePatchSchema)
        @courses_blp.response(200, CourseSchema)
        def patch(self, body: dict[str, Any], course_no: str) -> Course:
            """Change a course (admin); `{"active": false}` takes it off the catalog."""
            require_role()
            return handlers.update_course(orders_uow(), course_no, body)

    def visible_order(order_no: str) -> Order:
        """The order if the caller may see it: admins all, students their phone's, managers those
        of the learnings they run; else 404 as if it did not exist."""
        principal = current()
        order = handlers.get_order(orders_uow(), order_no)
        if principal.role == "student":
            visible = order.phone == student_phone()
        elif principal.role == "manager":
            mine = manager_scope()
            with read_session() as session:
                visible = mine is not None and learning.manager_of_order(session, order_no) == mine
        else:
            visible = principal.is_admin
        ensure_visible(visible, f"order {order_no}")
        return order

    @orders_blp.route("")
    class Orders(MethodView):
        @orders_blp.arguments(IdempotencyHeaderSchema, location="headers")
        @orders_blp.arguments(PlaceOrderSchema)
        @orders_blp.response(201, OrderSchema)
        @orders_blp.alt_response(409, description="SOLD_OUT, or a live order of the course")
        @orders_blp.alt_response(429, description="Too many orders; see Retry-After")
        @orders_blp.alt_response(503, description="Learning is overloaded; see Retry-After")
        def post(self, headers: dict[str, Any], body: dict[str, Any]) -> Order:
            """Order a course. Send `Idempotency-Key` to make a retried request safe. On a full
            course: 409 SOLD_OUT, or with `waitlist` 201 WAITLISTED with its position."""
            principal = require_role("student")
            mine = student_phone()
            if mine is not None and body["phone"] != mine:
                abort(403, message="a student orders for their own phone")
            if learning_overloaded():
                raise Unavailable(OVERLOADED, retry_after_s=5)
            # A key is the caller's own: another caller's same key is another request.
            # The order limit counts an order when it is about to be written: a sold-out
            # answer, the busiest one of a rush, stays one read.
            order, _created = handlers.place_order(
                orders_uow(),
                handlers.PlaceOrder(
                    idempotency_key=headers.get("idempotency_key"),
                    caller=principal.subject,
                    **body,
                ),
                admit=limits.orders.count,
            )
            return order

        @orders_blp.arguments(OrderQuerySchema, location="query")
        @orders_blp.response(200, OrderSchema(many=True))
        @orders_blp.paginate()
        def get(
            self, query: dict[str, Any], pagination_parameters: PaginationParameters
        ) -> list[Order]:
            """Orders by phone and status; a student sees only their own."""
            require_role("student")
            mine = student_phone()
            phone = query.get("phone") if mine is None else mine
            with orders_uow() as uow:
                return uow.orders.with_positions(
                    page(
                        pagination_parameters,
                        lambda offset, limit: uow.orders.list(
                            phone, query.get("status"), offset, limit
                        ),
                    )
                )

    @orders_blp.route("/<order_no>")
    class OrderByNo(MethodView):
        @orders_blp.response(200, OrderSchema)
        def get(self, order_no: str) -> Order:
            return visible_order(order_no)

    @orders_blp.route("/<order_no>/cancel")
    class OrderCancel(MethodView):
        @orders_blp.response(200, OrderSchema)
        def post(self, order_no: str) -> Order:
            """Cancel the order (again: 200); 409 once it is completed."""
            require_role("student")
            limits.cancels.count()
            visible_order(order_no)
            return handlers.cancel_order(orders_uow(), order_no)

    return [courses_blp, orders_blp]
