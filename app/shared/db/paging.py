"""Filtering and paging of list queries (the API's X-Pagination)."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import QueryableAttribute, Session

from app.shared.db.dialects import AnyColumn

T = TypeVar("T")


def where_given(stmt: Select[T], *conditions: tuple[AnyColumn, object]) -> Select[T]:
    """Add `column == value` for each (column, value) whose value was given (not None or "")."""
    for column, value in conditions:
        if value is not None and value != "":
            stmt = stmt.where(column == value)
    return stmt


def paged(
    session: Session,
    stmt: Select[T],
    order_by: ColumnElement[Any] | QueryableAttribute[Any],
    offset: int,
    limit: int,
) -> tuple[list[T], int]:
    """One page of `stmt`'s rows and the total count (for X-Pagination)."""
    total = session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    items = session.execute(stmt.order_by(order_by).offset(offset).limit(limit)).scalars().all()
    return list(items), total
