"""Tracing in one process with the in-memory exporter: the trace context an event carries
through the outbox, the relay's publication and each consumer's batch. (Across real processes:
tests/e2e/test_tracing.py.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from celery import Celery
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select

from app.consumer import consume
from app.policies import BY_CONSUMER
from app.shared.outbox.tables import OutboxEvent
from app.tracing import instrument, tracer_provider, uninstrument
from tests.helpers import course_body, order_body, random_phone
from workers.relay import relay_once


@pytest.fixture
def spans():
    """Tracing on in this process, its spans kept in memory; off again after the test."""
    exporter = InMemorySpanExporter()
    instrument(tracer_provider("api", [SimpleSpanProcessor(exporter)]))
    yield exporter
    uninstrument()


class RecordingCelery:
    """A real Celery app (its publications traced) on the in-memory transport, which keeps
    what the relay sends for the test to hand to the consumers."""

    def __init__(self):
        self.celery = Celery("traced", broker="memory://")
        self.sent: list[tuple[str, list[dict]]] = []

    def producer_or_acquire(self):
        return self.celery.producer_or_acquire()

    def send_task(self, name, kwargs, **options):
        self.sent.append((name, kwargs["events"]))
        return self.celery.send_task(name, kwargs=kwargs, **options)

    def deliver(self, container) -> None:
        """Each published task's batch, consumed in this process as a worker would."""
        sent, self.sent = self.sent, []
        for name, events in sent:
            consume(container, BY_CONSUMER[name], events)


def named(spans, name: str):
    found = [s for s in spans.get_finished_spans() if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans.get_finished_spans()])
    return found[0]


def test_an_order_and_the_hops_after_it_make_one_trace_linked_to_the_request(
    spans, client_with, container
):
    client = client_with()  # the app is made with tracing on: its requests are traced
    client.post("/managers", json={"name": "추적매니저", "phone": random_phone()})
    course = client.post("/courses", json=course_body()).get_json()
    spans.clear()
    response = client.post(
        "/orders",
        json=order_body(course["course_no"]),
        headers={"X-Request-ID": "trace-me-1"},
    )
    assert response.status_code == 201
    order_no = response.get_json()["order_no"]

    request = named(spans, "POST /orders")
    assert request.kind == SpanKind.SERVER
    assert request.attributes["onlinestudy.correlation_id"] == "trace-me-1"
    trace_id = request.context.trace_id
    # The event carries the request's span, beside the correlation id.
    with container.main_session() as session:
        event = session.execute(
            select(OutboxEvent).where(OutboxEvent.order_no == order_no)
        ).scalar_one()
    assert event.correlation_id == "trace-me-1"
    assert event.trace_context["traceparent"].startswith(
        f"00-{trace_id:032x}-{request.context.span_id:016x}-"
    )

    celery = RecordingCelery()
    relay_once(container, celery)
    celery.deliver(container)

    for consumer in ("learning.open_learning", "notification.send_sms", "mypage.project"):
        publish = named(spans, f"publish {consumer}")
        assert publish.kind == SpanKind.PRODUCER
        assert publish.parent.span_id == request.context.span_id  # read back from the outbox
        assert named(spans, f"apply_async/{consumer}").parent.span_id == publish.context.span_id
        process = named(spans, f"process {consumer}")
        assert process.context.trace_id == trace_id
        assert [link.context.span_id for link in process.links] == [request.context.span_id]
        assert process.attributes["onlinestudy.order_nos"] == (order_no,)
        assert process.attributes["onlinestudy.correlation_ids"] == ("trace-me-1",)

    # The learning started with the manager: its event carries the learning consumer's span,
    # so the next hop follows it, in the same trace.
    relay_once(container, celery)
    celery.deliver(container)
    started_by = named(spans, "process learning.open_learning")
    publish = named(spans, "publish evaluation.open_evaluation")
    assert publish.parent.span_id == started_by.context.span_id
    opened = named(spans, "process evaluation.open_evaluation")
    assert opened.context.trace_id == trace_id
    assert opened.links[0].context.span_id == started_by.context.span_id


def test_a_batch_of_several_orders_is_linked_to_each_request_in_a_trace_of_its_own(
    spans, client_with, container
):
    client = client_with()
    course = client.post("/courses", json=course_body()).get_json()
    other = client.post("/courses", json=course_body()).get_json()
    spans.clear()
    for created in (course, other):
        assert client.post("/orders", json=order_body(created["course_no"])).status_code == 201
    requests = [s for s in spans.get_finished_spans() if s.name == "POST /orders"]

    celery = RecordingCelery()
    relay_once(container, celery)
    assert {len(events) for _, events in celery.sent} == {2}  # one task carries both orders
    celery.deliver(container)

    publish = named(spans, "publish mypage.project")
    assert publish.parent is None
    assert publish.context.trace_id not in {r.context.trace_id for r in requests}
    process = named(spans, "process mypage.project")
    assert {link.context.span_id for link in process.links} == {r.context.span_id for r in requests}


def test_with_no_exporter_set_nothing_of_tracing_is_set_up_or_carried(tmp_path):
    program = """
import json, sys
from opentelemetry import trace
from app import create_app
from app.shared import tracing
app = create_app()
print(json.dumps({
    # (redis imports the SDK's metrics part, only to see whether it is there)
    "trace_sdk": sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk.trace")),
    "instrumentations": sorted(
        m for m in sys.modules if m.startswith("opentelemetry.instrumentation")
    ),
    "provider": type(trace.get_tracer_provider()).__name__,
    "enabled": tracing.enabled(),
    "carried": tracing.current_context(),
}))
"""
    env = {"ONLINESTUDY_VAR_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "trace_sdk": [],
        "instrumentations": [],
        "provider": "ProxyTracerProvider",
        "enabled": False,
        "carried": None,
    }
