"""Engines (PostgreSQL's psycopg hooks, SQLite's writer serialization) and session factories."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, ExecutionContext, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from app.shared.tracing import engine_made

if TYPE_CHECKING:
    import sqlite3

    import psycopg

# Marks the engine whose connections commit each statement on their own (PostgreSQL only).
AUTOCOMMIT_POOL = "onlinestudy_autocommit_pool"


def make_engine(url: str, autocommit: bool = False) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        _serialize_sqlite_writers(engine)
        engine_made(engine)
        return engine
    # No pre-ping: it costs a round trip on every checkout, on every request and task. After a
    # database restart the first use of a pooled connection fails instead; SQLAlchemy then
    # drops the whole pool, the API answers that one request 503 with Retry-After, and tasks
    # retry (the score chain) or split and redo their batch (consumers).
    # With `autocommit`, a pool of its own whose connections stay in autocommit. Switching the
    # connections of the transactional pool at every checkout and back at every checkin (an
    # isolation level execution option) would cost a round of driver calls on every request.
    isolation = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    engine = create_engine(url, pool_size=5, max_overflow=10, **isolation)
    engine_made(engine)
    if autocommit:
        engine = engine.execution_options(**{AUTOCOMMIT_POOL: True})
    if engine.dialect.driver == "psycopg":  # the shipped driver; its execute() takes `prepare`
        _plan_batch_reads_each_execution(engine)
        _send_lists_in_binary(engine)
    return engine


def _send_lists_in_binary(engine: Engine) -> None:
    # The batch statements pass each column as one array (`unnest`, `= ANY`). psycopg sends a
    # list in text form unless told otherwise, and escapes each element with a regular
    # expression in Python, which makes a batch's lists a real part of a worker's CPU; in
    # binary form they are copied as they are.
    from psycopg.types.array import ListBinaryDumper

    @event.listens_for(engine, "connect")
    def _on_connect(
        dbapi_connection: psycopg.Connection[Any], _record: ConnectionPoolEntry
    ) -> None:
        dbapi_connection.adapters.register_dumper(list, ListBinaryDumper)


# How `among()` renders on PostgreSQL: `column = ANY (%(param)s::TYPE[])`.
BATCH_LOOKUP = " = ANY ("
# The name `among_keys()` and `update_rows()` give the unnested keys: `unnest(...) AS batch_keys`.
BATCH_KEYS = "batch_keys"


def _plan_batch_reads_each_execution(engine: Engine) -> None:
    # psycopg prepares a statement on its 5th use, and PostgreSQL then keeps one generic plan for
    # it until the table's statistics change. Made while a table was still small, the plan of
    # a batch read (`order_no = ANY($1)`: learnings, evaluations, My page rows, deliveries) is a
    # sequential scan, and it stays one as the table grows until ANALYZE comes (never, with
    # autovacuum off). Those statements are sent unprepared, so PostgreSQL plans each execution
    # at the table's size of that moment. The others keep their prepared plans: planning the
    # outbox's write anew would cost PostgreSQL's CPU on every order.
    # The same holds for a batch update joined to its keys (`update_rows`): prepared while
    # My page was new, its UPDATE scanned the whole table for every batch ever after.
    @event.listens_for(engine, "do_execute")
    def _do_execute(
        cursor: psycopg.Cursor[Any], statement: str, parameters: Any, context: ExecutionContext
    ) -> bool | None:
        if BATCH_LOOKUP in statement or BATCH_KEYS in statement:
            cursor.execute(statement, parameters, prepare=False)
            return True
        return None


def _serialize_sqlite_writers(engine: Engine) -> None:
    # Several processes write the same SQLite file. WAL lets readers go on while one writes, and
    # BEGIN IMMEDIATE takes the write lock up front, so a transaction waits (busy timeout)
    # instead of failing when it would have to upgrade a read lock.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The two engines of a process and their session factories, created lazily."""

    def __init__(self, main_url: str, notification_url: str):
        self.main_url = main_url
        self.notification_url = notification_url
        self._engines: dict[str, Engine] = {}
        self._autocommit_engines: dict[str, Engine] = {}  # PostgreSQL only
        self._factories: dict[str, sessionmaker[Session]] = {}
        self._autocommit_factories: dict[str, sessionmaker[Session]] = {}

    def engine(self, bind: str = "main", autocommit: bool = False) -> Engine:
        """The database's engine; with `autocommit`, the one of its autocommit pool where it
        has one (PostgreSQL), else the same."""
        if bind not in self._engines:
            url = self.main_url if bind == "main" else self.notification_url
            engine = self._engines[bind] = make_engine(url)
            self._factories[bind] = sessionmaker(engine, expire_on_commit=False)
            if engine.dialect.name == "postgresql":
                pool = self._autocommit_engines[bind] = make_engine(url, autocommit=True)
                self._autocommit_factories[bind] = sessionmaker(pool, expire_on_commit=False)
        if autocommit:
            return self._autocommit_engines.get(bind, self._engines[bind])
        return self._engines[bind]

    def session(self, bind: str = "main", autocommit: bool = False) -> Session:
        """A session; with `autocommit`, on PostgreSQL, one whose every statement commits on its
        own: no BEGIN and COMMIT round trips (see UnitOfWork.statement_by_statement)."""
        self.engine(bind)
        if autocommit and bind in self._autocommit_factories:
            return self._autocommit_factories[bind]()
        return self._factories[bind]()

    def use_connection(self, bind: str, connection: Connection) -> None:
        """For tests: sessions join `connection`'s transaction through savepoints, so that all
        a test wrote is rolled back at its end."""
        self._engines[bind] = connection.engine
        if (pool := self._autocommit_engines.pop(bind, None)) is not None:
            pool.dispose()  # its sessions would not see the test's transaction
        self._autocommit_factories.pop(bind, None)
        self._factories[bind] = sessionmaker(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )

    def dispose(self) -> None:
        """Drop pooled connections, e.g. in a forked worker child (they belong to the parent)."""
        for engine in (*self._engines.values(), *self._autocommit_engines.values()):
            engine.dispose(close=False)
        self._engines.clear()
        self._autocommit_engines.clear()
        self._factories.clear()
        self._autocommit_factories.clear()


def autocommits(session: Session) -> bool:
    """Whether each statement of the session commits on its own."""
    autocommit: bool = session.get_bind().get_execution_options().get(AUTOCOMMIT_POOL, False)
    return autocommit
