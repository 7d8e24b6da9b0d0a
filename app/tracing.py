"""Traces with OpenTelemetry, configured by the standard OTEL_* variables.

On when OTEL_TRACES_EXPORTER names an exporter (Settings.traces_exporters); otherwise nothing
here runs: no SDK, no instrumentation, and the outbox carries no trace context. On, each
process (the API, the relay, each worker process) reports its spans: Flask requests, Celery
publications and tasks, SQL statements, Redis commands and HTTP calls (the SMS provider), and
the outbox's hops (app.shared.tracing), which carry the trace of the request that raised an
event through the relay to every consumer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from app.config import Settings
from app.shared import tracing

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry.context import Context
    from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
        BaseInstrumentor,
    )
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler, SamplingResult
    from opentelemetry.trace import Link, SpanKind
    from opentelemetry.trace.span import TraceState
    from opentelemetry.util.types import Attributes
    from sqlalchemy import Engine

# The default service.name of each kind of process (OTEL_SERVICE_NAME wins).
SERVICE_NAMES = {
    "api": "onlinestudy-api",
    "relay": "onlinestudy-relay",
    "worker": "onlinestudy-worker",
}
# Probes and scrapes are not traced unless OTEL_PYTHON_FLASK_EXCLUDED_URLS says otherwise.
EXCLUDED_URLS = "health/,metrics"

_provider: TracerProvider | None = None


def install(role: str, settings: Settings) -> bool:
    """Turn tracing on in this process, once, if the settings name an exporter; returns
    whether it is on. `role` names the process (SERVICE_NAMES)."""
    if tracing.enabled():
        return True
    if not settings.traces_exporters:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = tracer_provider(
        role, [BatchSpanProcessor(exporter(name)) for name in settings.traces_exporters]
    )
    trace.set_tracer_provider(provider)
    instrument(provider)
    return True


def tracer_provider(role: str, processors: Sequence[SpanProcessor]) -> TracerProvider:
    """A provider for this kind of process: its service name unless OTEL_SERVICE_NAME (or
    OTEL_RESOURCE_ATTRIBUTES) names one, the sampler of OTEL_TRACES_SAMPLER behind the rule
    of traces_start_at_the_edges."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    attributes = {}
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attributes["service.name"] = SERVICE_NAMES[role]
    configured = TracerProvider(shutdown_on_exit=False).sampler  # OTEL_TRACES_SAMPLER's
    provider = TracerProvider(
        resource=Resource.create(attributes), sampler=traces_start_at_the_edges(configured)
    )
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def exporter(name: str) -> SpanExporter:
    """The exporter OTEL_TRACES_EXPORTER names: `otlp` (OTLP over HTTP/protobuf, to
    OTEL_EXPORTER_OTLP_ENDPOINT), `console`, or one an installed package registers."""
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    (entry_point,) = entry_points(group="opentelemetry_traces_exporter", name=name)
    made: SpanExporter = entry_point.load()()
    return made


def instrument(provider: TracerProvider) -> None:
    """Turn the instrumentations and the outbox's spans on, reporting to `provider`. Engines
    made from now on are traced (app.shared.db.engine); a Flask app needs trace_app()."""
    global _provider
    for instrumentor in _instrumentors():
        instrumentor.instrument(tracer_provider=provider)
    _provider = provider
    tracing.enable(provider.get_tracer("onlinestudy"), _engine_tracer(provider))


def uninstrument() -> None:
    """Undo instrument() (for tests that turn tracing on in their own process)."""
    global _provider
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    tracing.disable()
    for instrumentor in _instrumentors():
        instrumentor.uninstrument()
    EngineTracer.remove_all_event_listeners()  # type: ignore[no-untyped-call]
    _provider = None


def _instrumentors() -> list[BaseInstrumentor]:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    return [CeleryInstrumentor(), RedisInstrumentor(), RequestsInstrumentor()]  # type: ignore[no-untyped-call]


def _engine_tracer(provider: TracerProvider) -> Callable[[Engine], object]:
    """OpenTelemetry's SQLAlchemy instrumentation, given each engine as it is made. Its
    instrumentor would wrap create_engine, which the engine module has imported already, and
    the asyncio engine's, whose import needs greenlet; it also declares a range that stops
    below SQLAlchemy 2.1 (the next minor, by habit), whose engine events it listens to are
    the same. tests/e2e/test_tracing.py sees its spans."""
    from opentelemetry import metrics
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__

    name = "opentelemetry.instrumentation.sqlalchemy"
    tracer = provider.get_tracer(name, __version__)
    # Connection pool usage goes to the no-op meter: metrics are Prometheus's here.
    usage = metrics.get_meter(name, __version__).create_up_down_counter(
        "db.client.connections.usage"
    )
    return lambda engine: EngineTracer(tracer, engine, usage)  # type: ignore[no-untyped-call]


def trace_app(app: Flask) -> None:
    """Trace the app's requests (a span per request, the caller's `traceparent` honoured)."""
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    excluded = None
    if not (
        os.environ.get("OTEL_PYTHON_FLASK_EXCLUDED_URLS")
        or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")
    ):
        excluded = EXCLUDED_URLS
    FlaskInstrumentor().instrument_app(  # type: ignore[no-untyped-call]
        app, tracer_provider=_provider, excluded_urls=excluded
    )


def shutdown() -> None:
    """Send what is buffered and stop (a worker process that exits skips atexit)."""
    if _provider is not None:
        _provider.shutdown()


def traces_start_at_the_edges(configured: Sampler) -> Sampler:
    """The configured sampler, except that a span of a database or Redis command, or of a
    task, that has no parent starts no trace: those are the relay's polls, the broker's
    acknowledgements, the retention sweep, the workers' liveness canaries. Traces start at a
    request, at the relay's publication of events raised untraced, or where a caller's
    `traceparent` says."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind

    class TracesStartAtTheEdges(Sampler):
        def should_sample(
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Attributes = None,
            links: Sequence[Link] | None = None,
            trace_state: TraceState | None = None,
        ) -> SamplingResult:
            parent = trace.get_current_span(parent_context).get_span_context()
            if not parent.is_valid and kind in (SpanKind.CLIENT, SpanKind.CONSUMER):
                return SamplingResult(Decision.DROP)
            return configured.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return f"TracesStartAtTheEdges{{{configured.get_description()}}}"

    return TracesStartAtTheEdges()
