"""OpenTelemetry traces: Flask, SQLAlchemy, Celery, requests and urllib3 instrumented.

A request's ``traceparent`` header (W3C Trace Context) is continued; a Celery task runs
in the trace of the request that queued it (the task's headers carry the context), and
an HTTP call made with requests or urllib3 (a webhook delivery) sends ``traceparent``
on. The trace and span ids are in every log line (core/web/request_log.py) and the
trace id in the 500 envelope beside the request id.

Spans are exported by OTLP over HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the
exporter reads its other ``OTEL_EXPORTER_OTLP_*`` variables itself); otherwise they
are made (for the ids in logs) and dropped. ``TRACING_ENABLED=false`` turns it all off.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Flask
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

SERVICE = "stores-api"
# Probes and scrapes come every few seconds: they are not traced.
EXCLUDED_URLS = "/health,/ready,/metrics"

_lock = threading.Lock()
_provider: TracerProvider | None = None


def provider() -> TracerProvider:
    """The process's tracer provider, made (and set as the global one) on first use,
    with the OTLP exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set."""
    global _provider  # one provider per process, as OpenTelemetry wants
    with _lock:
        if _provider is None:
            name = os.environ.get("OTEL_SERVICE_NAME", "").strip() or SERVICE
            _provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
            if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
                # Imported only when there is somewhere to send spans.
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

                _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            trace.set_tracer_provider(_provider)
            # Global instrumentations, once per process: engines made from now on
            # (Flask-SQLAlchemy's, in db.init_app), tasks, and outgoing HTTP calls.
            # Its package declares SQLAlchemy < 2.1; it uses the engine events 2.1 keeps
            # (tests/api/test_observability.py checks that statements are traced).
            SQLAlchemyInstrumentor().instrument(tracer_provider=_provider, skip_dep_check=True)
            CeleryInstrumentor().instrument(tracer_provider=_provider)  # type: ignore[no-untyped-call]
            RequestsInstrumentor().instrument(tracer_provider=_provider)
            URLLib3Instrumentor().instrument(tracer_provider=_provider)
        return _provider


def init_app(app: Flask) -> None:
    """Before the database is set up: the SQLAlchemy instrumentation wraps the engines
    made after it."""
    if not app.config["TRACING_ENABLED"]:
        return
    FlaskInstrumentor().instrument_app(  # type: ignore[no-untyped-call]
        app, tracer_provider=provider(), excluded_urls=EXCLUDED_URLS
    )


def current_ids() -> tuple[str | None, str | None]:
    """The current trace and span ids as hex (None, None outside any span)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def current_trace_id() -> str | None:
    return current_ids()[0]


def add_span_processor(processor: Any) -> None:
    """Another span processor (tests: an InMemorySpanExporter's)."""
    provider().add_span_processor(processor)
