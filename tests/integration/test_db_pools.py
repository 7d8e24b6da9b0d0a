"""Statement-by-statement sessions use a pool whose connections stay in autocommit: no
connection is switched at checkout and back at checkin (SQLAlchemy's isolation level
execution option did that, work repeated on every request)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from app.shared.db.engine import Database, autocommits

pytestmark = pytest.mark.speed


def test_given_both_kinds_of_session_then_no_connection_changes_its_isolation(
    it_settings, monkeypatch
):
    db = Database(it_settings.database_url, it_settings.notification_database_url)
    switched = []
    try:
        for engine in (db.engine("main"), db.engine("main", autocommit=True)):
            real = engine.dialect.set_isolation_level

            def counting(dbapi_connection, level, real=real):
                switched.append(level)
                return real(dbapi_connection, level)

            monkeypatch.setattr(engine.dialect, "set_isolation_level", counting)
        for round_ in range(4):
            if round_ == 1:
                switched.clear()  # a new connection of the autocommit pool is set up once
            with db.session(autocommit=True) as session:
                assert autocommits(session)
                session.execute(text("SELECT 1"))
                # Each statement commits on its own: nothing is left open.
                assert session.connection().connection.dbapi_connection.autocommit
            with db.session() as session:
                assert not autocommits(session)
                session.execute(text("SELECT 1"))
                assert not session.connection().connection.dbapi_connection.autocommit
                session.rollback()
        assert switched == []
    finally:
        db.dispose()
