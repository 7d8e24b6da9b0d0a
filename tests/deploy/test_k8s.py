"""deploy/k8s: the example overlay renders, validates against the Kubernetes schemas offline, and
runs, probes, scales and stops every part of the system as the product needs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .project import API_PORT, QUEUES, REPO, problems_with_command, queues_consumed

yaml = pytest.importorskip("yaml", reason="pip install pyyaml (test extras)")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="pip install kubernetes-validate (test extras)"
)

OVERLAY = REPO / "deploy" / "k8s" / "overlays" / "example"
# The oldest and the newest Kubernetes minor versions the manifests are checked against.
KUBERNETES_VERSIONS = ("1.29", "1.33")
# Custom resources: no schema in kubernetes-validate; their required fields are asserted below.
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}
POD_OWNERS = {"Deployment", "Job"}


@pytest.fixture(scope="module")
def rendered() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: cannot render deploy/k8s/overlays/example")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    return rendered.stdout


@pytest.fixture(scope="module")
def documents(rendered) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def of_kind(documents: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def pod_spec(resource: dict) -> dict:
    return resource["spec"]["template"]["spec"]


def containers(resource: dict) -> list[dict]:
    spec = pod_spec(resource)
    return spec.get("initContainers", []) + spec["containers"]


def pod_labels(resource: dict) -> dict:
    return resource["spec"]["template"]["metadata"]["labels"]


def component(documents: list[dict], name: str) -> dict:
    found = [
        d
        for d in of_kind(documents, "Deployment").values()
        if pod_labels(d).get("app.kubernetes.io/component") == name
    ]
    assert len(found) == 1, f"expected one {name} Deployment, found {len(found)}"
    return found[0]


def args_of(resource: dict) -> list[str]:
    return pod_spec(resource)["containers"][0]["args"]


def worker_deployments(documents: list[dict]) -> dict[str, dict]:
    """Worker Deployments by the queue they consume."""
    workers = {}
    for deployment in of_kind(documents, "Deployment").values():
        if pod_labels(deployment).get("app.kubernetes.io/component") == "worker":
            for queue in queues_consumed(args_of(deployment)):
                assert queue not in workers, f"queue {queue} has two worker Deployments"
                workers[queue] = deployment
    return workers


def selects(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels", {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def test_given_the_example_overlay_when_rendered_then_builtin_kinds_are_valid_kubernetes(documents):
    errors = []
    for doc in documents:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                errors.append(
                    f"{doc['kind']}/{doc['metadata']['name']} on {version}: {path}: {error.message}"
                )
            except kubernetes_validate.SchemaNotFoundError as error:
                errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {error.message}")

    assert errors == []


def test_given_the_example_overlay_then_it_sets_namespace_image_digest_and_replicas(documents):
    namespaces = of_kind(documents, "Namespace")
    assert list(namespaces) == ["onlinestudy-example"]
    for doc in documents:
        metadata = doc["metadata"]
        if doc["kind"] != "Namespace":
            assert metadata.get("namespace") == "onlinestudy-example", metadata["name"]
    for owner in [*of_kind(documents, "Deployment").values(), *of_kind(documents, "Job").values()]:
        for container in containers(owner):
            # Pinned by digest: what runs is what was tested, whatever is pushed under a tag.
            assert re.fullmatch(
                r"registry\.example\.com/onlinestudy(:[\w.-]+)?@sha256:[0-9a-f]{64}",
                container["image"],
            ), container["image"]
    for deployment in of_kind(documents, "Deployment").values():
        assert deployment["spec"].get("replicas", 0) >= 1, deployment["metadata"]["name"]


def test_given_every_container_when_its_command_is_read_then_it_is_a_command_of_this_project(
    documents,
):
    problems = []
    for kind in POD_OWNERS:
        for name, owner in of_kind(documents, kind).items():
            for container in containers(owner):
                # Only args: the image's entrypoint (tini) must stay to pass SIGTERM on.
                assert "command" not in container, f"{name}: set args, keep the image entrypoint"
                problems += [f"{name}: {p}" for p in problems_with_command(container["args"])]
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    if "exec" in container.get(probe, {}):
                        problems += [
                            f"{name} {probe}: {p}"
                            for p in problems_with_command(container[probe]["exec"]["command"])
                        ]

    assert problems == []


def test_given_the_api_then_it_is_ready_on_health_ready_and_live_on_health_live(documents):
    (api,) = pod_spec(component(documents, "api"))["containers"]

    assert api["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": API_PORT}
    assert api["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": API_PORT}
    assert {"containerPort": API_PORT, "name": "http"} in api["ports"]


def test_given_the_api_and_flower_then_a_service_reaches_each(documents):
    services = of_kind(documents, "Service")
    for name, port in (("api", API_PORT), ("flower", 5555)):
        deployment = component(documents, name)
        matching = [
            s
            for s in services.values()
            if selects({"matchLabels": s["spec"]["selector"]}, pod_labels(deployment))
        ]
        assert len(matching) == 1, name
        assert [p["port"] for p in matching[0]["spec"]["ports"]] == [port]


def test_given_the_queues_then_each_has_exactly_one_worker_deployment(documents):
    workers = worker_deployments(documents)

    assert sorted(workers) == sorted(QUEUES)
    for queue, deployment in workers.items():
        assert queues_consumed(args_of(deployment)) == [queue]


def test_given_every_worker_then_its_probes_run_onlinestudy_health_worker_not_celery_inspect_ping(
    documents,
):
    for queue, deployment in worker_deployments(documents).items():
        (container,) = pod_spec(deployment)["containers"]
        for probe in ("livenessProbe", "readinessProbe"):
            command = container[probe]["exec"]["command"]
            assert command == ["onlinestudy", "health", "worker"], (queue, probe)
            assert "inspect" not in command and "ping" not in command


def test_given_the_relay_then_its_probes_run_onlinestudy_health_relay(documents):
    (container,) = pod_spec(component(documents, "relay"))["containers"]

    assert container["args"] == ["onlinestudy", "relay"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == ["onlinestudy", "health", "relay"]


def test_given_every_container_then_it_has_cpu_and_memory_requests_and_limits(documents):
    missing = []
    for kind in POD_OWNERS:
        for name, owner in of_kind(documents, kind).items():
            for container in containers(owner):
                resources = container.get("resources", {})
                for bound in ("requests", "limits"):
                    for resource in ("cpu", "memory"):
                        if resource not in resources.get(bound, {}):
                            missing.append(f"{name}/{container['name']}: {bound}.{resource}")

    assert missing == []


def test_given_the_workers_then_the_grace_period_covers_a_warm_shutdown(documents):
    for queue, deployment in worker_deployments(documents).items():
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= 60, queue


def test_given_a_release_then_a_job_migrates_the_database(documents):
    jobs = [
        j
        for j in of_kind(documents, "Job").values()
        if args_of(j) == ["onlinestudy", "db", "upgrade"]
    ]

    assert len(jobs) == 1
    assert pod_spec(jobs[0])["restartPolicy"] in ("Never", "OnFailure")


def test_given_the_api_then_an_hpa_scales_it_on_cpu(documents):
    api = component(documents, "api")
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": api["metadata"]["name"]}
    hpas = [
        h
        for h in of_kind(documents, "HorizontalPodAutoscaler").values()
        if h["spec"]["scaleTargetRef"] == target
    ]

    assert len(hpas) == 1 and hpas[0]["apiVersion"] == "autoscaling/v2"
    assert [
        m["resource"]["name"] for m in hpas[0]["spec"]["metrics"] if m["type"] == "Resource"
    ] == ["cpu"]
    assert 1 <= hpas[0]["spec"]["minReplicas"] <= hpas[0]["spec"]["maxReplicas"]


def test_given_the_api_and_every_worker_then_a_disruption_budget_covers_it(documents):
    budgets = of_kind(documents, "PodDisruptionBudget").values()
    covered = [component(documents, "api"), *worker_deployments(documents).values()]

    for deployment in covered:
        matching = [b for b in budgets if selects(b["spec"]["selector"], pod_labels(deployment))]
        assert len(matching) == 1, deployment["metadata"]["name"]


def test_given_every_worker_queue_then_a_keda_scaled_object_scales_it_on_its_outbox_backlog(
    documents,
):
    workers = worker_deployments(documents)
    scaled = of_kind(documents, "ScaledObject")
    authentications = of_kind(documents, "TriggerAuthentication")
    secrets = of_kind(documents, "Secret")

    targets = {}
    for name, scaled_object in scaled.items():
        assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaled_object["spec"]
        (trigger,) = spec["triggers"]
        # The backlog waits in the outbox (the relay holds back what the workers cannot take
        # yet), so the queue's PENDING deliveries are what the workers have to catch up on.
        assert trigger["type"] == "postgresql", name
        query = trigger["metadata"]["query"]
        match = re.fullmatch(
            r"SELECT count\(\*\) FROM outbox_deliveries "
            r"WHERE status = 'PENDING' AND consumer LIKE '(\w+)\.%'",
            query,
        )
        assert match, (name, query)
        queue = match.group(1)
        assert queue in QUEUES, name
        assert int(trigger["metadata"]["targetQueryValue"]) > 0, name
        targets[queue] = spec["scaleTargetRef"]["name"]
        deployment = workers[queue]
        assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"], name
        assert (
            1
            <= spec["minReplicaCount"]
            <= deployment["spec"]["replicas"]
            <= spec["maxReplicaCount"]
        ), name
        # The database's address comes from a TriggerAuthentication backed by a Secret.
        assert "connection" not in trigger["metadata"] and "host" not in trigger["metadata"]
        authentication = authentications[trigger["authenticationRef"]["name"]]
        parameters = {}
        for ref in authentication["spec"]["secretTargetRef"]:
            secret = secrets[ref["name"]]
            assert ref["key"] in secret.get("stringData", {}) | secret.get("data", {}), name
            parameters[ref["parameter"]] = ref
        assert "connection" in parameters, name

    assert sorted(targets) == sorted(QUEUES)


def test_given_flower_then_only_operators_and_the_ingress_can_reach_it(documents):
    flower = component(documents, "flower")
    rules = ingress_rules(documents, flower)

    assert rules, "no ingress rule at all: nobody could open Flower"
    peers = [peer for rule in rules for peer in rule["from"]]
    assert {"onlinestudy.io/role": "operator"} in [
        peer.get("podSelector", {}).get("matchLabels") for peer in peers
    ]
    assert [port["port"] for rule in rules for port in rule["ports"]] == [5555]


def test_given_flower_then_its_basic_auth_comes_from_a_secret_file(documents):
    flower = component(documents, "flower")
    (container,) = pod_spec(flower)["containers"]
    env = {e["name"]: e for e in container.get("env", [])}

    # Flower reads it from the environment: in args it would show in the process list.
    assert [a for a in container["args"] if "auth" in a or "FLOWER_BASIC_AUTH" in a] == []
    assert container["args"][:2] == ["onlinestudy", "flower"]
    assert problems_with_command(container["args"]) == []
    assert not any("basic-auth" in arg for arg in container["args"])
    assert secret_file(documents, flower, container, env["FLOWER_BASIC_AUTH_FILE"]["value"]) == (
        "onlinestudy-flower",
        "FLOWER_BASIC_AUTH",
    )


def secret_file(documents: list[dict], owner: dict, container: dict, path: str) -> tuple:
    """(Secret, key) of the file at `path` in the container, which must exist."""
    volumes = {v["name"]: v for v in pod_spec(owner).get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        folder = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(folder) and "secret" in volumes[mount["name"]]:
            name = volumes[mount["name"]]["secret"]["secretName"]
            key = path[len(folder) :]
            secret = of_kind(documents, "Secret")[name]
            assert key in secret.get("stringData", {}) | secret.get("data", {}), path
            assert mount.get("readOnly") is True, path
            return name, key
    raise AssertionError(f"{path} is not in a mounted Secret")


def settings_of(documents: list[dict], owner: dict, container: dict) -> dict[str, str]:
    """The container's environment: its ConfigMaps, then its own entries."""
    config_maps = of_kind(documents, "ConfigMap")
    settings = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            settings |= config_maps[source["configMapRef"]["name"]]["data"]
    settings |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return settings


