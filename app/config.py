"""Settings, read once from the environment; a bad value stops the start with a clear error."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class ConfigError(ValueError):
    """A setting is missing or malformed; the process must not start."""


# The issuer (`iss`) of the tokens `onlinestudy token` signs, and the default JWT_ISSUER.
ISSUER = "onlinestudy"


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(env: dict[str, str], name: str, default: float) -> float:
    """Seconds, from a plain number of seconds or a number with a unit: 90, 30m, 12h, 7d."""
    raw = (env.get(name) or "").strip()
    if raw == "":
        return default
    number, unit = raw[:-1], raw[-1]
    if unit.isdigit() or unit == ".":
        number, unit = raw, ""
    try:
        value = float(number) * _DURATION_UNITS[unit.lower()]
    except (KeyError, ValueError):
        raise ConfigError(
            f"{name} must be seconds or a duration such as 30m, 12h or 7d, got {raw!r}"
        ) from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive duration, got {raw!r}")
    return value


def describe_duration(seconds: float) -> str:
    """A duration in the largest unit that divides it: "7 days", "30 minutes", "2 seconds"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


def _choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the API, the relay and the workers need; see the README's settings table."""

    var_dir: Path
    # URLs with their passwords: kept out of repr() (see redact_url).
    database_url: str = field(repr=False)
    notification_database_url: str = field(repr=False)
    broker_url: str = field(repr=False)
    result_backend: str = field(repr=False)
    redelivery_timeout_s: float = 30.0
    max_attempts: int = 5
    relay_poll_interval_s: float = 0.05
    relay_batch_max: int = 50
    relay_inflight_tasks: int = 1
    relay_inflight_expire_s: float = 2.0
    score_sync_timeout_s: float = 3.0
    # SIGTERM to the API: not ready at once, still serving this long, then gunicorn stops.
    shutdown_drain_s: float = 5.0
    learning_backlog_limit: int = 10_000
    sms_provider: str = "console"
    sms_http_url: str = ""
    sms_http_timeout_s: float = 3.0
    # SMS_PROVIDER=solapi: the API key and secret, the sender number registered with SOLAPI,
    # the subject of an LMS, where the API is.
    solapi_api_key: str | None = field(default=None, repr=False)
    solapi_api_secret: str | None = field(default=None, repr=False)
    sms_sender_number: str = ""
    sms_lms_subject: str = "온라인스터디"
    solapi_base_url: str = "https://api.solapi.com"
    log_level: str = "INFO"
    worker_heartbeat_s: float = 10.0
    jwt_algorithm: str = "HS256"
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key: str | None = field(default=None, repr=False)
    jwt_jwks_url: str = ""
    jwt_jwks_ttl_s: float = 300.0
    # The `iss` every token must carry; tokens of this system's own `onlinestudy token` carry
    # "onlinestudy".
    jwt_issuer: str = ISSUER
    # The `aud` values accepted (a token must name one); none: tokens naming any are refused.
    jwt_audience: tuple[str, ...] = ()
    jwt_max_ttl_s: float = 86400.0
    metrics_token: str | None = field(default=None, repr=False)
    rate_limit_orders: str = "30/minute"
    rate_limit_cancels: str = "30/minute"
    rate_limit_anonymous: str = "60/minute"
    # Where every API process counts: a limits storage URL, or DATABASE (the main database).
    rate_limit_storage_url: str = field(default="memory://", repr=False)
    cors_origins: tuple[str, ...] = ()
    hsts: bool = False
    dedup_window_s: float = 7 * 86400.0
    prune_interval_s: float = 60.0
    # OTEL_TRACES_EXPORTER's exporters; none: tracing off (app.tracing).
    traces_exporters: tuple[str, ...] = ()

    @property
    def heartbeats_dir(self) -> Path:
        """Where workers leave the liveness heartbeats `onlinestudy health worker` reads."""
        return self.var_dir / "heartbeats"

    @property
    def relay_heartbeat(self) -> Path:
        """The file the relay touches after each pass (`onlinestudy health relay`)."""
        return self.var_dir / "relay.heartbeat"

    def heartbeat_files(self) -> list[Path]:
        """The relay's and each worker's heartbeat here, those that exist."""
        workers = (
            sorted(self.heartbeats_dir.glob("worker-*")) if self.heartbeats_dir.exists() else []
        )
        relay = [self.relay_heartbeat] if self.relay_heartbeat.exists() else []
        return relay + workers

    @property
    def embedded(self) -> bool:
        """True when the broker needs no server (the default run mode)."""
        return self.broker_url.startswith("filesystem://")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        var_dir = Path(env.get("ONLINESTUDY_VAR_DIR") or Path.cwd() / "var").resolve()
        # URLs carry passwords: each may come from a mounted file too (NAME_FILE).
        database_url = secret_setting(env, "DATABASE_URL") or (
            f"sqlite:///{var_dir / 'onlinestudy.sqlite'}"
        )
        notification_url = secret_setting(env, "NOTIFICATION_DATABASE_URL") or (
            f"sqlite:///{var_dir / 'notification.sqlite'}"
        )
        broker_url = secret_setting(env, "CELERY_BROKER_URL") or "filesystem://"
        result_backend = secret_setting(env, "CELERY_RESULT_BACKEND") or (
            f"db+sqlite:///{var_dir / 'celery-results.sqlite'}"
        )
        for name, url in (
            ("DATABASE_URL", database_url),
            ("NOTIFICATION_DATABASE_URL", notification_url),
        ):
            _database_url(name, url)
        if not broker_url.startswith(
            ("filesystem://", "redis://", "rediss://", "amqp://", "pyamqp://")
        ):
            raise ConfigError(
                f"CELERY_BROKER_URL has an unsupported scheme: {redact_url(broker_url)!r}"
            )
        jwt_algorithm = _choice(env, "JWT_ALGORITHM", "HS256", ("HS256", "RS256"))
        jwt_issuer = env.get("JWT_ISSUER", "").strip()
        if not jwt_issuer and jwt_algorithm == "RS256":
            raise ConfigError(
                "JWT_ALGORITHM=RS256 needs JWT_ISSUER: the `iss` of your identity provider's "
                "tokens (e.g. https://idp.example.com/realms/onlinestudy)"
            )
        sms_provider = _choice(env, "SMS_PROVIDER", "console", ("console", "http", "solapi"))
        sms_http_url = env.get("SMS_HTTP_URL", "")
        if sms_provider == "http" and not sms_http_url.startswith(("http://", "https://")):
            raise ConfigError("SMS_PROVIDER=http needs SMS_HTTP_URL (an http:// or https:// URL)")
        solapi = _solapi(env, sms_provider == "solapi")
        return cls(
            var_dir=var_dir,
            database_url=_psycopg(database_url),
            notification_database_url=_psycopg(notification_url),
            broker_url=broker_url,
            result_backend=result_backend,
            redelivery_timeout_s=_float(env, "REDELIVERY_TIMEOUT_S", 30.0, minimum=0.5),
            max_attempts=_int(env, "MAX_ATTEMPTS", 5, minimum=1),
            relay_poll_interval_s=_float(env, "RELAY_POLL_INTERVAL_S", 0.05, minimum=0.001),
            relay_batch_max=_int(env, "RELAY_BATCH_MAX", 50, minimum=1),
            relay_inflight_tasks=_int(env, "RELAY_INFLIGHT_TASKS", 1, minimum=1),
            relay_inflight_expire_s=_float(env, "RELAY_INFLIGHT_EXPIRE_S", 2.0, minimum=0.1),
            score_sync_timeout_s=_float(env, "SCORE_SYNC_TIMEOUT_S", 3.0, minimum=0.1),
            shutdown_drain_s=_float(env, "SHUTDOWN_DRAIN_S", 5.0),
            learning_backlog_limit=_int(env, "LEARNING_BACKLOG_LIMIT", 10_000, minimum=1),
            sms_provider=sms_provider,
            sms_http_url=sms_http_url,
            sms_http_timeout_s=_float(env, "SMS_HTTP_TIMEOUT_S", 3.0, minimum=0.1),
            solapi_api_key=solapi.api_key,
            solapi_api_secret=solapi.api_secret,
            sms_sender_number=solapi.sender_number,
            sms_lms_subject=solapi.lms_subject,
            solapi_base_url=solapi.base_url,
            log_level=_choice(env, "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            worker_heartbeat_s=_float(env, "WORKER_HEARTBEAT_S", 10.0, minimum=0.1),
            jwt_algorithm=jwt_algorithm,
            jwt_secret=secret_setting(env, "JWT_SECRET"),
            jwt_public_key=secret_setting(env, "JWT_PUBLIC_KEY"),
            jwt_jwks_url=_jwks_url(env),
            jwt_jwks_ttl_s=_duration(env, "JWT_JWKS_TTL", 300.0),
            jwt_issuer=jwt_issuer or ISSUER,
            jwt_audience=tuple(
                a.strip() for a in env.get("JWT_AUDIENCE", "").split(",") if a.strip()
            ),
            jwt_max_ttl_s=_duration(env, "JWT_MAX_TTL", 86400.0),
            metrics_token=secret_setting(env, "METRICS_TOKEN"),
            rate_limit_orders=_rate(env, "RATE_LIMIT_ORDERS", "30/minute"),
            rate_limit_cancels=_rate(env, "RATE_LIMIT_CANCELS", "30/minute"),
            rate_limit_anonymous=_rate(env, "RATE_LIMIT_ANONYMOUS", "60/minute"),
            rate_limit_storage_url=_rate_limit_storage(env, broker_url, result_backend),
            cors_origins=tuple(
                o.strip() for o in env.get("CORS_ORIGINS", "").split(",") if o.strip()
            ),
            hsts=_choice(env, "HSTS", "false", ("true", "false")) == "true",
            dedup_window_s=_duration(env, "DEDUP_WINDOW", 7 * 86400.0),
            prune_interval_s=_float(env, "PRUNE_INTERVAL_S", 60.0, minimum=0.1),
            traces_exporters=_traces_exporters(env),
        )


# A Korean sender number: a landline or mobile number (0 and 9 to 11 digits) or a
# representative number (15xx-xxxx to 19xx-xxxx).
_SENDER_NUMBER = re.compile(r"^(0\d{8,10}|1[5-9]\d{6})$")


@dataclass(frozen=True)
class _Solapi:
    api_key: str | None
    api_secret: str | None
    sender_number: str
    lms_subject: str
    base_url: str


def _solapi(env: dict[str, str], chosen: bool) -> _Solapi:
    """SMS_PROVIDER=solapi's settings, each required then (the key and the secret may come
    from files, as the other secrets)."""
    values = _Solapi(
        api_key=secret_setting(env, "SOLAPI_API_KEY"),
        api_secret=secret_setting(env, "SOLAPI_API_SECRET"),
        sender_number=env.get("SMS_SENDER_NUMBER", "").strip(),
        lms_subject=env.get("SMS_LMS_SUBJECT") or "온라인스터디",
        base_url=env.get("SOLAPI_BASE_URL") or "https://api.solapi.com",
    )
    if not chosen:
        return values
    for name, value in (
        ("SOLAPI_API_KEY", values.api_key),
        ("SOLAPI_API_SECRET", values.api_secret),
    ):
        if not value:
            raise ConfigError(f"SMS_PROVIDER=solapi needs {name} (or {name}_FILE)")
    if not _SENDER_NUMBER.match(values.sender_number.replace("-", "")):
        raise ConfigError(
            "SMS_PROVIDER=solapi needs SMS_SENDER_NUMBER, the sender number registered with "
            f"SOLAPI (e.g. 02-1234-5678 or 1588-1234), got {values.sender_number!r}"
        )
    try:
        subject_bytes = len(values.lms_subject.encode("euc-kr"))
    except UnicodeEncodeError:
        subject_bytes = 41  # an LMS subject is EUC-KR too
    if subject_bytes > 40:
        raise ConfigError(
            f"SMS_LMS_SUBJECT must be at most 40 bytes of EUC-KR, got {values.lms_subject!r}"
        )
    if not values.base_url.startswith(("http://", "https://")):
        raise ConfigError("SOLAPI_BASE_URL must be an http:// or https:// URL")
    return values


# What .env.example and the example Kubernetes Secrets hold in place of every secret.
PLACEHOLDER = "change-me"


def secret_setting(env: dict[str, str], name: str) -> str | None:
    """A secret from NAME, or from the file NAME_FILE names (a mounted Kubernetes secret).
    The examples' placeholders are refused: a copied example must not run with a known key."""
    value = env.get(name)
    if not value:
        path = env.get(f"{name}_FILE")
        if not path:
            return None
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None
    if PLACEHOLDER in value.lower():
        raise ConfigError(
            f"{name} still holds the example's placeholder ({PLACEHOLDER}...): "
            "set a secret of your own"
        )
    return value or None


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Not even a URL to SQLAlchemy: whatever stands between a user name and an @.
        return re.sub(r"^([^:]+:/*[^/:@]*):[^@]*@", r"\1:***@", url)


def _database_url(name: str, url: str) -> None:
    if not url.startswith(("sqlite", "postgresql")):
        raise ConfigError(
            f"{name} must be a sqlite:// or postgresql:// URL, got {redact_url(url)!r}"
        )
    try:
        make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(f"{name} is not a valid URL: {redact_url(url)!r}") from None


def _jwks_url(env: dict[str, str]) -> str:
    url = env.get("JWT_JWKS_URL", "").strip()
    if url and not url.startswith(("https://", "http://")):
        raise ConfigError(f"JWT_JWKS_URL must be an https:// URL, got {url!r}")
    return url


# RATE_LIMIT_STORAGE_URL's value for the main database (DATABASE_URL).
DATABASE_STORAGE = "database"
_REDIS = ("redis://", "rediss://")


def _rate_limit_storage(env: dict[str, str], broker_url: str, result_backend: str) -> str:
    """Where the API processes count requests. The limits hold only if every process counts in
    one place: the broker's Redis, else the result backend's (RabbitMQ mode), else the main
    database (the embedded mode's SQLite file is shared by the processes of `onlinestudy run`).
    """
    value = secret_setting(env, "RATE_LIMIT_STORAGE_URL")
    if not value:
        for url in (broker_url, result_backend):
            if url.startswith(_REDIS):
                return url
        return DATABASE_STORAGE
    if value.lower() == DATABASE_STORAGE:
        return DATABASE_STORAGE
    if not value.startswith((*_REDIS, "redis+sentinel://", "redis+cluster://", "memory://")):
        raise ConfigError(
            "RATE_LIMIT_STORAGE_URL must be `database`, a redis:// URL or memory://, "
            f"got {redact_url(value)!r}"
        )
    return value


# The exporters shipped; another installed package may register more under this group.
_EXPORTERS = ("otlp", "console")
_EXPORTER_GROUP = "opentelemetry_traces_exporter"


def _traces_exporters(env: dict[str, str]) -> tuple[str, ...]:
    """OTEL_TRACES_EXPORTER's names, none unless set: tracing is off by default (the
    OpenTelemetry SDK's own default would be otlp). OTEL_SDK_DISABLED=true turns it off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    raw = env.get("OTEL_TRACES_EXPORTER", "")
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip() not in ("", "none")))
    unknown = [n for n in names if n not in _EXPORTERS]
    if unknown:
        from importlib.metadata import entry_points

        registered = {ep.name for ep in entry_points(group=_EXPORTER_GROUP)}
        unknown = [n for n in unknown if n not in registered]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER names no installed exporter: {', '.join(unknown)} "
            f"(otlp, console or none)"
        )
    if "otlp" in names:
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        )
        if protocol != "http/protobuf":
            name = (
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
                if env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                else "OTEL_EXPORTER_OTLP_PROTOCOL"
            )
            raise ConfigError(f"{name} must be http/protobuf (the one shipped), got {protocol!r}")
    return names


def _rate(env: dict[str, str], name: str, default: str) -> str:
    from limits import parse_many

    value = env.get(name) or default
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(f"{name} must be a rate such as 30/minute, got {value!r}") from None
    return value


def _psycopg(url: str) -> str:
    # psycopg 3 is the driver we ship; plain postgresql:// would ask SQLAlchemy for psycopg2.
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url
