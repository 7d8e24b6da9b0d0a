"""Queries on the evaluation context's tables."""

from __future__ import annotations

from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session, joinedload, lazyload

from app.evaluation.model import Evaluation
from app.shared.db.bulk import among, column_values, insert_missing
from app.shared.db.paging import paged, where_given
from app.shared.states import EvaluationStatus

_EVALUATIONS = Evaluation.__table__
_evaluations = _EVALUATIONS.c
_STATE_OF = select(
    _evaluations.id,
    _evaluations.order_no,
    _evaluations.manager_id,
    _evaluations.status,
    _evaluations.final_score,
).where(_evaluations.id == bindparam("evaluation_id"))


# What a final score decides on: id, order_no, manager_id, status, final_score.
EvaluationState = Row[int, str, int | None, str, int | None]


class EvaluationRepository:
    def __init__(self, session: Session):
        self.session = session

    def add(self, evaluation: Evaluation) -> None:
        self.session.add(evaluation)

    def add_missing(self, evaluations: list[Evaluation]) -> None:
        """Store those of these new evaluations whose order has none yet (nor a tombstone), in
        one statement; the ORM's flush would send a new, long INSERT for every batch size."""
        rows = [column_values(evaluation) for evaluation in evaluations]
        insert_missing(self.session, _EVALUATIONS, rows)

    def get(
        self, evaluation_id: int, for_update: bool = False, records: bool = True
    ) -> Evaluation | None:
        """`records=False` skips loading them: one round trip fewer where they are not used.
        Read without a lock, the records come in the same query (a join, not a second SELECT);
        PostgreSQL refuses FOR UPDATE on the outer side of a join, so a locked read keeps
        the second one."""
        if not records:
            options = [lazyload(Evaluation.records)]
        else:
            options = [] if for_update else [joinedload(Evaluation.records)]
        return self.session.get(
            Evaluation, evaluation_id, with_for_update=for_update, options=options
        )

    def state_of(self, evaluation_id: int) -> EvaluationState | None:
        """What the final score decides on (id, order_no, manager_id, status, final_score), as
        a plain row: it is read on every final, and an entity costs the ORM's loading."""
        return self.session.execute(_STATE_OF, {"evaluation_id": evaluation_id}).one_or_none()

    def in_progress_for(self, order_nos: list[str]) -> list[Evaluation]:
        """These orders' evaluations still IN_PROGRESS, locked in order_no order, without
        their records."""
        return list(
            self.session.execute(
                select(Evaluation)
                .where(
                    among(self.session, Evaluation.order_no, order_nos),
                    Evaluation.status == EvaluationStatus.IN_PROGRESS,
                )
                .order_by(Evaluation.order_no)
                .with_for_update()
                .options(lazyload(Evaluation.records))
            ).scalars()
        )

    def of_order(self, order_no: str) -> Evaluation | None:
        """The order's evaluation (or its tombstone), locked for a change."""
        return self.session.execute(
            select(Evaluation).where(Evaluation.order_no == order_no).with_for_update()
        ).scalar_one_or_none()

    def list(
        self,
        order_no: str | None,
        status: str | None,
        offset: int,
        limit: int,
        manager_id: int | None = None,
    ) -> tuple[list[Evaluation], int]:
        stmt = where_given(
            select(Evaluation),
            (Evaluation.order_no, order_no),
            (Evaluation.status, status),
            (Evaluation.manager_id, manager_id),
        )
        return paged(self.session, stmt, Evaluation.id.desc(), offset, limit)
