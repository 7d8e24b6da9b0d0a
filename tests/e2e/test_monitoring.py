"""The shipped dashboard and alert rules on a real Prometheus (Debian's) scraping the running
system, the API's /metrics and a worker's own, as the PodMonitors do: every panel's query has
data, and every rule evaluates without error."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from tests.e2e.client import Client
from tests.e2e.conftest import free_port
from tests.helpers import eventually

PROMETHEUS = shutil.which("prometheus")
MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="needs Debian's prometheus (scripts/ensure-tools.sh installs it)"
)


@pytest.fixture
def worker_metrics(system):
    """One more My page worker, with its own /metrics as in Kubernetes and compose; it shares
    the queue with the system's worker, so it takes some of each order's events."""
    port = free_port()
    system.start(
        "worker-with-metrics",
        "-m",
        "app.cli",
        "worker",
        "--queues",
        "mypage",
        "--hostname",
        f"e2e-metrics-{os.getpid()}@%h",
        "--metrics-port",
        str(port),
    )
    yield f"127.0.0.1:{port}"
    system.stop("worker-with-metrics")


@pytest.fixture
def prometheus(system, worker_metrics, tmp_path):
    """Prometheus scraping every second, with the shipped rules; its base URL."""
    api = system.base_url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(MONITORING / "alerts.yml")],
        "scrape_configs": [
            {"job_name": "api", "static_configs": [{"targets": [api]}]},
            {"job_name": "workers", "static_configs": [{"targets": [worker_metrics]}]},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=open(tmp_path / "prometheus.log", "wb"),  # noqa: SIM115 - kept open for the child
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: ready(base_url), timeout_s=30)
        yield base_url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def ready(base_url: str) -> None:
    try:
        assert requests.get(f"{base_url}/-/ready", timeout=2).ok
    except requests.RequestException as exc:
        raise AssertionError("Prometheus not up yet") from exc


def query(base_url: str, expr: str) -> list[dict]:
    answer = requests.get(f"{base_url}/api/v1/query", params={"query": expr}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["result"]


def test_every_panel_has_data_and_every_rule_evaluates_on_the_running_system(system, prometheus):
    api = Client(system.base_url, system.admin_token)
    panels = json.loads((MONITORING / "grafana-dashboard.json").read_text())["panels"]
    queries = {
        target["expr"].replace("$__rate_interval", "30s"): panel["title"]
        for panel in panels
        for target in panel.get("targets", [])
        if 'status=~"5.."' not in target["expr"]  # no 5xx here, so no series: as it should be
    }

    def every_query_has_data() -> None:
        api.an_order()  # requests, tasks and events, until the worker has handled some too
        empty = [
            f"{title}: {expr}" for expr, title in queries.items() if not query(prometheus, expr)
        ]
        assert empty == []

    eventually(every_query_has_data, timeout_s=60, interval_s=1)
    # The worker's own endpoint counts its tasks and its heartbeat, as each pod's does.
    assert query(prometheus, 'onlinestudy_events_total{job="workers", consumer="mypage.project"}')
    assert query(prometheus, 'onlinestudy_heartbeat_age_seconds{job="workers"}')

    def every_rule_evaluated() -> list[dict]:
        answer = requests.get(f"{prometheus}/api/v1/rules", timeout=10).json()
        rules = [r for group in answer["data"]["groups"] for r in group["rules"]]
        assert rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules)
        return rules

    rules = eventually(every_rule_evaluated, timeout_s=30, interval_s=1)
    assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []
    # A healthy system: its workers and relay are alive.
    stale = {"OnlinestudyWorkerHeartbeatStale", "OnlinestudyRelayHeartbeatStale"}
    assert [r["name"] for r in rules if r["name"] in stale and r["state"] != "inactive"] == []