def test_given_every_pod_then_its_configuration_exists_and_holds_every_setting(documents):
    required = {
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
        "JWT_SECRET",
    }
    for kind in POD_OWNERS:
        for name, owner in of_kind(documents, kind).items():
            for container in containers(owner):
                settings = settings_of(documents, owner, container)
                for setting, path in settings.items():
                    if setting.endswith("_FILE"):
                        secret_file(documents, owner, container, path)
                given = {s.removesuffix("_FILE") for s in settings}
                assert required <= given, f"{name}: missing {sorted(required - given)}"


def test_given_every_pod_then_no_secret_reaches_it_as_an_environment_variable(documents):
    for kind in POD_OWNERS:
        for name, owner in of_kind(documents, kind).items():
            for container in containers(owner):
                assert not any("secretRef" in s for s in container.get("envFrom", [])), name
                assert not any(
                    "secretKeyRef" in e.get("valueFrom", {}) for e in container.get("env", [])
                ), name


def test_given_every_pod_then_it_runs_as_non_root_with_a_read_only_root(documents):
    for kind in POD_OWNERS:
        for name, owner in of_kind(documents, kind).items():
            assert pod_spec(owner)["securityContext"]["runAsNonRoot"] is True, name
            for container in containers(owner):
                assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
                assert container["securityContext"]["readOnlyRootFilesystem"] is True, name


