"""Alembic for both databases: `migrations/main` (DATABASE_URL), `migrations/notification`."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from sqlalchemy import text

from app.config import Settings

BINDS = ("main", "notification")


def migrations_dir() -> Path:
    """Beside the source tree (a checkout), else in the working directory (an installed image)."""
    for candidate in (
        Path(__file__).resolve().parent.parent / "migrations",
        Path.cwd() / "migrations",
    ):
        if (candidate / "main" / "env.py").exists():
            return candidate
    raise FileNotFoundError(
        "no migrations/ folder beside the app package or in the working directory"
    )


def alembic_config(settings: Settings, bind: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir() / bind))
    url = settings.database_url if bind == "main" else settings.notification_database_url
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["bind"] = bind
    return config


def upgrade(settings: Settings) -> None:
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    for bind in BINDS:
        command.upgrade(alembic_config(settings, bind), "head")


def run_env(context: EnvironmentContext, bind: str) -> None:
    """The body of both env.py files (online mode only: we always have a database)."""
    from app import models  # noqa: F401
    from app.shared.db.base import MainBase, NotificationBase
    from app.shared.db.engine import make_engine

    metadata = MainBase.metadata if bind == "main" else NotificationBase.metadata
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None, "alembic_config() always sets sqlalchemy.url"
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=f"alembic_version_{bind}",  # both may share one database
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def create_index_concurrently(
    name: str, table: str, columns: list[str], where: str | None = None, unique: bool = False
) -> None:
    """In a migration: CREATE INDEX, CONCURRENTLY on PostgreSQL, where the tables it indexes
    (the outbox's) must take writes meanwhile; partial with a `where` SQL predicate."""
    from alembic import op

    predicate = text(where) if where is not None else None
    with _outside_a_transaction(op):
        op.create_index(
            name,
            table,
            columns,
            unique=unique,
            postgresql_where=predicate,
            sqlite_where=predicate,
            **_concurrently(op),
        )


def drop_index_concurrently(name: str, table: str) -> None:
    from alembic import op

    with _outside_a_transaction(op):
        op.drop_index(name, table, **_concurrently(op))


def on_postgresql() -> bool:
    """In a migration: whether it runs on PostgreSQL."""
    from alembic import op

    return _postgresql(op)


def _postgresql(op: Any) -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def _concurrently(op: Any) -> dict[str, Any]:
    return {"postgresql_concurrently": True} if _postgresql(op) else {}


def _outside_a_transaction(op: Any) -> AbstractContextManager[None]:
    # CREATE INDEX CONCURRENTLY refuses to run inside a transaction block.
    return op.get_context().autocommit_block() if _postgresql(op) else contextlib.nullcontext()
