"""Queries on the learning context's tables."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.learning.model import Learning, LearningStatus, Manager
from app.shared.db import paged, where_given


class ManagerRepository:
    def __init__(self, session: Session):
        self.session = session

    def add(self, manager: Manager) -> None:
        self.session.add(manager)

    def get(self, manager_id: int) -> Manager | None:
        return self.session.get(Manager, manager_id)

    def list(self) -> list[Manager]:
        return list(self.session.execute(select(Manager).order_by(Manager.id)).scalars())

    def least_loaded(self) -> Manager | None:
        """The active manager with the fewest STARTED learnings; ties go to the lowest id."""
        load = (
            select(Learning.manager_id, func.count(Learning.id).label("started"))
            .where(Learning.status == LearningStatus.STARTED)
            .group_by(Learning.manager_id)
            .subquery()
        )
        return self.session.execute(
            select(Manager)
            .outerjoin(load, load.c.manager_id == Manager.id)
            .where(Manager.active.is_(True))
            .order_by(func.coalesce(load.c.started, 0), Manager.id)
            .limit(1)
        ).scalar_one_or_none()


class LearningRepository:
    def __init__(self, session: Session):
        self.session = session

    def add(self, learning: Learning) -> None:
        self.session.add(learning)

    def get(self, learning_id: int, for_update: bool = False) -> Learning | None:
        return self.session.get(Learning, learning_id, with_for_update=for_update)

    def oldest_waiting(self, limit: int) -> list[Learning]:
        return list(
            self.session.execute(
                select(Learning)
                .where(Learning.status == LearningStatus.WAITING)
                .order_by(Learning.opened_at, Learning.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).scalars()
        )

    def for_order(self, order_no: str) -> Learning | None:
        return self.session.execute(
            select(Learning).where(Learning.order_no == order_no).with_for_update()
        ).scalar_one_or_none()

    def list(
        self,
        order_no: str | None,
        manager_id: int | None,
        status: str | None,
        offset: int,
        limit: int,
    ) -> tuple[list[Learning], int]:
        stmt = where_given(
            select(Learning),
            (Learning.order_no, order_no),
            (Learning.manager_id, manager_id),
            (Learning.status, status),
        )
        return paged(self.session, stmt, Learning.id.desc(), offset, limit)
