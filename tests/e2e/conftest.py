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

from tests.conftest import fresh_database
from tests.helpers import eventually

E2E_REDIS_URL = os.environ.get("TEST_E2E_REDIS_URL", "redis://127.0.0.1:6379/10")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Starts and stops the system's processes; their output goes to files under `logs`."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs = env, logs
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the child
        process = subprocess.Popen(
            [sys.executable, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running[name] = process
        return process

    def start_worker(self, queues: str = "orders,learning,evaluation,notification,mypage"):
        return self.start(
            "worker",
            "-m",
            "app.cli",
            "worker",
            "--queues",
            queues,
            "--concurrency",
            "2",
            "--hostname",
            f"e2e-{os.getpid()}@%h",
        )

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
def e2e_env(tmp_path_factory) -> dict[str, str]:
    var = tmp_path_factory.mktemp("e2e-var")
    env = dict(
        os.environ,
        DATABASE_URL=fresh_database("onlinestudy_e2e"),
        NOTIFICATION_DATABASE_URL=fresh_database("onlinestudy_e2e_notification"),
        CELERY_BROKER_URL=E2E_REDIS_URL,
        CELERY_RESULT_BACKEND=E2E_REDIS_URL,
        ONLINESTUDY_VAR_DIR=str(var),
        REDELIVERY_TIMEOUT_S="2",
        LOG_LEVEL="INFO",
    )
    redis.Redis.from_url(E2E_REDIS_URL).flushdb()
    subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], env=env, check=True)
    return env


@pytest.fixture(scope="session")
def system(e2e_env, tmp_path_factory):
    """API on a free port, the relay and one worker for every queue."""
    processes = Processes(e2e_env, tmp_path_factory.mktemp("e2e-logs"))
    port = free_port()
    processes.start(
        "api", "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2", "app:create_app()"
    )
    processes.start("relay", "-m", "app.cli", "relay")
    processes.start_worker()
    processes.base_url = f"http://127.0.0.1:{port}"

    def api_up():
        try:
            assert requests.get(f"{processes.base_url}/health/ready", timeout=2).ok
        except requests.ConnectionError as exc:
            raise AssertionError("API not up yet") from exc

    eventually(api_up, timeout_s=30)
    yield processes
    processes.stop_all()
