"""What operators rely on: worker liveness that proves consumption, and metrics of the fleet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import requests

from tests.helpers import eventually


def health(system, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "health", *args],
        env=system.env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_worker_that_stops_consuming_fails_its_liveness_check_and_recovers(system):
    eventually(lambda: _ok(health(system, "worker", "--max-age", "5")), timeout_s=30)
    assert health(system, "relay", "--max-age", "10").returncode == 0
    stalled = system.running["worker-evaluation"]
    os.killpg(stalled.pid, signal.SIGSTOP)  # alive to the kernel, consuming nothing
    try:

        def detected():
            result = health(system, "worker", "--max-age", "5")
            assert result.returncode != 0, result.stdout
            assert "last heartbeat" in result.stderr
            return result

        result = eventually(detected, timeout_s=30)
        assert "limit 5s" in result.stderr
    finally:
        os.killpg(stalled.pid, signal.SIGCONT)
    eventually(lambda: _ok(health(system, "worker", "--max-age", "5")), timeout_s=30)


def test_the_api_metrics_show_the_pipeline(system):
    text = requests.get(f"{system.base_url}/metrics", timeout=10).text
    for family in (
        "onlinestudy_outbox_backlog",
        "onlinestudy_mypage_lag_seconds",
        "onlinestudy_outbox_oldest_undelivered_age_seconds",
        "onlinestudy_queue_depth",
        "onlinestudy_http_requests_total",
    ):
        assert f"# TYPE {family}" in text, family


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
