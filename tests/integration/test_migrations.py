"""The migrations build exactly the schema the models describe (PostgreSQL, and SQLite)."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from app.config import Settings
from app.migrate import upgrade
from app.shared.db.base import MainBase, NotificationBase

METADATA = {"main": MainBase.metadata, "notification": NotificationBase.metadata}


def differences(engine, bind: str) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": False,
                # Alembic's own version table is no model's.
                "include_name": lambda name, kind, _parent: (
                    not (kind == "table" and name.startswith("alembic_version"))
                ),
            },
        )
        return compare_metadata(context, METADATA[bind])


@pytest.mark.parametrize("bind", ["main", "notification"])
def test_the_migrated_postgresql_schema_is_the_models_schema(engines, bind):
    assert differences(engines[bind], bind) == []


def test_the_migrated_sqlite_schema_is_the_models_schema(tmp_path):
    settings = Settings.from_env({"ONLINESTUDY_VAR_DIR": str(tmp_path)})
    upgrade(settings)
    for bind, url in (
        ("main", settings.database_url),
        ("notification", settings.notification_database_url),
    ):
        engine = create_engine(url)
        try:
            assert differences(engine, bind) == [], bind
        finally:
            engine.dispose()


def test_rebuilding_the_orders_table_on_sqlite_keeps_the_live_order_index_partial(tmp_path):
    # SQLite changes a constraint by copying the table (batch mode): a phone may still order a
    # course again once its order is no longer live.
    settings = Settings.from_env({"ONLINESTUDY_VAR_DIR": str(tmp_path)})
    upgrade(settings)
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            sql = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'uq_orders_orders_live'"
            ).scalar_one()
    finally:
        engine.dispose()
    assert sql.endswith("WHERE status = 'ORDERED' OR status = 'WAITLISTED'"), sql
