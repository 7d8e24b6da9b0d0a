"""Settings from the environment and Korean mobile numbers."""

import pytest

from app.config import ConfigError, Settings
from app.shared.phone import normalize_mobile


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
