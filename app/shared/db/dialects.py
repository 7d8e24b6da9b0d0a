"""What PostgreSQL and the embedded SQLite write differently, behind one interface.

`statements(session)` is the one place that looks at the session's database; every statement
that differs between the two is a member of `Statements`, and each side is one class below.
PostgreSQL's side is tuned for speed: each column of a batch travels as one array, so the SQL
text (and its prepared plan) is the same whatever the number of rows; SQLite's side writes the
plain statement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import (
    Column,
    ColumnClause,
    ColumnElement,
    CursorResult,
    Result,
    Row,
    Table,
    TextClause,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import QueryableAttribute, Session

from app.shared.db.engine import BATCH_KEYS

T = TypeVar("T")
# A column of a table (`table.c.name`) or of a model (`Model.name`).
AnyColumn = Column[Any] | QueryableAttribute[Any]
# One row to write: its values by column key.
RowValues = Mapping[str, Any]
# A row read back, of whatever columns the statement returns.
AnyRow = Row[*tuple[Any, ...]]
AnyRows = Sequence[AnyRow]


class Statements(Protocol):
    """The statements that differ between the databases. Batch arguments are never empty."""

    # Whether one statement may write rows of several tables (PostgreSQL's data-modifying WITH).
    one_statement_writes: bool

    def among(
        self, column: Column[T] | QueryableAttribute[T], values: Sequence[T]
    ) -> ColumnElement[bool]:
        """`column IN (values)`."""

    def among_keys(
        self, columns: Sequence[AnyColumn], keys: Sequence[tuple[Any, ...]]
    ) -> ColumnElement[bool]:
        """`(a, b) IN (keys)`."""

    def insert_missing(self, session: Session, table: Table, rows: Sequence[RowValues]) -> None:
        """Insert the rows, skipping those a unique constraint finds there already."""

    def insert_rows(
        self, session: Session, table: Table, rows: Sequence[RowValues], returning: tuple[str, ...]
    ) -> AnyRows:
        """Insert the rows; return their `returning` columns."""

    def update_rows(
        self, session: Session, table: Table, key: str, rows: Sequence[RowValues]
    ) -> None:
        """Write the rows over the stored ones with the same `key`."""

    def upsert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        """An INSERT into `table` that takes ON CONFLICT clauses."""

    def insert_processed(
        self, session: Session, table: Table, consumer: str, event_ids: list[str], now: datetime
    ) -> set[str]:
        """Record in a processed-messages table that `consumer` handled these events; return
        the ids that were not recorded before."""

    def notify(self, session: Session, channel: str, payload: str) -> None:
        """Tell the listeners of `channel` at commit (nothing where none can listen)."""

    def lock_out_writers(self, session: Session, table: Table) -> None:
        """Make the table's other writers wait for this transaction; readers go on."""

    def delete_oldest(
        self,
        session: Session,
        table: Table,
        where: list[ColumnElement[bool]],
        oldest_first: ColumnElement[Any],
        limit: int,
    ) -> int:
        """Delete at most `limit` rows that match `where`, the oldest first, without waiting
        for rows another transaction holds; return how many."""


