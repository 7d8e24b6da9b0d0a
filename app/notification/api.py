"""HTTP API of the notification context: /sms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask.views import MethodView
from flask_smorest.pagination import PaginationParameters
from marshmallow import Schema, fields, validate

from app.notification import handlers
from app.notification.model import SmsMessage
from app.security import require_role, student_phone
from app.shared.api import Blueprint, KoreanMobile, page


class SmsSchema(Schema):
    id = fields.Int()
    phone = fields.Str()
    order_no = fields.Str(allow_none=True)
    event_type = fields.Str()
    message = fields.Str()
    status = fields.Str()
    provider = fields.Str()
    provider_message_id = fields.Str(allow_none=True)
    attempts = fields.Int()
    created_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)


class SmsQuerySchema(Schema):
    phone = KoreanMobile()
    order_no = fields.Str(validate=validate.Length(max=32))


def blueprints(
    notification_uow: Callable[[], handlers.NotificationUnitOfWork],
) -> list[Blueprint]:
    """/sms, on the notification context's unit of work."""
    sms_blp = Blueprint("sms", __name__, url_prefix="/sms", description="SMS sent to students")

    @sms_blp.route("")
    class SmsMessages(MethodView):
        @sms_blp.arguments(SmsQuerySchema, location="query")
        @sms_blp.response(200, SmsSchema(many=True))
        @sms_blp.paginate()
        def get(
            self, query: dict[str, Any], pagination_parameters: PaginationParameters
        ) -> list[SmsMessage]:
            require_role("student")
            mine = student_phone()
            phone = query.get("phone") if mine is None else mine
            with notification_uow() as uow:
                return page(
                    pagination_parameters,
                    lambda offset, limit: uow.messages.list(
                        phone, query.get("order_no"), offset, limit
                    ),
                )

    return [sms_blp]
