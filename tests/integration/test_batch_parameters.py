"""The batch statements pass each column as one array parameter (unnest, = ANY). Whatever the
text and the instants in them, the rows arrive as they were: quotes, backslashes, braces,
commas, the word NULL, empty strings, Korean, missing values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from psycopg.adapt import PyFormat
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, select

from app.shared.db.base import UTCDateTime
from app.shared.db.bulk import among, insert_missing, insert_rows, update_rows

TRICKY = ['a"b', "c\\d", "{x,y}", "NULL", "", " 수료 축하드립니다 ", "tab\there", "line\nbreak"]

_table = Table(
    "test_batch_parameters",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(32), unique=True),
    Column("body", Text, nullable=True),
    Column("at", UTCDateTime(), nullable=True),
)


def test_given_awkward_values_when_written_and_read_in_batches_then_they_round_trip(container):
    base = datetime(2026, 11, 26, 8, 30, 15, 123456, tzinfo=UTC)
    rows = [
        {"key": f"k{i}", "body": body, "at": base + timedelta(microseconds=i)}
        for i, body in enumerate(TRICKY)
    ]
    rows.append({"key": "none", "body": None, "at": None})
    with container.main_session() as session:
        _table.create(session.connection())
        ids = dict(insert_rows(session, _table, rows[:3], ("key", "id")))
        insert_missing(session, _table, rows)  # the first three are there: skipped
        update_rows(session, _table, "key", [{"key": "k0", "body": '고침 "2"', "at": base}])
        keys = [row["key"] for row in rows]
        stored = {
            r.key: (r.body, r.at, r.id)
            for r in session.execute(select(_table).where(among(session, _table.c.key, keys)))
        }
        _table.drop(session.connection())

    assert set(stored) == set(keys)
    assert stored["k0"][:2] == ('고침 "2"', base)
    for row in rows[1:]:
        assert stored[row["key"]][:2] == (row["body"], row["at"])
    assert {key: stored[key][2] for key in ids} == ids


def test_given_no_values_then_a_batch_read_finds_nothing(container):
    with container.main_session() as session:
        _table.create(session.connection())
        found = session.execute(select(_table).where(among(session, _table.c.key, []))).all()
        _table.drop(session.connection())
    assert found == []


@pytest.mark.speed
def test_the_batch_arrays_go_to_postgresql_in_binary(container):
    # In text form psycopg escapes every element of a list in Python, for every batch.
    with container.main_session() as session:
        adapters = session.connection().connection.dbapi_connection.adapters
        assert adapters.get_dumper(list, PyFormat.AUTO) is ListBinaryDumper
