"""Settings from the environment and Korean mobile numbers."""

import os
import subprocess
import sys

import pytest

from app.config import ConfigError, Settings
from app.shared.phone import mask_phones, normalize_mobile


def test_the_embedded_default_needs_no_server(tmp_path):
    settings = Settings.from_env({"ONLINESTUDY_VAR_DIR": str(tmp_path)})
    assert settings.embedded
    assert settings.database_url.startswith("sqlite:///")
    assert settings.notification_database_url != settings.database_url
    assert settings.score_sync_timeout_s == 3.0


def test_postgres_urls_use_the_shipped_driver():
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql://u@h/db", "CELERY_BROKER_URL": "redis://localhost:6379/0"}
    )
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert not settings.embedded


@pytest.mark.parametrize(
    "env, message",
    [
        ({"REDELIVERY_TIMEOUT_S": "soon"}, "REDELIVERY_TIMEOUT_S must be a number"),
        ({"MAX_ATTEMPTS": "0"}, "MAX_ATTEMPTS must be >= 1"),
        ({"SMS_PROVIDER": "carrier-pigeon"}, "SMS_PROVIDER must be one of"),
        ({"SMS_PROVIDER": "http"}, "needs SMS_HTTP_URL"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL must be"),
        ({"CELERY_BROKER_URL": "kafka://x"}, "unsupported scheme"),
    ],
)
def test_a_bad_setting_stops_the_start_with_a_clear_error(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "raw", ["010-1234-5678", "01012345678", "+82 10-1234-5678", "010 1234 5678"]
)
def test_korean_mobile_numbers_are_normalized(raw):
    assert normalize_mobile(raw) == "010-1234-5678"


@pytest.mark.parametrize("raw", ["02-123-4567", "hello", "", "010-12", "+1 202 555 0100"])
def test_anything_else_is_refused(raw):
    with pytest.raises(ValueError):
        normalize_mobile(raw)


@pytest.mark.parametrize(
    "raw, seconds",
    [("", 7 * 86400), ("90", 90), ("2s", 2), ("30m", 1800), ("12h", 43200), ("7d", 604800)],
)
def test_the_deduplication_window_takes_seconds_or_a_unit(raw, seconds):
    assert Settings.from_env({"DEDUP_WINDOW": raw}).dedup_window_s == seconds


@pytest.mark.parametrize("raw", ["0", "-5", "7w", "soon", "d", "1e400"])
def test_a_bad_deduplication_window_stops_the_start_naming_it(raw):
    with pytest.raises(ConfigError, match="DEDUP_WINDOW"):
        Settings.from_env({"DEDUP_WINDOW": raw})


@pytest.mark.parametrize(
    "env, exporters",
    [
        ({}, ()),
        ({"OTEL_TRACES_EXPORTER": "none"}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, ()),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            ("otlp",),
        ),
    ],
)
def test_tracing_is_off_unless_an_exporter_is_named(env, exporters):
    assert Settings.from_env(env).traces_exporters == exporters


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"OTEL_TRACES_EXPORTER": "jaegr"},
            "OTEL_TRACES_EXPORTER names no installed exporter: jaegr",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL must be http/protobuf",
        ),
    ],
)
def test_a_bad_tracing_setting_stops_the_start_naming_it(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "env",
    [
        {"DATABASE_URL": "mysql://onlinestudy:s3cret-pw@db:3306/onlinestudy"},
        {"DATABASE_URL": "postgresql://onlinestudy:s3cret-pw@db:port/onlinestudy"},
        {"NOTIFICATION_DATABASE_URL": "postgresql:/onlinestudy:s3cret-pw@db/x"},
        {"CELERY_BROKER_URL": "kafka://onlinestudy:s3cret-pw@broker:9092"},
        {"RATE_LIMIT_STORAGE_URL": "mongodb://onlinestudy:s3cret-pw@mongo/limits"},
    ],
)
def test_a_bad_url_is_named_without_its_password(env):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert "s3cret-pw" not in str(refused.value)
    assert next(iter(env)) in str(refused.value)


def test_a_configuration_error_at_the_command_line_shows_no_password(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "ONLINESTUDY_VAR_DIR": str(tmp_path),
        "DATABASE_URL": "postgresql://onlinestudy:s3cret-pw@db:port/onlinestudy",
    }
    run = subprocess.run(
        [sys.executable, "-m", "app.cli", "db", "upgrade"], env=env, capture_output=True, text=True
    )
    assert run.returncode != 0 and "configuration error: DATABASE_URL" in run.stderr
    assert "s3cret-pw" not in run.stdout + run.stderr
    assert "***" in run.stderr


def test_urls_with_passwords_can_come_from_mounted_files(tmp_path):
    for name, url in (
        ("DATABASE_URL", "postgresql://u:pw@db/main"),
        ("NOTIFICATION_DATABASE_URL", "postgresql://u:pw@db/notification"),
        ("CELERY_BROKER_URL", "amqp://u:pw@rabbit:5672//"),
        ("CELERY_RESULT_BACKEND", "redis://:pw@redis:6379/1"),
    ):
        (tmp_path / name).write_text(url + "\n")
    settings = Settings.from_env(
        {f"{name}_FILE": str(tmp_path / name) for name in os.listdir(tmp_path)}
    )
    assert settings.database_url == "postgresql+psycopg://u:pw@db/main"
    assert settings.notification_database_url.endswith("@db/notification")
    assert settings.broker_url == "amqp://u:pw@rabbit:5672//"
    assert settings.result_backend == "redis://:pw@redis:6379/1"
    assert "pw@" not in repr(settings)


@pytest.mark.parametrize(
    "env, storage",
    [
        ({}, "database"),  # embedded: the SQLite file every process of `onlinestudy run` shares
        ({"CELERY_BROKER_URL": "redis://r:6379/0"}, "redis://r:6379/0"),
        (
            {"CELERY_BROKER_URL": "amqp://mq//", "CELERY_RESULT_BACKEND": "redis://r:6379/1"},
            "redis://r:6379/1",
        ),
        (
            {"CELERY_BROKER_URL": "amqp://mq//", "CELERY_RESULT_BACKEND": "db+postgresql://x"},
            "database",
        ),
        ({"RATE_LIMIT_STORAGE_URL": "memory://"}, "memory://"),
        ({"RATE_LIMIT_STORAGE_URL": "DATABASE"}, "database"),
    ],
)
def test_the_rate_limits_count_where_every_api_process_counts(env, storage):
    assert Settings.from_env(env).rate_limit_storage_url == storage


@pytest.mark.parametrize(
    "line, masked",
    [
        ("GET /sms?phone=010-1234-5678 HTTP/1.1", "GET /sms?phone=010-****-5678 HTTP/1.1"),
        ("GET /mypage/01012345678 HTTP/1.1", "GET /mypage/010****5678 HTTP/1.1"),
        ("phone=010%2D1234%2D5678&page=1", "phone=010%2D****%2D5678&page=1"),
        ("q=010+1234+5678", "q=010+****+5678"),
        ("to +82 10-1234-5678.", "to +82 10-****-5678."),
        ("phone=%2B82-10-1234-5678", "phone=%2B82-10-****-5678"),
        ("order O0101234567890, 2026-12-01", "order O0101234567890, 2026-12-01"),
    ],
)
def test_phone_numbers_are_masked_wherever_they_are_in_a_log_line(line, masked):
    assert mask_phones(line) == masked
