"""The app's batch reads are planned at each execution: a table that grew since the read was
first run, with no ANALYZE since (autovacuum off, or not yet come), keeps its index."""

from __future__ import annotations

from sqlalchemy import ARRAY, Column, MetaData, String, Table, any_, bindparam, select

from app.shared.db import make_engine

# Shaped like the learnings, read by order number in batches as a consumer does.
learnings = Table("grows", MetaData(), Column("order_no", String(32)))
BATCH_READ = select(learnings.c.order_no).where(
    learnings.c.order_no == any_(bindparam("order_nos", type_=ARRAY(String(32))))
)


def scans(conn) -> tuple[int, int]:
    """(sequential, index) scans of the table in this transaction so far."""
    return tuple(
        conn.exec_driver_sql(
            "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'grows'"
        ).one()
    )


def test_given_a_table_that_grew_after_its_batch_read_was_prepared_then_the_read_uses_its_index(
    it_settings,
):
    engine = make_engine(it_settings.database_url)
    try:
        with engine.connect() as conn:  # one transaction, rolled back: nothing analyzes the table
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
            seq_before, idx_before = scans(conn)

            found = conn.execute(BATCH_READ, {"order_nos": batch}).scalars().all()

            seq_after, idx_after = scans(conn)
        assert sorted(found) == sorted(batch[1:])  # O1 .. O9
        assert seq_after == seq_before  # not one more sequential scan
        assert idx_after > idx_before
    finally:
        engine.dispose()
