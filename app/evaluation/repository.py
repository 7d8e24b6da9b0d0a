"""Queries on the evaluation context's tables."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.evaluation.model import Evaluation


class EvaluationRepository:
    def __init__(self, session: Session):
        self.session = session

    def add(self, evaluation: Evaluation) -> None:
        self.session.add(evaluation)

    def get(self, evaluation_id: int, for_update: bool = False) -> Evaluation | None:
        return self.session.get(Evaluation, evaluation_id, with_for_update=for_update)

    def for_order(self, order_no: str) -> Evaluation | None:
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
        stmt = select(Evaluation)
        if order_no:
            stmt = stmt.where(Evaluation.order_no == order_no)
        if status:
            stmt = stmt.where(Evaluation.status == status)
        if manager_id is not None:
            stmt = stmt.where(Evaluation.manager_id == manager_id)
        total = self.session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
        items = (
            self.session.execute(stmt.order_by(Evaluation.id.desc()).offset(offset).limit(limit))
            .scalars()
            .all()
        )
        return list(items), total
