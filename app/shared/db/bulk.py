"""Batch statements: read, insert and update many rows in one statement, whatever their number."""

from __future__ import annotations

from functools import cache

from sqlalchemy import (
    ColumnElement,
    Table,
    TextClause,
    any_,
    bindparam,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from app.shared.db.engine import BATCH_KEYS, on_postgresql


def among(session: Session, column, values: list) -> ColumnElement[bool]:
    """`column IN (values)`, with the values as one array parameter on PostgreSQL: the SQL
    text is then the same whatever their number (an IN list makes a new statement for every
    batch size). PostgreSQL plans it at each execution (`_plan_batch_reads_each_execution`)."""
    if on_postgresql(session):
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(list(values))


def among_keys(session: Session, columns: tuple, keys: list[tuple]) -> ColumnElement[bool]:
    """`(a, b) IN (keys)`: rows whose key columns equal one of the given tuples.

    For a unique key of several columns. `a = ANY (...)` on its first column alone would be
    estimated, until the table is analyzed, at 0.5% of its rows per value: a sequential scan
    at any size. Joined to the unnested keys, each key is one probe of the unique index."""
    if not on_postgresql(session):
        return tuple_(*columns).in_(keys)
    arrays = [
        bindparam(None, [key[i] for key in keys], type_=ARRAY(column.type))
        for i, column in enumerate(columns)
    ]
    unnested = func.unnest(*arrays).table_valued(*(c.key for c in columns))
    return tuple_(*columns).in_(select(*unnested.render_derived(name=BATCH_KEYS).c))


def insert_missing(session: Session, table: Table, rows: list[dict]) -> None:
    """Insert the rows (all with the same keys), skipping those a unique constraint finds
    there already: another copy of the same event, or a concurrent batch that got there first.
    On PostgreSQL each column travels as one array, so the SQL text is the same whatever the
    number of rows (a VALUES list is a new, long statement for every batch size)."""
    if not rows:
        return
    names = tuple(rows[0])
    if on_postgresql(session):
        session.execute(_unnest_insert(table, names, "ON CONFLICT DO NOTHING"), _arrays(rows))
    else:
        session.execute(sqlite.insert(table).values(rows).on_conflict_do_nothing())


def insert_rows(session: Session, table: Table, rows: list[dict], returning: tuple[str, ...]):
    """Insert the rows (all with the same keys) in one statement, as insert_missing does but
    refusing a duplicate, and return the `returning` columns of each (their new ids)."""
    if not rows:
        return []
    names = tuple(rows[0])
    if on_postgresql(session):
        tail = f"RETURNING {', '.join(returning)}"
        return session.execute(_unnest_insert(table, names, tail), _arrays(rows)).all()
    return session.execute(
        insert(table).values(rows).returning(*(table.c[n] for n in returning))
    ).all()


def column_values(entity: object) -> dict:
    """An entity's column values by name, but for its autoincrement key (the database's)."""
    table = entity.__table__
    return {
        column.key: getattr(entity, column.key)
        for column in table.columns
        if column is not table.autoincrement_column
    }


def update_rows(session: Session, table: Table, key: str, rows: list[dict]) -> None:
    """Write these rows back (all with the same keys, `key` among them) over the stored rows
    with the same `key`. On PostgreSQL that is one statement for the whole batch, each column
    one array; the ORM's flush sends one UPDATE per row, and PostgreSQL executes each."""
    if not rows:
        return
    names = tuple(rows[0])
    if on_postgresql(session):
        session.execute(_unnest_update(table, key, names), _arrays(rows))
    else:
        where = table.c[key] == bindparam(f"_{key}")
        values = {n: bindparam(n, type_=table.c[n].type) for n in names if n != key}
        session.execute(
            update(table).where(where).values(values), [{**r, f"_{key}": r[key]} for r in rows]
        )


def _arrays(rows: list[dict]) -> dict[str, list]:
    return {name: [row[name] for row in rows] for name in rows[0]}


@cache
def _unnest_insert(table: Table, names: tuple[str, ...], tail: str) -> TextClause:
    return text(
        f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM {_unnest(table, names)} "
        + tail
    )


@cache
def _unnest_update(table: Table, key: str, names: tuple[str, ...]) -> TextClause:
    sets = ", ".join(f"{n} = {BATCH_KEYS}.{n}" for n in names if n != key)
    return text(
        f"UPDATE {table.name} AS t SET {sets} FROM {_unnest(table, names)} "
        f"AS {BATCH_KEYS}({', '.join(names)}) WHERE t.{key} = {BATCH_KEYS}.{key}"
    )


def _unnest(table: Table, names: tuple[str, ...]) -> str:
    """`unnest(...)` of one typed array parameter per column: the same SQL text for any
    number of rows."""
    dialect = postgresql.dialect()
    arrays = ", ".join(f"CAST(:{n} AS {table.c[n].type.compile(dialect)}[])" for n in names)
    return f"unnest({arrays})"
