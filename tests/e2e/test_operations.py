"""What operators rely on: worker liveness that proves consumption, and metrics of the fleet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
import requests
from celery import Celery

from tests.e2e.client import Client
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


class TaskEvents:
    """What a monitor such as Flower receives of the workers' task events, while it listens."""

    def __init__(self):
        # On the broker of CELERY_BROKER_URL: Celery prefers it to any URL it is given.
        self.monitor = Celery()
        self.seen: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def __enter__(self) -> TaskEvents:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def broadcast(self, command: str) -> None:
        self.monitor.control.broadcast(command)

    def _listen(self) -> None:
        names: dict[str, str] = {}  # task-received names the task; later events give its id

        def on_event(event: dict) -> None:
            if event["type"].startswith("task-"):
                if "name" in event:
                    names[event["uuid"]] = event["name"]
                self.seen.append((event["type"], names.get(event["uuid"], "?")))

        with self.monitor.connection() as connection:
            receiver = self.monitor.events.Receiver(connection, handlers={"*": on_event})
            while not self._stop.is_set():
                try:
                    for _ in receiver.itercapture(limit=None, timeout=0.5, wakeup=False):
                        if self._stop.is_set():
                            return
                except TimeoutError:
                    continue


@pytest.mark.speed
def test_workers_send_task_events_only_once_a_monitor_asks_for_them(system, monkeypatch):
    monkeypatch.setenv("CELERY_BROKER_URL", system.env["CELERY_BROKER_URL"])
    api = Client(system.base_url, system.admin_token)
    api.a_manager("감매니저")

    def an_order_through_my_page() -> None:
        order = api.an_order()

        def started():
            assert api.one(f"/mypage/{order['phone']}")["learning_status"] == "STARTED"

        eventually(started, timeout_s=30)

    def seen(event_type: str, task: str):
        def check():
            assert (event_type, task) in events.seen

        return check

    with TaskEvents() as events:
        an_order_through_my_page()
        assert events.seen == []  # nobody asked: the workers spend nothing on them

        events.broadcast("enable_events")  # what `onlinestudy flower` does
        try:
            an_order_through_my_page()
            eventually(seen("task-received", "learning.open_learning"), timeout_s=10)
            eventually(seen("task-succeeded", "mypage.project"), timeout_s=10)
        finally:
            events.broadcast("disable_events")


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr


def test_given_sigterm_the_api_turns_unready_at_once_serves_through_the_drain_then_stops(system):
    base_url = system.start_api("api-draining", SHUTDOWN_DRAIN_S="3")
    master = system.running["api-draining"]
    os.kill(master.pid, signal.SIGTERM)  # to gunicorn's master only, as tini passes it on

    # A load balancer following readiness takes it out; requests still routed are served.
    eventually(
        lambda: _status(requests.get(f"{base_url}/health/ready", timeout=5), 503), timeout_s=2
    )
    assert requests.get(f"{base_url}/health/live", timeout=5).status_code == 200
    assert master.poll() is None

    assert master.wait(timeout=30) == 0  # then a graceful stop


def _status(response: requests.Response, expected: int) -> None:
    assert response.status_code == expected, response.text
