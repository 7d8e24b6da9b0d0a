"""The trace context an event carries across the outbox, and the spans of the hops that follow
it: the relay's publication and the consumer's batch.

Off unless app.tracing turned it on: then every function here returns at once, and nothing of
OpenTelemetry is imported or called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanContext, SpanKind, Tracer
    from sqlalchemy import Engine

# What the propagator writes (W3C `traceparent`, and `tracestate` when there is one).
TraceContext = dict[str, str]

_tracer: Tracer | None = None
_trace_engine: Callable[[Engine], object] | None = None


def enable(tracer: Tracer, trace_engine: Callable[[Engine], object]) -> None:
    global _tracer, _trace_engine
    _tracer, _trace_engine = tracer, trace_engine


def disable() -> None:
    global _tracer, _trace_engine
    _tracer = _trace_engine = None


def engine_made(engine: Engine) -> None:
    """Trace the statements of a new engine, when tracing is on."""
    if _trace_engine is not None:
        _trace_engine(engine)


def enabled() -> bool:
    return _tracer is not None


def current_context() -> TraceContext | None:
    """The context of the current span, for an event raised now; None when tracing is off."""
    if _tracer is None:
        return None
    from opentelemetry import propagate

    carrier: TraceContext = {}
    propagate.inject(carrier)
    return carrier or None


def current_trace_id() -> str | None:
    """The id of the current trace (for the logs), when tracing is on and a span is current."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    span_context = trace.get_current_span().get_span_context()
    return f"{span_context.trace_id:032x}" if span_context.is_valid else None


def set_attributes(attributes: Mapping[str, str]) -> None:
    """Tag the current span (a request's correlation id, say)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(attributes)


@contextmanager
def publishing(consumer: str, queue: str, envelopes: list[dict[str, Any]]) -> Iterator[None]:
    """The relay's span for one task's batch: the Celery publication inside it carries it on."""
    if _tracer is None:
        yield
        return
    from opentelemetry.trace import SpanKind

    with _following(
        f"publish {consumer}",
        SpanKind.PRODUCER,
        envelopes,
        {"messaging.system": "celery", "messaging.destination.name": queue},
    ):
        yield


@contextmanager
def consuming(consumer: str, envelopes: list[dict[str, Any]]) -> Iterator[None]:
    """A consumer's span for its batch; the events it raises carry this span on."""
    if _tracer is None:
        yield
        return
    from opentelemetry.trace import SpanKind

    with _following(f"process {consumer}", SpanKind.INTERNAL, envelopes, {}):
        yield


@contextmanager
def _following(
    name: str, kind: SpanKind, envelopes: list[dict[str, Any]], attributes: dict[str, Any]
) -> Iterator[None]:
    """A span for work on a batch of events, linked to the span that raised each one. Its
    parent is the current span (the Celery task's, in a worker) or, without one, the span
    that raised the events when they all belong to one trace (an event that travels alone,
    the usual case when the system is not busy), so that one order's hops make one trace;
    a batch of several orders starts a trace of its own and keeps the links."""
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context

    assert _tracer is not None
    raised = [propagate.extract(c) for c in _contexts(envelopes)]
    causes: dict[int, tuple[SpanContext, Context]] = {}
    for context in raised:
        span_context = trace.get_current_span(context).get_span_context()
        if span_context.is_valid:
            causes.setdefault(span_context.span_id, (span_context, context))
    parent = None  # the current context
    if not trace.get_current_span().is_recording():
        traces = {span_context.trace_id for span_context, _ in causes.values()}
        parent = next(iter(causes.values()))[1] if len(traces) == 1 else Context()
    order_nos = sorted({str(e["order_no"]) for e in envelopes if e.get("order_no")})
    with _tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        links=[trace.Link(span_context) for span_context, _ in causes.values()],
        attributes={
            **attributes,
            "messaging.batch.message_count": len(envelopes),
            "onlinestudy.event_types": sorted({str(e["event_type"]) for e in envelopes}),
            "onlinestudy.order_nos": order_nos,
            "onlinestudy.correlation_ids": sorted(
                {str(e["correlation_id"]) for e in envelopes if e.get("correlation_id")}
            ),
        },
    ):
        yield


def _contexts(envelopes: Iterable[dict[str, Any]]) -> Iterator[TraceContext]:
    for body in envelopes:
        context = body.get("trace_context")
        if isinstance(context, dict):
            yield context
