"""The app's batch reads and updates keep their index on a table that grew since they were
first run, with no ANALYZE since (autovacuum off, or not yet come): they are planned at each
execution, and a key of two columns is looked up by both."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from sqlalchemy import ARRAY, Column, Integer, MetaData, String, Table, any_, bindparam, select
from sqlalchemy.orm import Session

from app.shared.db.bulk import among_keys, update_rows
from app.shared.db.engine import make_engine

pytestmark = pytest.mark.speed

# Shaped like the learnings, read by order number in batches as a consumer does.
learnings = Table("grows", MetaData(), Column("order_no", String(32)))
BATCH_READ = select(learnings.c.order_no).where(
    learnings.c.order_no == any_(bindparam("order_nos", type_=ARRAY(String(32))))
)


# Shaped like the SMS messages: unique by (event, phone), read by both in batches.
messages = Table(
    "grows",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("event_id", String(36)),
    Column("phone", String(20)),
    Column("status", String(16)),
)


@pytest.fixture
def conn(it_settings):
    """A connection of the engine the system makes, in one transaction that is rolled back:
    nothing analyzes the table the test creates."""
    engine = make_engine(it_settings.database_url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def scans(conn) -> tuple[int, int]:
    """(sequential, index) scans of the table in this transaction so far."""
    return tuple(
        conn.exec_driver_sql(
            "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'grows'"
        ).one()
    )


@contextmanager
def only_index_scans(conn):
    seq_before, idx_before = scans(conn)
    yield
    seq_after, idx_after = scans(conn)
    assert seq_after == seq_before  # not one more sequential scan
    assert idx_after > idx_before


def create_messages(conn) -> None:
    conn.exec_driver_sql(
        "CREATE TABLE grows (id serial PRIMARY KEY, event_id varchar(36), phone varchar(20), "
        "status varchar(16), message text, UNIQUE (event_id, phone))"
    )


def grow_messages(conn, rows: int = 50000) -> None:
    conn.exec_driver_sql(
        "INSERT INTO grows (event_id, phone, status, message) SELECT 'e' || g, '010-1234-5678', "
        f"'SENT', repeat('m', 60) FROM generate_series(1, {rows}) AS g"
    )


def test_given_a_table_that_grew_after_its_batch_read_was_prepared_then_the_read_uses_its_index(
    conn,
):
    conn.exec_driver_sql(
        "CREATE TABLE grows (id serial PRIMARY KEY, order_no varchar(32) UNIQUE, "
        "course_no varchar(32), title varchar(200), phone varchar(20), manager_id int, "
        "status varchar(16), started_at timestamptz, updated_at timestamptz)"
    )
    batch = [f"O{n}" for n in range(10)]
    for _ in range(20):  # prepared by psycopg on the 5th, planned while the table is new
        conn.execute(BATCH_READ, {"order_nos": batch}).all()
    conn.exec_driver_sql(
        "INSERT INTO grows (order_no, course_no, title, phone, manager_id, status, "
        "started_at, updated_at) SELECT 'O' || g, 'C1', repeat('t', 30), "
        "'010-1234-5678', 1, 'STARTED', now(), now() FROM generate_series(1, 50000) AS g"
    )

    with only_index_scans(conn):
        found = conn.execute(BATCH_READ, {"order_nos": batch}).scalars().all()

    assert sorted(found) == sorted(batch[1:])  # O1 .. O9


def test_given_a_table_that_grew_after_a_batch_update_was_first_run_then_it_uses_its_index(
    conn,
):
    session = Session(bind=conn)
    create_messages(conn)
    conn.exec_driver_sql("INSERT INTO grows (event_id, phone, status) VALUES ('e0', 'p', 'X')")
    for _ in range(20):  # psycopg would prepare it on the 5th, while the table is new
        update_rows(session, messages, "id", [{"id": 1, "status": "PENDING"}])
    grow_messages(conn)

    with only_index_scans(conn):
        update_rows(session, messages, "id", [{"id": n, "status": "FAILED"} for n in (2, 3)])

    failed = conn.exec_driver_sql("SELECT id FROM grows WHERE status = 'FAILED'")
    assert sorted(failed.scalars()) == [2, 3]


def test_given_a_grown_table_unique_by_two_columns_then_a_batch_read_by_both_uses_the_index(
    conn,
):
    session = Session(bind=conn)
    create_messages(conn)
    grow_messages(conn)
    keys = [(f"e{n}", "010-1234-5678") for n in range(1, 31)] + [("e1", "other")]
    read = select(messages.c.id).where(
        among_keys(session, (messages.c.event_id, messages.c.phone), keys)
    )

    with only_index_scans(conn):
        found = session.execute(read).scalars().all()

    assert sorted(found) == list(range(1, 31))
