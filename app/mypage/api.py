"""HTTP API of My page: /mypage/{phone}, from the read model only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask.views import MethodView
from flask_smorest import abort
from flask_smorest.pagination import PaginationParameters
from marshmallow import Schema, fields
from sqlalchemy.orm import Session

from app.mypage.views import count_for_phone, rows_for_phone
from app.security import ensure_visible, require_role, student_phone
from app.shared.api import Blueprint
from app.shared.phone import normalize_mobile


class MyPageRowSchema(Schema):
    order_no = fields.Str()
    course_no = fields.Str(allow_none=True)
    course_title = fields.Str(allow_none=True)
    order_status = fields.Str(allow_none=True)
    learning_status = fields.Str(allow_none=True)
    manager_name = fields.Str(allow_none=True)
    evaluation_status = fields.Str(allow_none=True)
    latest_score = fields.Int(allow_none=True)
    final_score = fields.Int(allow_none=True)
    ordered_at = fields.DateTime(allow_none=True)
    begin_date = fields.Date(allow_none=True)
    end_date = fields.Date(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)
    waitlist_position = fields.Int(
        allow_none=True, metadata={"description": "While WAITLISTED: 1 is next for a seat."}
    )


def blueprints(read_session: Callable[[], Session]) -> list[Blueprint]:
    """/mypage/{phone}, read from the read model only."""
    mypage_blp = Blueprint(
        "mypage", __name__, url_prefix="/mypage", description="A student's orders at a glance"
    )

    @mypage_blp.route("/<phone>")
    class MyPage(MethodView):
        @mypage_blp.response(200, MyPageRowSchema(many=True))
        @mypage_blp.paginate()
        def get(
            self, phone: str, pagination_parameters: PaginationParameters
        ) -> list[dict[str, Any]]:
            """The student's orders, newest first, with learning, evaluation and scores."""
            try:
                phone = normalize_mobile(phone)
            except ValueError as exc:
                abort(422, message=f"phone: {exc}")
            require_role("student")
            ensure_visible(student_phone() in (None, phone), "My page")
            with read_session() as session:
                pagination_parameters.item_count = count_for_phone(session, phone)
                return rows_for_phone(
                    session,
                    phone,
                    pagination_parameters.first_item,
                    pagination_parameters.page_size,
                )

    return [mypage_blp]
