"""HTTP API of the evaluation context: /evaluations, records and the final score."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask.views import MethodView
from flask_smorest.pagination import PaginationParameters
from marshmallow import Schema, fields, validate

from app.evaluation import handlers
from app.evaluation.model import Evaluation, EvaluationRecord
from app.evaluation.repository import EvaluationState
from app.security import ensure_visible, manager_scope, require_role
from app.shared.api import Blueprint, page
from app.shared.states import EvaluationStatus


class RecordSchema(Schema):
    score = fields.Int(required=True, strict=True, validate=validate.Range(0, 100))
    comment = fields.Str(load_default="", validate=validate.Length(max=2000))
    recorded_at = fields.DateTime(dump_only=True)


class EvaluationSchema(Schema):
    id = fields.Int()
    order_no = fields.Str()
    learning_id = fields.Int(allow_none=True)
    manager_id = fields.Int(allow_none=True)
    status = fields.Str()
    records = fields.List(fields.Nested(RecordSchema))
    final_score = fields.Int(allow_none=True)
    opened_at = fields.DateTime()
    finalized_at = fields.DateTime(allow_none=True)
    cancelled_at = fields.DateTime(allow_none=True)


class FinalScoreSchema(Schema):
    score = fields.Int(required=True, strict=True, validate=validate.Range(0, 100))


class EvaluationQuerySchema(Schema):
    order_no = fields.Str(validate=validate.Length(max=32))
    status = fields.Str(
        validate=validate.OneOf(
            [EvaluationStatus.IN_PROGRESS, EvaluationStatus.FINAL, EvaluationStatus.CANCELLED]
        )
    )


def blueprints(
    evaluation_uow: Callable[[], handlers.EvaluationUnitOfWork], score_chain: handlers.ScoreChain
) -> list[Blueprint]:
    """/evaluations, on the evaluation context's unit of work and the score chain."""
    evaluations_blp = Blueprint(
        "evaluations",
        __name__,
        url_prefix="/evaluations",
        description="Evaluations and final scores",
    )

    def visible_evaluation(evaluation_id: int) -> Evaluation:
        """Admins see every evaluation, a manager those of their learnings; else 404."""
        require_role("manager")
        evaluation = handlers.get_evaluation(evaluation_uow(), evaluation_id)
        ensure_managed(evaluation)
        return evaluation

    def ensure_managed(evaluation: Evaluation | EvaluationState) -> None:
        mine = manager_scope()
        ensure_visible(mine is None or evaluation.manager_id == mine, f"evaluation {evaluation.id}")

    @evaluations_blp.route("")
    class Evaluations(MethodView):
        @evaluations_blp.arguments(EvaluationQuerySchema, location="query")
        @evaluations_blp.response(200, EvaluationSchema(many=True))
        @evaluations_blp.paginate()
        def get(
            self, query: dict[str, Any], pagination_parameters: PaginationParameters
        ) -> list[Evaluation]:
            """Evaluations by order and status; a manager sees only their own."""
            require_role("manager")
            with evaluation_uow() as uow:
                return page(
                    pagination_parameters,
                    lambda offset, limit: uow.evaluations.list(
                        query.get("order_no"),
                        query.get("status"),
                        offset,
                        limit,
                        manager_id=manager_scope(),
                    ),
                )

    @evaluations_blp.route("/<int(max=2147483647):evaluation_id>")
    class EvaluationById(MethodView):
        @evaluations_blp.response(200, EvaluationSchema)
        def get(self, evaluation_id: int) -> Evaluation:
            return visible_evaluation(evaluation_id)

    @evaluations_blp.route("/<int(max=2147483647):evaluation_id>/records")
    class EvaluationRecords(MethodView):
        @evaluations_blp.arguments(RecordSchema)
        @evaluations_blp.response(201, RecordSchema)
        def post(self, body: dict[str, Any], evaluation_id: int) -> EvaluationRecord:
            """Record an interim score (0..100) while the evaluation is IN_PROGRESS."""
            visible_evaluation(evaluation_id)
            return handlers.record_evaluation(
                evaluation_uow(), handlers.RecordEvaluation(evaluation_id, **body)
            )

    @evaluations_blp.route("/<int(max=2147483647):evaluation_id>/final")
    class FinalScore(MethodView):
        @evaluations_blp.arguments(FinalScoreSchema)
        @evaluations_blp.response(200, EvaluationSchema)
        @evaluations_blp.alt_response(503, description="Orders side unavailable; see Retry-After")
        def post(self, body: dict[str, Any], evaluation_id: int) -> Evaluation:
            """Register the final score: on the order and the evaluation at once, or 503/409."""
            require_role("manager")
            uow = evaluation_uow()
            evaluation = handlers.state_for_final_score(uow, evaluation_id)
            ensure_managed(evaluation)
            return handlers.register_final_score(
                uow,
                score_chain,
                handlers.RegisterFinalScore(evaluation_id, body["score"]),
                evaluation,
            )

    return [evaluations_blp]
