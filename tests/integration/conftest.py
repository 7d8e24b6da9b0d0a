"""Integration tests: the real PostgreSQL, one rolled-back transaction per test."""

from __future__ import annotations

import pytest

from app import create_app
from app.bootstrap import bootstrap
from app.config import Settings
from app.migrate import upgrade
from app.shared.db.engine import make_engine
from tests.conftest import REDIS_URL, drop_database, fresh_database
from tests.helpers import with_token
from tests.unit.fakes import FakeCelery, FakeSender


def _settings(name: str, var_dir) -> Settings:
    settings = Settings.from_env(
        {
            "DATABASE_URL": fresh_database(name),
            "NOTIFICATION_DATABASE_URL": fresh_database(f"{name}_notification"),
            "CELERY_BROKER_URL": REDIS_URL,
            "CELERY_RESULT_BACKEND": REDIS_URL,
            "ONLINESTUDY_VAR_DIR": str(var_dir),
            "MAX_ATTEMPTS": "3",
            "JWT_SECRET": "integration-tests-secret-0123456789abcdef-0123456789abcdef-0123",
            "RATE_LIMIT_STORAGE_URL": "memory://",
        }
    )
    upgrade(settings)
    return settings


def _drop(settings: Settings) -> None:
    for url in (settings.database_url, settings.notification_database_url):
        drop_database(url)


@pytest.fixture(scope="session")
def it_settings(tmp_path_factory):
    settings = _settings("onlinestudy_it", tmp_path_factory.mktemp("var"))
    yield settings
    _drop(settings)


@pytest.fixture(scope="session")
def committing_settings(tmp_path_factory):
    """A database of its own for tests whose writers really commit (its data stays)."""
    settings = _settings("onlinestudy_it_commits", tmp_path_factory.mktemp("var"))
    yield settings
    _drop(settings)


@pytest.fixture(scope="session")
def engines(it_settings):
    # The engines the system makes (pool, statement hooks, parameter formats), not bare ones.
    made = {
        "main": make_engine(it_settings.database_url),
        "notification": make_engine(it_settings.notification_database_url),
    }
    yield made
    for engine in made.values():
        engine.dispose()


@pytest.fixture
def container(it_settings, engines):
    """A container whose sessions all join one transaction per database, rolled back after."""
    c = bootstrap(it_settings, sms_sender=FakeSender())
    connections = {}
    for bind, engine in engines.items():
        connection = engine.connect()
        connections[bind] = (connection, connection.begin())
        c.db.use_connection(bind, connection)
    yield c
    for connection, transaction in connections.values():
        transaction.rollback()
        connection.close()


@pytest.fixture
def client_with(container):
    """client_with(): a new admin's client of an app built on the container as it is now, for
    a test that has just swapped one of its adapters (the score chain, say)."""

    def make():
        app = create_app(container)
        return with_token(app.test_client(), container.tokens.issue("admin"))

    return make


@pytest.fixture
def client(client_with):
    """An admin's client (most tests are about behaviour, not access)."""
    return client_with()


@pytest.fixture
def client_as(client, container):
    """client_as("student", phone=...) / ("manager", manager_id=...): another role's client."""

    def make(role: str, **claims):
        return with_token(client.application.test_client(), container.tokens.issue(role, **claims))

    return make


@pytest.fixture
def fake_celery():
    return FakeCelery()


@pytest.fixture
def committing_container(committing_settings):
    """A container whose sessions really commit, for tests of concurrent writers."""
    c = bootstrap(committing_settings, sms_sender=FakeSender())
    yield c
    c.db.dispose()
