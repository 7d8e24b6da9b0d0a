"""Traces across real processes: the API, the relay and a worker, each exporting its spans by
OTLP over HTTP, as the README configures them, to a receiver this test serves on loopback
(the benchmark's sink, handing each export to the test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import pytest
import redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.otlp import OtlpSink
from tests.conftest import REDIS_URL, drop_database, fresh_database
from tests.e2e.client import Client
from tests.e2e.conftest import Processes
from tests.helpers import course_body, eventually, order_body, random_phone

ALL_QUEUES = "orders,learning,evaluation,notification,mypage"


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    links: tuple[str, ...]  # the span ids linked to
    attributes: dict


@dataclass
class Receiver:
    """An OTLP/HTTP trace receiver: what each process exported."""

    url: str = ""
    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                with self.lock:
                    self.spans.extend(
                        Span(
                            resource["service.name"],
                            s.name,
                            s.kind,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            tuple(link.span_id.hex() for link in s.links),
                            _attributes(s.attributes),
                        )
                        for s in scope_spans.spans
                    )

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def request(self, request_id: str) -> Span:
        with self.lock:
            found = [
                s
                for s in self.spans
                if s.attributes.get("onlinestudy.correlation_id") == request_id
            ]
        assert len(found) == 1, f"no span yet for the request {request_id}"
        return found[0]


def _attributes(pairs) -> dict:
    values = {}
    for pair in pairs:
        value = pair.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            values[pair.key] = tuple(
                getattr(v, v.WhichOneof("value")) for v in value.array_value.values
            )
        else:
            values[pair.key] = getattr(value, kind) if kind else None
    return values


@pytest.fixture(scope="module")
def receiver():
    state = Receiver()
    sink = OtlpSink(take=state.take)
    state.url = sink.url
    yield state
    sink.close()


@pytest.fixture(scope="module")
def traced(receiver, tmp_path_factory):
    """The system with tracing on: the API, the relay and one worker for every queue, on
    databases and a Redis database of their own (no untraced process takes their work)."""
    env = dict(
        os.environ,
        DATABASE_URL=fresh_database("onlinestudy_e2e_traced"),
        NOTIFICATION_DATABASE_URL=fresh_database("onlinestudy_e2e_traced_notification"),
        CELERY_BROKER_URL=REDIS_URL,
        CELERY_RESULT_BACKEND=REDIS_URL,
        ONLINESTUDY_VAR_DIR=str(tmp_path_factory.mktemp("traced-var")),
        SCORE_SYNC_TIMEOUT_S="5",
        JWT_SECRET="e2e-traced-secret-0123456789abcdef",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="100",
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER"):
        env.pop(name, None)
    redis.Redis.from_url(REDIS_URL).flushdb()
    processes = Processes(env, tmp_path_factory.mktemp("traced-logs"))
    try:
        subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], env=env, check=True)
        processes.start("relay", "-m", "app.cli", "relay")
        processes.start(
            "worker",
            *("-m", "app.cli", "worker", "--queues", ALL_QUEUES, "--concurrency", "2"),
            *("--hostname", f"e2e-traced-{os.getpid()}@%h"),
        )
        processes.base_url = processes.start_api()
        yield processes
    finally:
        processes.stop_all()
        for name in ("DATABASE_URL", "NOTIFICATION_DATABASE_URL"):
            drop_database(env[name])


@pytest.fixture
def api(traced) -> Client:
    return Client(traced.base_url, traced.admin_token)


def post(api: Client, path: str, body: dict, request_id: str) -> dict:
    response = api.http.post(
        f"{api.base_url}{path}", json=body, headers={"X-Request-ID": request_id}, timeout=15
    )
    assert response.status_code in (200, 201), (path, response.status_code, response.text)
    return response.json()


def children(spans: list[Span]) -> dict[str, list[Span]]:
    by_parent = defaultdict(list)
    for span in spans:
        by_parent[span.parent_id].append(span)
    return by_parent


def under(span: Span, spans: list[Span]) -> list[Span]:
    """Every span below `span`, at any depth."""
    by_parent, found, todo = children(spans), [], [span]
    while todo:
        below = by_parent.get(todo.pop().span_id, [])
        found += below
        todo += below
    return found


def test_one_order_gives_one_trace_through_the_api_the_relay_and_every_consumer(
    api, receiver, traced
):
    api.a_manager("추적매니저")
    course = api.post("/courses", course_body(), expect=201).json()
    request_id = f"order-{uuid.uuid4().hex[:12]}"
    order = post(api, "/orders", order_body(course["course_no"], phone=random_phone()), request_id)
    api.its_evaluation(order)

    consumers = {
        "learning.open_learning",
        "notification.send_sms",
        "mypage.project",
        "evaluation.open_evaluation",
    }

    def whole_trace() -> tuple[Span, list[Span]]:
        request = receiver.request(request_id)
        spans = receiver.trace(request.trace_id)
        processed = {s.name.removeprefix("process ") for s in spans if s.name.startswith("process")}
        assert consumers <= processed, processed
        # Two SMS (ordered, learning started) and two projections of My page.
        assert sum(s.name == "process notification.send_sms" for s in spans) == 2
        return request, spans

    request, spans = eventually(whole_trace, timeout_s=30)
    assert request.service == "onlinestudy-api" and request.name == "POST /orders"
    assert {s.service for s in spans} == {
        "onlinestudy-api",
        "onlinestudy-relay",
        "onlinestudy-worker",
    }
    # The relay read the request's span back from the outbox row, in another process.
    publications = [s for s in spans if s.name == "publish learning.open_learning"]
    assert [(p.service, p.parent_id) for p in publications] == [
        ("onlinestudy-relay", request.span_id)
    ]
    # Each consumer's batch is linked to the span that raised its event: the request for
    # CourseOrdered, the learning consumer's batch for LearningStarted.
    started_by = next(s for s in spans if s.name == "process learning.open_learning")
    for span in (s for s in spans if s.name.startswith("process")):
        assert span.service == "onlinestudy-worker"
        assert span.links in ((request.span_id,), (started_by.span_id,)), span
    assert any(
        s.name == "process evaluation.open_evaluation" and s.links == (started_by.span_id,)
        for s in spans
    )
    # Below them, the work itself: the API's and the consumers' SQL, the relay's Redis.
    assert any(s.attributes.get("db.system") == "postgresql" for s in under(request, spans))
    assert any(s.attributes.get("db.system") == "postgresql" for s in under(started_by, spans))
    relay_work = [s for p in publications for s in under(p, spans)]
    assert any(s.attributes.get("db.system") == "redis" for s in relay_work), relay_work
    # The workers' log lines of that work name the trace.
    lines = (traced.logs / "worker.log").read_text(encoding="utf-8").splitlines()
    handled = [json.loads(line) for line in lines if '"events.handled"' in line]
    assert any(entry.get("trace_id") == request.trace_id for entry in handled)


def test_a_final_score_gives_the_chains_two_steps_under_the_request(api, receiver):
    api.a_manager("추적매니저")
    order = api.an_order(random_phone())
    evaluation = api.its_evaluation(order)
    request_id = f"final-{uuid.uuid4().hex[:12]}"
    final = post(api, f"/evaluations/{evaluation['id']}/final", {"score": 93}, request_id)
    assert final["status"] == "FINAL"

    def both_steps() -> tuple[Span, list[Span]]:
        request = receiver.request(request_id)
        below = under(request, receiver.trace(request.trace_id))
        names = {s.name for s in below}
        assert {"run/orders.register_score", "run/evaluation.finalize"} <= names, names
        return request, below

    request, below = eventually(both_steps, timeout_s=30)
    assert request.name.startswith("POST /evaluations/") and request.name.endswith("/final")
    steps = {s.name: s for s in below if s.name.startswith("run/")}
    assert steps["run/orders.register_score"].service == "onlinestudy-worker"
    # The order's step wrote the score: its SQL is below it.
    assert any(
        s.attributes.get("db.system") == "postgresql"
        for s in under(steps["run/orders.register_score"], below)
    )
