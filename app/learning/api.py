"""HTTP API of the learning context: /managers and /learnings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask.views import MethodView
from flask_smorest import abort
from flask_smorest.pagination import PaginationParameters
from marshmallow import Schema, fields, validate

from app.learning import handlers
from app.learning.model import Learning, Manager
from app.security import ensure_visible, manager_scope, require_role
from app.shared.api import Blueprint, KoreanMobile, page
from app.shared.phone import masked_mobile
from app.shared.states import LearningStatus


class ManagerSchema(Schema):
    id = fields.Int(dump_only=True)
    name = fields.Str(required=True, validate=validate.Length(1, 100))
    phone = KoreanMobile(required=True)
    active = fields.Bool(dump_only=True)


class PhoneIfManaged(fields.String):
    """The student's phone, masked (010-****-5678) for a manager who does not run the
    learning: a WAITING learning shows whose it is once a manager has taken it."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        mine = manager_scope()
        if value is not None and mine is not None and obj.manager_id != mine:
            value = masked_mobile(value)
        return super()._serialize(value, attr, obj, **kwargs)


class LearningSchema(Schema):
    id = fields.Int()
    order_no = fields.Str()
    course_no = fields.Str()
    phone = PhoneIfManaged(allow_none=True)
    status = fields.Str()
    manager_id = fields.Int(allow_none=True)
    manager_name = fields.Str(allow_none=True)
    opened_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    completed_at = fields.DateTime(allow_none=True)
    cancelled_at = fields.DateTime(allow_none=True)


class LearningQuerySchema(Schema):
    order_no = fields.Str(validate=validate.Length(max=32))
    manager_id = fields.Int(validate=validate.Range(1, 2**31 - 1))
    status = fields.Str(
        validate=validate.OneOf(
            [
                LearningStatus.WAITING,
                LearningStatus.STARTED,
                LearningStatus.COMPLETED,
                LearningStatus.CANCELLED,
            ]
        )
    )


def blueprints(learning_uow: Callable[[], handlers.LearningUnitOfWork]) -> list[Blueprint]:
    """/managers and /learnings, on the learning context's unit of work."""
    managers_blp = Blueprint(
        "managers", __name__, url_prefix="/managers", description="Learning managers"
    )
    learnings_blp = Blueprint(
        "learnings", __name__, url_prefix="/learnings", description="Learnings"
    )

    @managers_blp.route("")
    class Managers(MethodView):
        @managers_blp.arguments(ManagerSchema)
        @managers_blp.response(201, ManagerSchema)
        def post(self, body: dict[str, Any]) -> Manager:
            """Register a manager (admin); waiting learnings may start with them."""
            require_role()
            return handlers.register_manager(learning_uow(), handlers.RegisterManager(**body))

        @managers_blp.response(200, ManagerSchema(many=True))
        def get(self) -> list[Manager]:
            require_role("manager")
            with learning_uow() as uow:
                return uow.managers.list()

    @learnings_blp.route("")
    class Learnings(MethodView):
        @learnings_blp.arguments(LearningQuerySchema, location="query")
        @learnings_blp.response(200, LearningSchema(many=True))
        @learnings_blp.paginate()
        def get(
            self, query: dict[str, Any], pagination_parameters: PaginationParameters
        ) -> list[Learning]:
            """Learnings by order, manager and status. A manager sees their own and the
            WAITING ones, which they may take (`?status=WAITING`), with the phone masked."""
            require_role("manager")
            mine = manager_scope()
            with learning_uow() as uow:
                return page(
                    pagination_parameters,
                    lambda offset, limit: uow.learnings.list(
                        query.get("order_no"),
                        query.get("manager_id"),
                        query.get("status"),
                        offset,
                        limit,
                        visible_to=mine,
                    ),
                )

    def visible_learning(learning_id: int) -> Learning:
        """Admins see every learning; a manager theirs and the WAITING ones (to take), not
        one that ended before a manager took it; else 404."""
        require_role("manager")
        learning = handlers.get_learning(learning_uow(), learning_id)
        mine = manager_scope()
        ensure_visible(
            mine is None
            or learning.manager_id == mine
            or learning.status == LearningStatus.WAITING,
            f"learning {learning_id}",
        )
        return learning

    @learnings_blp.route("/<int(max=2147483647):learning_id>")
    class LearningById(MethodView):
        @learnings_blp.response(200, LearningSchema)
        def get(self, learning_id: int) -> Learning:
            return visible_learning(learning_id)

    class StartSchema(Schema):
        manager_id = fields.Int(required=True, strict=True, validate=validate.Range(1, 2**31 - 1))

    @learnings_blp.route("/<int(max=2147483647):learning_id>/start")
    class LearningStart(MethodView):
        @learnings_blp.arguments(StartSchema)
        @learnings_blp.response(200, LearningSchema)
        def post(self, body: dict[str, Any], learning_id: int) -> Learning:
            """Start a WAITING learning with the given manager (409 unless WAITING); a manager
            may only take it on themselves."""
            visible_learning(learning_id)
            mine = manager_scope()
            if mine is not None and body["manager_id"] != mine:
                abort(403, message="a manager starts a learning only with themselves")
            return handlers.start_learning(
                learning_uow(), handlers.StartLearning(learning_id, body["manager_id"])
            )

    return [managers_blp, learnings_blp]
