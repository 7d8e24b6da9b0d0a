"""End-to-end tests: real API (gunicorn), relay and worker processes on PostgreSQL and Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import requests

from app.config import Settings
from app.security import Tokens
from tests.conftest import drop_database, fresh_database
from tests.helpers import eventually

E2E_REDIS_URL = os.environ.get("TEST_E2E_REDIS_URL", "redis://127.0.0.1:6379/10")

# The worker layout of the e2e system: the orders and evaluation queues each have their own.
WORKERS = {"orders": "orders", "evaluation": "evaluation", "others": "learning,notification,mypage"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_ready(base_url: str) -> None:
    try:
        assert requests.get(f"{base_url}/health/ready", timeout=5).ok
    except requests.RequestException as exc:  # refused, or too busy starting to answer
        raise AssertionError("API not up yet") from exc


# The embedded default: none of the server settings may leak in (tests/conftest.py sets the
# broker for the other suites).
SERVER_SETTINGS = (
    "DATABASE_URL",
    "NOTIFICATION_DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "ONLINESTUDY_VAR_DIR",
    "JWT_SECRET",
    "JWT_SECRET_FILE",
)


def embedded_env() -> dict[str, str]:
    """This process's environment without the server settings: `onlinestudy run`'s default."""
    return {k: v for k, v in os.environ.items() if k not in SERVER_SETTINGS}


def start_embedded(folder: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    """`onlinestudy run` in `folder`, in its own process group (so Ctrl-C reaches all of it),
    its output in `folder/run.log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "run", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=open(folder / "run.log", "wb"),  # noqa: SIM115 - kept open for the child
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


class Processes:
    """Starts and stops the system's processes; their output goes to files under `logs`."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs = env, logs
        self.running: dict[str, subprocess.Popen] = {}
        self.base_url = ""
        # Signed with the system's JWT_SECRET, as `onlinestudy token --role admin` would.
        self.admin_token = Tokens(Settings.from_env(env)).issue("admin")

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the child
        process = subprocess.Popen(
            [sys.executable, *args],
            env=dict(self.env, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running[name] = process
        return process

    def start_worker(self, name: str) -> subprocess.Popen:
        """One worker per group of WORKERS, so a test can stop one context alone."""
        return self.start(
            f"worker-{name}",
            "-m",
            "app.cli",
            "worker",
            "--queues",
            WORKERS[name],
            "--concurrency",
            "2",
            "--hostname",
            f"e2e-{name}-{os.getpid()}@%h",
        )

    def start_api(self, name: str = "api", **env: str) -> str:
        """gunicorn on a free port, with extra settings if any; returns its base URL."""
        port = free_port()
        self.start(
            name,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "app:create_app()",
            **env,
        )
        base_url = f"http://127.0.0.1:{port}"
        eventually(lambda: assert_ready(base_url), timeout_s=30)
        return base_url

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        process = self.running.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


@pytest.fixture(scope="session")
def e2e_env(tmp_path_factory):
    env = dict(
        os.environ,
        DATABASE_URL=fresh_database("onlinestudy_e2e"),
        NOTIFICATION_DATABASE_URL=fresh_database("onlinestudy_e2e_notification"),
        CELERY_BROKER_URL=E2E_REDIS_URL,
        CELERY_RESULT_BACKEND=E2E_REDIS_URL,
        ONLINESTUDY_VAR_DIR=str(tmp_path_factory.mktemp("e2e-var")),
        REDELIVERY_TIMEOUT_S="2",
        SCORE_SYNC_TIMEOUT_S="2",
        WORKER_HEARTBEAT_S="1",
        JWT_SECRET="e2e-tests-secret-0123456789abcdef",
        LOG_LEVEL="INFO",
    )
    redis.Redis.from_url(E2E_REDIS_URL).flushdb()
    subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], env=env, check=True)
    yield env
    for name in ("DATABASE_URL", "NOTIFICATION_DATABASE_URL"):
        drop_database(env[name])


@pytest.fixture(scope="session")
def system(e2e_env, tmp_path_factory):
    """The API on a free port, the relay and the workers of WORKERS."""
    processes = Processes(e2e_env, tmp_path_factory.mktemp("e2e-logs"))
    try:
        processes.start("relay", "-m", "app.cli", "relay")
        for name in WORKERS:
            processes.start_worker(name)
        processes.base_url = processes.start_api()
        yield processes
    finally:
        processes.stop_all()
