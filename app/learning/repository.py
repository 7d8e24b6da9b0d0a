"""Queries on the learning context's tables."""

from __future__ import annotations

import builtins

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from app.learning.model import Learning, Manager, ManagerLoadRow
from app.shared.db.bulk import among, column_values, insert_rows
from app.shared.db.paging import paged, where_given
from app.shared.states import LearningStatus


class ManagerRepository:
    def __init__(self, session: Session):
        self.session = session

    def add(self, manager: Manager) -> None:
        self.session.add(manager)

    def get(self, manager_id: int) -> Manager | None:
        return self.session.get(Manager, manager_id)

    def list(self) -> list[Manager]:
        return list(self.session.execute(select(Manager).order_by(Manager.id)).scalars())

    def by_load(self) -> builtins.list[ManagerLoadRow]:
        """The active managers as rows (id, name, started_count), fewest STARTED learnings
        first; ties go to the lowest id. Every batch of new orders reads them all, and
        entities cost the ORM's loading of each."""
        return list(self.session.execute(_BY_LOAD))

    def count_started(self, changes: dict[int, int]) -> None:
        """Add to the managers' STARTED counts, in id order: concurrent transactions then lock
        manager rows in one order and never deadlock on them."""
        rows = [{"m_id": m, "delta": changes[m]} for m in sorted(changes) if changes[m]]
        if rows:
            self.session.execute(_COUNT_STARTED, rows)


_MANAGERS = Manager.__table__
_LEARNINGS = Learning.__table__
_managers = _MANAGERS.c
_BY_LOAD = (
    select(_managers.id, _managers.name, _managers.started_count)
    .where(_managers.active.is_(True))
    .order_by(_managers.started_count, _managers.id)
)
_COUNT_STARTED = (
    update(_MANAGERS)
    .where(_managers.id == bindparam("m_id"))
    .values(started_count=_managers.started_count + bindparam("delta"))
)


class LearningRepository:
    def __init__(self, session: Session):
        self.session = session

    def add(self, learning: Learning) -> None:
        self.session.add(learning)

    def insert(self, learnings: list[Learning]) -> None:
        """Store new learnings in one statement and give each its id. They stay out of the
        session: the ORM's flush would send a new, long INSERT for every batch size."""
        rows = [column_values(learning) for learning in learnings]
        ids: dict[str, int] = dict(insert_rows(self.session, _LEARNINGS, rows, ("order_no", "id")))
        for learning in learnings:
            learning.id = ids[learning.order_no]

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

    def opened_for(self, order_nos: list[str]) -> set[str]:
        """Which of these orders have a learning (or a tombstone) already."""
        return set(
            self.session.execute(
                select(Learning.order_no).where(among(self.session, Learning.order_no, order_nos))
            ).scalars()
        )

    def of_orders(self, order_nos: list[str]) -> list[Learning]:
        """These orders' learnings, locked in order_no order: concurrent batches then lock
        them in one order and never deadlock."""
        return list(
            self.session.execute(
                select(Learning)
                .where(among(self.session, Learning.order_no, order_nos))
                .order_by(Learning.order_no)
                .with_for_update()
            ).scalars()
        )

    def of_order(self, order_no: str) -> Learning | None:
        """The order's learning (or its tombstone), locked for a change."""
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
        visible_to: int | None = None,
    ) -> tuple[list[Learning], int]:
        """The learnings matching the filters given; with `visible_to`, only that manager's
        and the WAITING ones."""
        stmt = select(Learning)
        if visible_to is not None:
            stmt = stmt.where(
                or_(Learning.manager_id == visible_to, Learning.status == LearningStatus.WAITING)
            )
        stmt = where_given(
            stmt,
            (Learning.order_no, order_no),
            (Learning.manager_id, manager_id),
            (Learning.status, status),
        )
        return paged(self.session, stmt, Learning.id.desc(), offset, limit)