class PostgreSQL:
    one_statement_writes = True

    def among(
        self, column: Column[T] | QueryableAttribute[T], values: Sequence[T]
    ) -> ColumnElement[bool]:
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))

    def among_keys(
        self, columns: Sequence[AnyColumn], keys: Sequence[tuple[Any, ...]]
    ) -> ColumnElement[bool]:
        # Joined to the unnested keys, each key is one probe of the unique index.
        arrays = [
            bindparam(None, [key[i] for key in keys], type_=ARRAY(column.type))
            for i, column in enumerate(columns)
        ]
        unnested = func.unnest(*arrays).table_valued(*(c.key for c in columns))
        return tuple_(*columns).in_(select(*unnested.render_derived(name=BATCH_KEYS).c))

    def insert_missing(self, session: Session, table: Table, rows: Sequence[RowValues]) -> None:
        session.execute(
            _unnest_insert(table, tuple(rows[0]), "ON CONFLICT DO NOTHING"), _arrays(rows)
        )

    def insert_rows(
        self, session: Session, table: Table, rows: Sequence[RowValues], returning: tuple[str, ...]
    ) -> AnyRows:
        statement = _unnest_insert(table, tuple(rows[0]), f"RETURNING {', '.join(returning)}")
        return session.execute(statement, _arrays(rows)).all()

    def update_rows(
        self, session: Session, table: Table, key: str, rows: Sequence[RowValues]
    ) -> None:
        session.execute(_unnest_update(table, key, tuple(rows[0])), _arrays(rows))

    def upsert(self, table: Table) -> postgresql.Insert:
        return postgresql.insert(table)

    def insert_processed(
        self, session: Session, table: Table, consumer: str, event_ids: list[str], now: datetime
    ) -> set[str]:
        inserted = session.execute(
            text(
                f"INSERT INTO {table.name} (consumer, event_id, processed_at) "
                "SELECT :consumer, e, :now FROM unnest(CAST(:ids AS varchar[])) AS e "
                "ON CONFLICT DO NOTHING RETURNING event_id"
            ),
            {"consumer": consumer, "now": now, "ids": event_ids},
        )
        return set(inserted.scalars())

    def notify(self, session: Session, channel: str, payload: str) -> None:
        # NOTIFY is transactional: it is heard at commit, never for a rollback.
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
        )

    def lock_out_writers(self, session: Session, table: Table) -> None:
        session.execute(text(f"LOCK TABLE {table.name} IN EXCLUSIVE MODE"))

    def delete_oldest(
        self,
        session: Session,
        table: Table,
        where: list[ColumnElement[bool]],
        oldest_first: ColumnElement[Any],
        limit: int,
    ) -> int:
        # By physical address: the same for every table whatever its key, and fetched as an
        # array the DELETE is a TID scan. SKIP LOCKED: two sweepers (or a rebuild holding
        # records) never wait for each other; each takes other rows.
        ctid: ColumnClause[Any] = literal_column("ctid")
        oldest = (
            select(ctid)
            .select_from(table)
            .where(*where)
            .order_by(oldest_first)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        result = session.execute(
            delete(table).where(ctid == any_(func.array(oldest.scalar_subquery())))
        )
        return rowcount(result)


class SQLite:
    one_statement_writes = False

    def among(
        self, column: Column[T] | QueryableAttribute[T], values: Sequence[T]
    ) -> ColumnElement[bool]:
        return column.in_(list(values))

    def among_keys(
        self, columns: Sequence[AnyColumn], keys: Sequence[tuple[Any, ...]]
    ) -> ColumnElement[bool]:
        return tuple_(*columns).in_(keys)

    def insert_missing(self, session: Session, table: Table, rows: Sequence[RowValues]) -> None:
        session.execute(sqlite.insert(table).values(rows).on_conflict_do_nothing())

    def insert_rows(
        self, session: Session, table: Table, rows: Sequence[RowValues], returning: tuple[str, ...]
    ) -> AnyRows:
        statement = insert(table).values(rows).returning(*(table.c[n] for n in returning))
        return session.execute(statement).all()

    def update_rows(
        self, session: Session, table: Table, key: str, rows: Sequence[RowValues]
    ) -> None:
        where = table.c[key] == bindparam(f"_{key}")
        values = {n: bindparam(n, type_=table.c[n].type) for n in rows[0] if n != key}
        session.execute(
            update(table).where(where).values(values), [{**r, f"_{key}": r[key]} for r in rows]
        )

    def upsert(self, table: Table) -> sqlite.Insert:
        return sqlite.insert(table)

    def insert_processed(
        self, session: Session, table: Table, consumer: str, event_ids: list[str], now: datetime
    ) -> set[str]:
        rows = [{"consumer": consumer, "event_id": i, "processed_at": now} for i in event_ids]
        inserted = session.execute(
            sqlite.insert(table).values(rows).on_conflict_do_nothing().returning(table.c.event_id)
        )
        return set(inserted.scalars())

    def notify(self, session: Session, channel: str, payload: str) -> None:
        """Nothing: SQLite has no listeners, and its relay polls."""

    def lock_out_writers(self, session: Session, table: Table) -> None:
        """Nothing: every SQLite transaction takes the write lock at BEGIN IMMEDIATE already."""

    def delete_oldest(
        self,
        session: Session,
        table: Table,
        where: list[ColumnElement[bool]],
        oldest_first: ColumnElement[Any],
        limit: int,
    ) -> int:
        # One writer at a time holds the whole file: nothing to skip, and the batch keeps that
        # hold short.
        rowid: ColumnClause[Any] = literal_column("rowid")
        oldest = select(rowid).select_from(table).where(*where).order_by(oldest_first).limit(limit)
        result = session.execute(delete(table).where(rowid.in_(oldest.scalar_subquery())))
        return rowcount(result)


_BY_DIALECT: dict[str, Statements] = {"postgresql": PostgreSQL(), "sqlite": SQLite()}


def rowcount(result: Result[*tuple[Any, ...]]) -> int:
    """The rows an UPDATE or DELETE matched. Its result is a CursorResult, which SQLAlchemy's
    Session.execute types as any Result."""
    return cast(CursorResult[Any], result).rowcount


def statements(session: Session) -> Statements:
    """The statements of the session's database."""
    return _BY_DIALECT[session.get_bind().dialect.name]


def _arrays(rows: Sequence[RowValues]) -> dict[str, list[Any]]:
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
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it unannotated
    arrays = ", ".join(f"CAST(:{n} AS {table.c[n].type.compile(dialect)}[])" for n in names)
    return f"unnest({arrays})"
