"""Where the test suites find PostgreSQL and Redis (the machine's shared servers by default)."""

from __future__ import annotations

import os

import psycopg

PG_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")

# celeryconfig reads the broker from the environment at import: never the embedded one here.
os.environ.setdefault("CELERY_BROKER_URL", REDIS_URL)
os.environ.setdefault("CELERY_RESULT_BACKEND", REDIS_URL)


# Two test runs at once (a developer's and CI's, say) must not drop each other's databases.
RUN_SUFFIX = f"{os.getpid()}"


def fresh_database(name: str) -> str:
    """Create an empty database for this run (`name` plus the run's suffix); return its URL."""
    name = f"{name}_{RUN_SUFFIX}"
    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG_URL}/{name}"


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