# --- the network: every pod denies by default, and each part is allowed what it needs ------


def policies_of(documents: list[dict], owner: dict) -> list[dict]:
    labels = pod_labels(owner)
    return [
        p["spec"]
        for p in of_kind(documents, "NetworkPolicy").values()
        if selects(p["spec"]["podSelector"], labels)
    ]


def ingress_rules(documents: list[dict], owner: dict) -> list[dict]:
    return [r for p in policies_of(documents, owner) for r in p.get("ingress", [])]


def egress_ports(documents: list[dict], owner: dict) -> set[int]:
    ports = set()
    for policy in policies_of(documents, owner):
        for rule in policy.get("egress", []):
            assert rule.get("ports"), f"an egress rule without ports: {rule}"
            ports |= {port["port"] for port in rule["ports"]}
    return ports


def pod_owners(documents: list[dict]) -> dict[str, dict]:
    return {name: o for kind in POD_OWNERS for name, o in of_kind(documents, kind).items()}


def test_given_every_pod_then_it_denies_all_traffic_the_policies_do_not_allow(documents):
    for name, owner in pod_owners(documents).items():
        isolated = {t for p in policies_of(documents, owner) for t in p["policyTypes"]}
        assert isolated == {"Ingress", "Egress"}, name


def test_given_any_ingress_rule_then_it_names_its_peers_and_ports(documents):
    for name, owner in pod_owners(documents).items():
        for rule in ingress_rules(documents, owner):
            assert rule.get("from") and rule.get("ports"), f"{name}: {rule} admits everything"
            for peer in rule["from"]:
                assert "ipBlock" not in peer, name
                assert peer.get("podSelector", {}).get("matchLabels"), f"{name}: {peer}"


