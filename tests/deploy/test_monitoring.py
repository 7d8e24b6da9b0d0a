"""deploy/monitoring: the alert rules pass `promtool check rules` and their own unit tests
(`promtool test rules`), the Grafana dashboard's queries are valid PromQL, and every metric the
two name is one the application exports, so a renamed metric fails here, not on a dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .project import REPO

yaml = pytest.importorskip("yaml", reason="pip install pyyaml (test extras)")

MONITORING = REPO / "deploy" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"

# The states that need a person.
ALERT_NAMES = {
    "OnlinestudyEventUndelivered",  # the oldest undelivered event older than a threshold
    "OnlinestudyDeadLetters",
    "OnlinestudyWorkerHeartbeatStale",
    "OnlinestudyRelayHeartbeatStale",
    "OnlinestudyScoreBreakerOpen",
    "OnlinestudyMyPageLag",
    "OnlinestudyHttp5xxRate",
}
# What an operator looks at first.
DASHBOARD_METRICS = {
    "onlinestudy_http_requests_total",  # request rate by endpoint
    "onlinestudy_http_request_duration_seconds",  # latency by endpoint
    "onlinestudy_tasks_total",  # task rate by queue
    "onlinestudy_task_duration_seconds",  # task duration by queue
    "onlinestudy_outbox_backlog",
    "onlinestudy_outbox_oldest_undelivered_age_seconds",
    "onlinestudy_dead_letters",
    "onlinestudy_mypage_lag_seconds",
    "onlinestudy_queue_depth",
}
METRIC = re.compile(r"\bonlinestudy_[a-z0-9_]+\b")
SERIES_SUFFIXES = ("_bucket", "_sum", "_count")  # a histogram's series


def promtool(*args: str) -> subprocess.CompletedProcess:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (scripts/ensure-tools.sh installs it)")
    return subprocess.run(
        [found, *args], capture_output=True, text=True, timeout=120, cwd=MONITORING
    )


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def dashboard_panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def dashboard_queries() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def exported_metrics() -> set[str]:
    """The metric names the application's code declares (app/ and workers/)."""
    names: set[str] = set()
    for folder in ("app", "workers"):
        for path in (REPO / folder).rglob("*.py"):
            names |= set(re.findall(r"[\"'](onlinestudy_[a-z0-9_]+)[\"']", path.read_text()))
    return names


def declared(series: str, exported: set[str]) -> bool:
    return series in exported or any(
        series.endswith(s) and series.removesuffix(s) in exported for s in SERIES_SUFFIXES
    )


def test_given_the_alert_rules_then_promtool_accepts_them():
    checked = promtool("check", "rules", ALERTS.name)

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_given_the_alert_rules_then_their_unit_tests_pass():
    tested = promtool("test", "rules", ALERT_TESTS.name)

    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_given_each_alert_then_it_exists_and_a_unit_test_sees_it_fire():
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired = {
        check["alertname"]
        for case in cases
        for check in case["alert_rule_test"]
        if check.get("exp_alerts")
    }
    names = {rule["alert"] for rule in rules()}

    assert names == ALERT_NAMES
    assert fired == ALERT_NAMES
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_given_the_prometheus_rule_then_it_carries_the_same_groups_as_the_rules_file():
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text())

    assert (resource["apiVersion"], resource["kind"]) == (
        "monitoring.coreos.com/v1",
        "PrometheusRule",
    )
    assert resource["spec"] == yaml.safe_load(ALERTS.read_text())


def test_given_the_dashboard_then_its_queries_are_valid_promql(tmp_path: Path):
    # promtool parses expressions in rule files: each query becomes a recording rule, with
    # Grafana's interval variable at a value it could take.
    queries = [q.replace("$__rate_interval", "1m") for q in dashboard_queries()]
    recorded = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": q} for i, q in enumerate(queries)
                ],
            }
        ]
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(recorded))

    checked = promtool("check", "rules", str(tmp_path / "dashboard.yml"))

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_given_the_dashboard_then_it_shows_what_operators_look_at_first():
    panels = dashboard_panels()
    shown = {m for q in dashboard_queries() for m in METRIC.findall(q)}
    bases = {
        s.removesuffix(suffix) for s in shown for suffix in SERIES_SUFFIXES if s.endswith(suffix)
    }

    assert shown | bases >= DASHBOARD_METRICS
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            # The Prometheus chosen in the dashboard's variable, not a data source of ours.
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"] and panel["description"], panel["title"]


def test_given_the_rules_and_the_dashboard_then_every_metric_they_name_is_exported():
    exported = exported_metrics()
    named = {m for rule in rules() for m in METRIC.findall(rule["expr"])}
    named |= {m for q in dashboard_queries() for m in METRIC.findall(q)}

    assert named
    assert sorted(m for m in named if not declared(m, exported)) == []
