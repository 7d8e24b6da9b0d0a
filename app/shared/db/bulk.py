"""Batch statements: read, insert and update many rows in one statement, whatever their number.

Each database writes them its own way (`dialects`); on PostgreSQL each column travels as one
array, so the SQL text is the same whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, TypeVar

from sqlalchemy import Column, ColumnElement, Table
from sqlalchemy.orm import QueryableAttribute, Session

from app.shared.db.dialects import AnyColumn, AnyRows, RowValues, statements

T = TypeVar("T")


class HasTable(Protocol):
    """A model, mapped on a table."""

    __table__: ClassVar[Table]


def among(
    session: Session, column: Column[T] | QueryableAttribute[T], values: Sequence[T]
) -> ColumnElement[bool]:
    """`column IN (values)`, with the values as one array parameter on PostgreSQL: the SQL
    text is then the same whatever their number (an IN list makes a new statement for every
    batch size). PostgreSQL plans it at each execution (`_plan_batch_reads_each_execution`)."""
    return statements(session).among(column, values)


def among_keys(
    session: Session, columns: Sequence[AnyColumn], keys: Sequence[tuple[Any, ...]]
) -> ColumnElement[bool]:
    """`(a, b) IN (keys)`: rows whose key columns equal one of the given tuples.

    For a unique key of several columns. On PostgreSQL, `a = ANY (...)` on its first column
    alone would be estimated, until the table is analyzed, at 0.5% of its rows per
    value: a sequential scan at any size. Joined to the unnested keys, each key is one probe
    of the unique index."""
    return statements(session).among_keys(columns, keys)


def insert_missing(session: Session, table: Table, rows: Sequence[RowValues]) -> None:
    """Insert the rows (all with the same keys), skipping those a unique constraint finds
    there already: another copy of the same event, or a concurrent batch that got there first.
    (A VALUES list would be a new, long statement for every batch size on PostgreSQL.)"""
    if rows:
        statements(session).insert_missing(session, table, rows)


def insert_rows(
    session: Session, table: Table, rows: Sequence[RowValues], returning: tuple[str, ...]
) -> AnyRows:
    """Insert the rows (all with the same keys) in one statement, as insert_missing does but
    refusing a duplicate, and return the `returning` columns of each (their new ids)."""
    if not rows:
        return []
    return statements(session).insert_rows(session, table, rows, returning)


def update_rows(session: Session, table: Table, key: str, rows: Sequence[RowValues]) -> None:
    """Write these rows back (all with the same keys, `key` among them) over the stored rows
    with the same `key`. On PostgreSQL that is one statement for the whole batch; the ORM's
    flush would send one UPDATE per row, and PostgreSQL execute each."""
    if rows:
        statements(session).update_rows(session, table, key, rows)


def column_values(entity: HasTable) -> dict[str, Any]:
    """An entity's column values by name, but for its autoincrement key (the database's)."""
    table = entity.__table__
    return {
        column.key: getattr(entity, column.key)
        for column in table.columns
        if column is not table.autoincrement_column
    }
