"""OpenTelemetry traces: Flask, SQLAlchemy, Celery, requests and urllib3 instrumented.

A request's ``traceparent`` header (W3C Trace Context) is continued; a Celery task runs
in the trace of the request that queued it (the task's headers carry the context), and
an HTTP call made with requests or urllib3 sends ``traceparent`` on. An event keeps the
trace it was written in, and each of its deliveries is a span of that trace, its
``traceparent`` sent to the receiver (core/events/delivery.py), however late. The
trace and span ids are in every log line (core/web/request_log.py) and the trace id in
the 500 envelope beside the request id.

Spans are exported by OTLP over HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the
exporter reads its other ``OTEL_EXPORTER_OTLP_*`` variables itself), sampled as
``OTEL_TRACES_SAMPLER`` says (every trace by default, a caller's decision respected).
With nowhere to send them, spans are not recorded at all: each still has its ids (in
the logs, the envelope, the ``traceparent`` sent on), at a fraction of the cost.
``TRACING_ENABLED=false`` turns it all off.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, g, request
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler, SamplingResult
from opentelemetry.sdk.trace.sampling import _get_from_env_or_default as sampler_from_env
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode

SERVICE = "stores-api"
# Probes and scrapes come every few seconds: they are not traced.
EXCLUDED_URLS = "/health,/ready,/metrics"
_EXCLUDED_PATHS = frozenset(EXCLUDED_URLS.split(","))

_lock = threading.Lock()
_provider: TracerProvider | None = None


class RecordWhenExported(Sampler):
    """Records nothing until spans have somewhere to go (an exporter, a test's
    processor); then samples as the environment says. The instrumentations' tracers
    keep the sampler they were given, so it is this one object that changes its mind."""

    def __init__(self) -> None:
        self.delegate: Sampler = ALWAYS_OFF
        self.recording = False

    def record(self) -> None:
        self.delegate = sampler_from_env()
        self.recording = True

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return self.delegate.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return f"RecordWhenExported({self.delegate.get_description()})"


SAMPLER = RecordWhenExported()


def provider() -> TracerProvider:
    """The process's tracer provider, made (and set as the global one) on first use,
    with the OTLP exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set."""
    global _provider  # one provider per process, as OpenTelemetry wants
    with _lock:
        if _provider is None:
            name = os.environ.get("OTEL_SERVICE_NAME", "").strip() or SERVICE
            resource = Resource.create({SERVICE_NAME: name})
            _provider = TracerProvider(resource=resource, sampler=SAMPLER)
            if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
                SAMPLER.record()
                # Imported only when there is somewhere to send spans.
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

                _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            trace.set_tracer_provider(_provider)
            # Tasks and outgoing HTTP calls carry the trace on in either mode (a span
            # only when they happen; not recorded while nothing records).
            CeleryInstrumentor().instrument(tracer_provider=_provider)  # type: ignore[no-untyped-call]
            RequestsInstrumentor().instrument(tracer_provider=_provider)
            URLLib3Instrumentor().instrument(tracer_provider=_provider)
        return _provider


def _instrument_sqlalchemy() -> None:
    """Engines made from now on (Flask-SQLAlchemy's, in db.init_app) trace their
    statements. Its package declares SQLAlchemy < 2.1; it uses the engine events that
    2.1 keeps (tests/api/test_observability.py checks that statements are traced)."""
    instrumentor = SQLAlchemyInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider(), skip_dep_check=True)


# --- without a recorder: the ids only ---------------------------------------------------

_ids = RandomIdGenerator()


def _continue_trace() -> None:
    """The caller's trace (``traceparent``) continued, or a new one, as a span that is
    not recorded: its ids are in the logs, the envelope and what is sent on."""
    if request.path in _EXCLUDED_PATHS:
        return
    parent = trace.get_current_span(propagate.extract(request.headers)).get_span_context()
    trace_id = parent.trace_id if parent.is_valid else _ids.generate_trace_id()
    span = NonRecordingSpan(SpanContext(trace_id, _ids.generate_span_id(), is_remote=False))
    g.trace_token = otel_context.attach(trace.set_span_in_context(span))


def _end_trace(_exc: BaseException | None = None) -> None:
    token = g.pop("trace_token", None)
    if token is not None:
        otel_context.detach(token)


def init_app(app: Flask) -> None:
    """Before the database is set up: the SQLAlchemy instrumentation wraps the engines
    made after it.

    While spans have somewhere to go (an exporter; a test's processor), Flask and
    SQLAlchemy are instrumented: a span per request and per statement. Otherwise each
    request only continues (or starts) a trace, unrecorded, for its ids: the
    instrumentations would make spans that nobody sees, at a quarter of a single
    read's time (docs/performance.md)."""
    if not app.config["TRACING_ENABLED"]:
        return
    provider()
    if SAMPLER.recording:
        _instrument_sqlalchemy()
        FlaskInstrumentor().instrument_app(  # type: ignore[no-untyped-call]
            app, tracer_provider=provider(), excluded_urls=EXCLUDED_URLS
        )
        return
    app.before_request(_continue_trace)
    app.teardown_request(_end_trace)


def current_ids() -> tuple[str | None, str | None]:
    """The current trace and span ids as hex (None, None outside any span)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def current_trace_id() -> str | None:
    return current_ids()[0]


def current_traceparent() -> str | None:
    """The current span as a ``traceparent`` value (W3C, version 00: 55 characters),
    or None outside any. An event keeps the one it was written in (core/events/
    outbox.py), and its deliveries continue that trace (``continuing``)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


@contextmanager
def continuing(traceparent: str | None, name: str) -> Iterator[Span | None]:
    """Meanwhile a span ``name`` of its own (a client's: an outgoing call) is current,
    the child of the span ``traceparent`` names, in its trace; it is given to the block
    (``answered`` tells it the call's outcome). Without a valid one (an event written
    before events kept their trace, or with tracing off), the current context stays,
    and the block is given None."""
    parent = propagate.extract({"traceparent": traceparent}) if traceparent else None
    if parent is None or not trace.get_current_span(parent).get_span_context().is_valid:
        yield None
        return
    tracer = trace.get_tracer(__name__)
    with tracer.start_as_current_span(name, context=parent, kind=SpanKind.CLIENT) as span:
        yield span


def answered(span: Span | None, status: int | None, failure: tuple[str, str] | None) -> None:
    """An outgoing HTTP POST's outcome on its span, as OpenTelemetry's HTTP client
    conventions write it: the answer's status, and a failed call (``failure``: its
    ``error.type`` and a description) as the span's error."""
    if span is None or not span.is_recording():
        return
    span.set_attribute("http.request.method", "POST")
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if failure is not None:
        kind, description = failure
        span.set_attribute("error.type", kind)
        span.set_status(Status(StatusCode.ERROR, description))


def add_span_processor(processor: Any) -> None:
    """Another span processor (tests: an InMemorySpanExporter's); spans are recorded
    from now on."""
    provider().add_span_processor(processor)
    SAMPLER.record()