def test_given_the_api_then_only_the_ingress_controller_and_prometheus_reach_it(documents):
    rules = ingress_rules(documents, component(documents, "api"))
    peers = [peer["podSelector"]["matchLabels"] for rule in rules for peer in rule["from"]]

    assert sorted(p["app.kubernetes.io/name"] for p in peers) == ["ingress-nginx", "prometheus"]
    assert {port["port"] for rule in rules for port in rule["ports"]} == {API_PORT}


def test_given_the_relay_migration_and_workers_then_nothing_reaches_them_but_metrics(documents):
    assert ingress_rules(documents, component(documents, "relay")) == []
    (job,) = of_kind(documents, "Job").values()
    assert ingress_rules(documents, job) == []
    for queue, worker in worker_deployments(documents).items():
        rules = ingress_rules(documents, worker)
        assert [port["port"] for rule in rules for port in rule["ports"]] == [9100], queue


DNS, DATABASE, BROKER, HTTPS = {53}, {5432}, {6379, 5672, 5671}, {443}


def test_given_each_part_then_it_reaches_only_the_database_the_broker_and_dns(documents):
    (job,) = of_kind(documents, "Job").values()
    expected = {
        "api": DNS | DATABASE | BROKER,
        "relay": DNS | DATABASE | BROKER,
        "flower": DNS | BROKER,
    }
    for part, ports in expected.items():
        assert egress_ports(documents, component(documents, part)) == ports, part
    assert egress_ports(documents, job) == DNS | DATABASE
    for queue, worker in worker_deployments(documents).items():
        sms = HTTPS if queue == "notification" else set()
        assert egress_ports(documents, worker) == DNS | DATABASE | BROKER | sms, queue


# A rollout without a failed request: every Deployment.


def task_time_limit() -> int:
    """celeryconfig's hard limit of a task, read as text: the longest a warm shutdown waits."""
    found = re.search(r"^task_time_limit = (\d+)", (REPO / "celeryconfig.py").read_text(), re.M)
    assert found, "celeryconfig.py sets task_time_limit"
    return int(found[1])


def drain_s(documents: list[dict], container: dict) -> float:
    """SHUTDOWN_DRAIN_S as the container's ConfigMaps give it (the application's default: 5)."""
    config_maps = of_kind(documents, "ConfigMap")
    value = "5"
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            value = config_maps[source["configMapRef"]["name"]]["data"].get(
                "SHUTDOWN_DRAIN_S", value
            )
    return float(value)


def pre_stop_sleep_s(container: dict) -> float:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    return float(command[1])


def test_given_every_deployment_then_a_rollout_keeps_every_pod_until_its_successor_is_ready(
    documents,
):
    for name, deployment in of_kind(documents, "Deployment").items():
        strategy = deployment["spec"].get("strategy", {})
        assert strategy.get("type") == "RollingUpdate", name
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0, name
        assert strategy["rollingUpdate"]["maxSurge"] >= 1, name


def test_given_every_deployment_then_it_has_a_readiness_probe_and_pauses_before_sigterm(documents):
    for name, deployment in of_kind(documents, "Deployment").items():
        for container in pod_spec(deployment)["containers"]:
            assert "readinessProbe" in container, name
            assert pre_stop_sleep_s(container) >= 1, name


def test_given_every_deployment_then_its_grace_period_outlasts_the_pause_the_drain_and_a_task(
    documents,
):
    longest_task = task_time_limit()
    for name, deployment in of_kind(documents, "Deployment").items():
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
        for container in pod_spec(deployment)["containers"]:
            needed = pre_stop_sleep_s(container) + drain_s(documents, container) + longest_task
            assert grace > needed, f"{name}: {grace}s <= {needed}s"


def test_given_the_api_then_its_readiness_fails_on_sigterm_before_the_drain_ends(documents):
    (api,) = pod_spec(component(documents, "api"))["containers"]
    probe = api["readinessProbe"]

    # The readiness view answers 503 from SIGTERM on; the Service must see it while the pod
    # still serves, or a request could be routed to a pod that has stopped accepting.
    noticed_within_s = probe["periodSeconds"] * probe.get("failureThreshold", 3)
    assert noticed_within_s < drain_s(documents, api)
    assert probe["timeoutSeconds"] <= probe["periodSeconds"]


def test_given_the_monitoring_component_then_prometheus_scrapes_the_api_and_every_worker(
    documents,
):
    monitors = of_kind(documents, "PodMonitor")
    secrets = of_kind(documents, "Secret")
    scraped = set()
    for monitor in monitors.values():
        for deployment in of_kind(documents, "Deployment").values():
            if not selects(monitor["spec"]["selector"], pod_labels(deployment)):
                continue
            ports = {p["name"] for c in containers(deployment) for p in c.get("ports", [])}
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                assert endpoint["port"] in ports, (monitor["metadata"]["name"], ports)
                token = endpoint.get("authorization", {}).get("credentials")
                if token:  # the API's /metrics answers only METRICS_TOKEN
                    assert token["key"] in secrets[token["name"]]["stringData"]
            scraped.add(pod_labels(deployment)["app.kubernetes.io/component"])
    assert scraped == {"api", "worker"}
    api = next(
        m
        for m in monitors.values()
        if m["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component") == "api"
    )
    assert api["spec"]["podMetricsEndpoints"][0]["authorization"]["type"] == "Bearer"


def test_given_the_monitoring_component_then_the_alerts_and_the_dashboard_are_deployed(documents):
    monitoring = REPO / "deploy" / "monitoring"
    (rule,) = of_kind(documents, "PrometheusRule").values()
    dashboards = [
        c
        for c in of_kind(documents, "ConfigMap").values()
        if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]

    assert rule["spec"] == yaml.safe_load((monitoring / "alerts.yml").read_text())
    assert len(dashboards) == 1
    assert (
        dashboards[0]["data"]["grafana-dashboard.json"]
        == (monitoring / "grafana-dashboard.json").read_text()
    )


# --- checkov on the rendered overlay ---------------------------------------------------------

CHECKOV_CONFIG = REPO / "deploy" / "k8s" / "checkov.yaml"
# Checks that must pass on every pod, and may never be skipped: a NetworkPolicy selects it,
# secrets reach it as files, its image is pinned by digest.
ESSENTIAL_CHECKS = ("CKV2_K8S_6", "CKV_K8S_35", "CKV_K8S_43")


def checkov_binary() -> str:
    # `make test` installs checkov in a venv of its own (pyproject's deploy-lint group).
    for candidate in (REPO / ".venv" / "tools" / "bin" / "checkov", shutil.which("checkov")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.skip("checkov is not installed: make .venv/tools/.installed")


def test_given_checkov_on_the_rendered_overlay_then_only_the_accepted_checks_fail(
    rendered, documents, tmp_path
):
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered)
    run = subprocess.run(
        [checkov_binary(), "--config-file", str(CHECKOV_CONFIG), "-f", str(manifest)]
        + ["--output", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(run.stdout)
    results = (report[0] if isinstance(report, list) else report)["results"]

    failed = [(f["check_id"], f["resource"]) for f in results["failed_checks"]]
    assert failed == [] and run.returncode == 0, failed
    skipped = {s["check_id"] for s in results["skipped_checks"]}
    assert skipped.isdisjoint(ESSENTIAL_CHECKS)
    owners = set(pod_owners(documents))
    for check in ESSENTIAL_CHECKS:
        passed = {
            p["resource"].split(".")[2] for p in results["passed_checks"] if p["check_id"] == check
        }
        assert owners <= passed, (check, sorted(owners - passed))
