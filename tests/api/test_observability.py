"""Metrics, traces and logs, in process: /metrics is protected and never rate limited,
counts what it says; a received traceparent is continued through SQL and outgoing HTTP
calls, the ids are in the log lines; the query string is logged without secrets; a
configuration warning is written once. (tests/system/test_prometheus.py scrapes a real
gunicorn with Debian's Prometheus.)"""

from __future__ import annotations

import http.server
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import urllib3
from flask import Flask
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY

from core.web import request_log, tracing
from core.web.config import DevelopmentConfig
from helpers import CatalogFactory, Client, Response, assert_error, client_of
from receiver import receiving
from servers import BIN, free_port, serve, server_env, wait_until_up

TOKEN = "metrics-token-0123456789"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(client: Client, token: str = TOKEN) -> Response:
    return client.get("/metrics", headers={"Authorization": f"Bearer {token}"})


class AccessRecord(logging.LogRecord):
    """A ``stores.access`` record: the fields request_log's filter sets on it."""

    method: str
    query: str
    trace_id: str
    span_id: str


def access_records(caplog: pytest.LogCaptureFixture) -> list[AccessRecord]:
    return [cast(AccessRecord, r) for r in caplog.records if r.name == "stores.access"]


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span finished from here to the module's end, in memory."""
    exporter = InMemorySpanExporter()
    tracing.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.clear()
    exporter.shutdown()  # later modules' spans are no longer kept
    # Later modules' apps are made as without an exporter: nothing recorded, Flask and
    # SQLAlchemy not instrumented (their hooks and spans would follow this module).
    tracing.SAMPLER.delegate, tracing.SAMPLER.recording = ALWAYS_OFF, False
    SQLAlchemyInstrumentor().uninstrument()


# --- /metrics ------------------------------------------------------------------------


@pytest.mark.config(METRICS_TOKEN=TOKEN)
def test_metrics_need_the_token(client: Client) -> None:
    """Refusals in the envelope (§2), not an empty body."""
    answer = client.get("/metrics")
    assert_error(answer, 401, error="authorization_required")
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    for answer in (
        scrape(client, "wrong-token-0123456789"),
        client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}),
    ):
        body = assert_error(answer, 401, error="invalid_token")
        assert body["message"] == "The metrics token is not valid."
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    answer = scrape(client)
    assert answer.status_code == 200
    assert answer.mimetype == "text/plain"
    assert "stores_http_request_duration_seconds_bucket" in answer.get_data(as_text=True)


def test_without_a_token_there_are_no_metrics(client: Client) -> None:
    """404 in the envelope, as for any path that names nothing (§2)."""
    for headers in ({}, {"Authorization": "Bearer "}):
        body = assert_error(client.get("/metrics", headers=headers), 404)
        assert body["message"] == "Not found: no resource at this path."
    assert "/metrics" not in json.dumps(client.get("/openapi.json").json["paths"])


@pytest.mark.config(METRICS_TOKEN=TOKEN, RATE_LIMIT_DEFAULT="2 per minute")
def test_requests_are_counted_by_route_and_refusals_and_metrics_are_never_limited(
    client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    store = api.store(as_alice, "Metrics")
    item = api.item(as_alice, store, "Counted")
    route = "/items/<id:item_id>"
    ok = sample(
        "stores_http_request_duration_seconds_count", route=route, method="GET", status="200"
    )
    refused = sample("stores_rate_limit_refusals_total", route=route)
    statuses = [client.get(f"/items/{item['id']}").status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]
    for _ in range(5):  # far past the limit of 2 per minute
        assert scrape(client).status_code == 200
    count = sample(
        "stores_http_request_duration_seconds_count", route=route, method="GET", status="200"
    )
    assert count - ok == 2
    limited = sample(
        "stores_http_request_duration_seconds_count", route=route, method="GET", status="429"
    )
    assert limited >= 2
    assert sample("stores_rate_limit_refusals_total", route=route) - refused == 2
    unmatched = sample(
        "stores_http_request_duration_seconds_count", route="unmatched", method="GET", status="404"
    )
    client.get("/no/such/path/12345")
    after = sample(
        "stores_http_request_duration_seconds_count", route="unmatched", method="GET", status="404"
    )
    assert after - unmatched == 1  # one label for every unknown path: the series stay bounded


@pytest.mark.config(METRICS_TOKEN=TOKEN)
def test_made_up_methods_share_one_label(client: Client) -> None:
    # gunicorn passes any method of 3 to 20 characters; each was a series of its own.
    def other(route: str) -> float:
        return sample(
            "stores_http_request_duration_seconds_count", route=route, method="other", status="405"
        )

    before = other("unmatched")
    for method in ("FROB", "XYZZY", "PROPFIND"):
        assert_error(client.open("/items", method=method), 405)
    assert other("unmatched") - before == 3
    text = scrape(client).text
    assert not any(method in text for method in ("FROB", "XYZZY", "PROPFIND"))


@pytest.mark.config(METRICS_TOKEN=TOKEN)
def test_an_idempotent_replay_is_counted(
    client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    store = api.store(as_alice, "Replays")
    path = "/items"
    route = "/items"
    before = sample("stores_idempotent_replays_total", route=route)
    headers = as_alice | {"Idempotency-Key": "replay-me-1"}
    body = {"name": "Once", "price": "1.50", "store_id": store["id"]}
    first = client.post(path, json=body, headers=headers)
    again = client.post(path, json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert sample("stores_idempotent_replays_total", route=route) - before == 1


# --- traces ----------------------------------------------------------------------------


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver of sorts: keeps the headers of what it is sent."""

    received: list[dict[str, str]] = []

    def do_POST(self) -> None:
        Receiver.received.append(dict(self.headers))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Receiver.received.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_without_a_recorder_a_trace_is_continued_for_its_ids_only(
    make_app: Callable[..., Flask],
    receiver: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No exporter: no span is recorded, but the caller's trace id is in the log line
    and sent on (marked not sampled: nothing was recorded here)."""
    monkeypatch.setattr(tracing.SAMPLER, "delegate", ALWAYS_OFF)
    monkeypatch.setattr(tracing.SAMPLER, "recording", False)
    app = make_app()

    @app.get("/call-out")
    def call_out() -> dict[str, bool]:
        urllib3.request("POST", receiver, body=b"{}", timeout=5)
        return {"called": True}

    with caplog.at_level(logging.INFO, logger="stores.access"):
        answer = app.test_client().get("/call-out", headers={"traceparent": TRACEPARENT})
    assert answer.status_code == 200
    [record] = access_records(caplog)
    assert record.trace_id == TRACE_ID
    assert record.span_id != PARENT_SPAN and len(record.span_id) == 16
    [headers] = Receiver.received
    sent = {k.lower(): v for k, v in headers.items()}["traceparent"]
    version, trace_id, _span, flags = sent.split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "00")
    # A new trace when the caller sends none, and none outside a request.
    app.test_client().get("/stores")
    assert cast(AccessRecord, caplog.records[-1]).trace_id not in (TRACE_ID, None)
    assert tracing.current_ids() == (None, None)
    app.test_client().get("/health")  # probes are not traced
    assert not hasattr(caplog.records[-1], "trace_id")


def test_a_received_traceparent_is_continued_through_sql_and_outgoing_calls(
    client: Client,
    api: CatalogFactory,
    as_alice: dict[str, str],
    make_app: Callable[..., Flask],
    spans: Any,
    receiver: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calling = make_app()  # a view that calls out, as a webhook delivery will

    @calling.get("/call-out")
    def call_out() -> dict[str, bool]:
        urllib3.request("POST", receiver, body=b"{}", timeout=5)
        return {"called": True}

    store = api.store(as_alice, "Traced")
    spans.clear()
    with caplog.at_level(logging.INFO, logger="stores.access"):
        answer = client.get(f"/stores/{store['id']}", headers={"traceparent": TRACEPARENT})
        assert answer.status_code == 200
        answer = client_of(calling).get("/call-out", headers={"traceparent": TRACEPARENT})
        assert answer.status_code == 200

    finished = spans.get_finished_spans()
    servers = [s for s in finished if s.kind == SpanKind.SERVER]
    assert [s.name for s in servers] == ["GET /stores/<id:store_id>", "GET /call-out"]
    for span in servers:  # children of the caller's span, in the caller's trace
        assert format(span.context.trace_id, "032x") == TRACE_ID
        assert format(span.parent.span_id, "016x") == PARENT_SPAN
    statements = [s for s in finished if s.kind == SpanKind.CLIENT and s.parent is not None]
    sql = [s for s in statements if s.parent.span_id == servers[0].context.span_id]
    executed = [s.attributes.get("db.statement", "") for s in sql if s.name != "connect"]
    assert executed and all("stores" in statement for statement in executed)
    [outgoing] = [s for s in statements if s.parent.span_id == servers[1].context.span_id]
    # The receiver was sent the trace on: the outgoing call's span is the parent there.
    [headers] = Receiver.received
    sent = {k.lower(): v for k, v in headers.items()}["traceparent"]
    assert sent == f"00-{TRACE_ID}-{format(outgoing.context.span_id, '016x')}-01"

    lines = [r for r in access_records(caplog) if r.method == "GET"]
    entries = [json.loads(request_log.JsonFormatter().format(r)) for r in lines]
    assert [e["trace_id"] for e in entries] == [TRACE_ID, TRACE_ID]
    assert [e["span_id"] for e in entries] == [format(s.context.span_id, "016x") for s in servers]


@pytest.mark.config(WEBHOOK_ALLOW_HTTP=True, WEBHOOK_ALLOW_PRIVATE_NETWORKS=True)
def test_a_delivery_is_a_span_of_the_trace_its_event_was_written_in(
    client: Client, as_alice: dict[str, str], spans: Any, receiver: str
) -> None:
    """Recorded: each attempt is a client span, the child of the span its event was
    written in (the request's), and the receiver gets that span as its parent."""
    hook = client.post("/webhooks", json={"url": receiver, "events": ["*"]}, headers=as_alice)
    assert hook.status_code == 201, hook.json
    spans.clear()
    answer = client.post(
        "/stores", json={"name": "Told"}, headers={**as_alice, "traceparent": TRACEPARENT}
    )
    assert answer.status_code == 201, answer.json
    finished = spans.get_finished_spans()
    [server] = [s for s in finished if s.kind == SpanKind.SERVER]
    [delivery] = [s for s in finished if s.name == "webhook delivery"]
    assert delivery.kind == SpanKind.CLIENT
    assert format(delivery.context.trace_id, "032x") == TRACE_ID
    assert delivery.parent.span_id == server.context.span_id
    [headers] = Receiver.received
    sent = {k.lower(): v for k, v in headers.items()}["traceparent"]
    assert sent == f"00-{TRACE_ID}-{format(delivery.context.span_id, '016x')}-01"


@pytest.mark.config(WEBHOOK_ALLOW_HTTP=True, WEBHOOK_ALLOW_PRIVATE_NETWORKS=True)
def test_a_delivery_span_tells_the_answer_and_a_failure_is_its_error(
    client: Client, as_alice: dict[str, str], spans: Any
) -> None:
    """An attempt's span carries the answer's status; one that failed (not a 2xx, or no
    answer at all) is an error span saying why, as OpenTelemetry's HTTP clients write it."""
    with receiving() as accepting, receiving(status=503) as refusing:
        for url in (accepting.url, refusing.url, f"http://127.0.0.1:{free_port()}/closed"):
            hook = client.post("/webhooks", json={"url": url, "events": ["*"]}, headers=as_alice)
            assert hook.status_code == 201, hook.json
        spans.clear()
        answer = client.post(
            "/stores",
            json={"name": "Told thrice"},
            headers={**as_alice, "traceparent": TRACEPARENT},
        )
        assert answer.status_code == 201, answer.json
    deliveries = [s for s in spans.get_finished_spans() if s.name == "webhook delivery"]
    assert all(s.attributes["http.request.method"] == "POST" for s in deliveries)
    by_answer = {s.attributes.get("http.response.status_code"): s for s in deliveries}
    assert len(deliveries) == 3 and set(by_answer) == {200, 503, None}
    accepted, refused, unanswered = by_answer[200], by_answer[503], by_answer[None]
    assert accepted.status.status_code == StatusCode.UNSET
    assert "error.type" not in accepted.attributes
    assert refused.status.status_code == StatusCode.ERROR
    assert refused.attributes["error.type"] == "503"
    assert refused.status.description.startswith("HTTP 503")
    assert unanswered.status.status_code == StatusCode.ERROR
    assert unanswered.attributes["error.type"] == "_OTHER"
    assert "refused" in unanswered.status.description.lower()


def test_a_request_without_traceparent_starts_a_trace_of_its_own(app: Flask, spans: Any) -> None:
    spans.clear()
    app.test_client().get("/stores")
    [server] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.parent is None
    assert format(server.context.trace_id, "032x") != TRACE_ID


@pytest.mark.redis
def test_a_task_queued_in_a_request_carries_the_trace(
    make_app: Callable[..., Flask], spans: Any
) -> None:
    """The message a request puts on the broker carries its trace: the worker that
    runs it continues it (Celery's own instrumentation, on the worker's side)."""
    import redis

    queue = f"stores_h_trace_{os.getpid()}"
    app = make_app(CELERY_TASK_ALWAYS_EAGER=False)
    celery = app.extensions["celery"]
    celery.conf.update(broker_url=os.environ["REDIS_URL"], task_default_queue=queue)

    def noop() -> None:
        return None

    task = celery.task(name="tests.noop")(noop)  # Celery is untyped: called, not a decorator

    @app.post("/queue-it")
    def queue_it() -> dict[str, bool]:
        task.delay()
        return {"queued": True}

    broker = redis.Redis.from_url(os.environ["REDIS_URL"])
    broker.delete(queue)
    try:
        spans.clear()
        answer = app.test_client().post("/queue-it", headers={"traceparent": TRACEPARENT})
        assert answer.status_code == 200
        [message] = cast(list[bytes], broker.lrange(queue, 0, -1))
    finally:
        broker.delete(queue)
    headers = json.loads(message)["headers"]
    assert headers["traceparent"].startswith(f"00-{TRACE_ID}-")
    [publish] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert headers["traceparent"] == f"00-{TRACE_ID}-{format(publish.context.span_id, '016x')}-01"


# --- logs ------------------------------------------------------------------------------


def test_the_query_string_is_logged_without_secrets_and_with_a_short_cursor(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    cursor = "eyJpZCI6IDEyMzQ1Njc4OTAsICJuYW1lIjogInNvbWV0aGluZyJ9"
    query = f"limit=5&cursor={cursor}&access_token=abc123&api_key=k-999&password=hunter2&q=a%20b"
    with caplog.at_level(logging.INFO, logger="stores.access"):
        client.get(f"/stores?{query}")
    [record] = access_records(caplog)
    entry = json.loads(request_log.JsonFormatter().format(record))
    assert entry["query"] == (
        f"limit=5&cursor={cursor[:12]}...&access_token=[redacted]&api_key=[redacted]"
        "&password=[redacted]&q=a%20b"
    )
    line = request_log.JsonFormatter().format(record)
    for secret in ("abc123", "k-999", "hunter2", cursor):
        assert secret not in line
    assert entry["api_key_id"] is None
    assert entry["idempotent_replayed"] is False
    assert set(entry) >= {"time", "level", "logger", "message", "request_id", "status"}


def test_a_long_query_string_is_cut(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="stores.access"):
        client.get("/stores?q=" + "x" * 5000)
    [record] = access_records(caplog)
    assert len(record.query) == request_log.QUERY_LIMIT + 3


def test_a_configuration_warning_is_written_once_per_process_group(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(request_log.WARNED, "")  # restored after the test
    monkeypatch.setattr("sys.argv", ["gunicorn"])
    logger = logging.getLogger("stores.test_warnings")
    messages = DevelopmentConfig({}).warnings()
    assert messages == ["JWT_SECRET_KEY is not set: using a development-only secret."]
    with caplog.at_level(logging.WARNING, logger=logger.name):
        request_log.warn_once(logger, messages)
        request_log.warn_once(logger, messages)  # a second app in the same process
        assert os.environ[request_log.WARNED] == "1"  # inherited by child processes
    assert [r.getMessage() for r in caplog.records] == messages


@pytest.mark.parametrize(
    "argv",
    [
        ["flask"],
        ["/x/bin/flask", "--help"],
        ["flask", "db", "-h"],
        ["flask", "db", "upgrade"],
        ["flask", "--app", "app", "create-admin", "--username", "boss"],
    ],
)
def test_flask_commands_that_do_not_serve_write_no_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, argv: list[str]
) -> None:
    monkeypatch.setenv(request_log.WARNED, "")
    monkeypatch.setattr("sys.argv", argv)
    logger = logging.getLogger("stores.test_warnings")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        request_log.warn_once(logger, ["a warning"])
    assert caplog.records == []


def test_flask_run_writes_the_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(request_log.WARNED, "")
    monkeypatch.setattr("sys.argv", ["/x/bin/flask", "--app", "app", "run", "--debug"])
    logger = logging.getLogger("stores.test_warnings")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        request_log.warn_once(logger, ["a warning"])
    assert [r.getMessage() for r in caplog.records] == ["a warning"]


@pytest.mark.postgres
@pytest.mark.config(METRICS_TOKEN=TOKEN)
def test_a_statement_timeout_is_a_503_counted_by_reason(app: Flask) -> None:
    from sqlalchemy import text

    from db import db

    @app.get("/slow")
    def slow() -> dict[str, object]:
        db.session.execute(text("SET LOCAL statement_timeout = 50"))
        db.session.execute(text("SELECT pg_sleep(1)"))
        return {}

    before = sample("stores_unavailable_total", reason="statement_timeout")
    answer = client_of(app).get("/slow")
    assert answer.status_code == 503
    assert answer.json["trace_id"] and answer.json["request_id"]
    assert sample("stores_unavailable_total", reason="statement_timeout") - before == 1


def test_gunicorn_writes_a_configuration_warning_once_not_once_per_worker(tmp_path: Path) -> None:
    port = free_port()
    env = server_env(
        APP_ENV="development",
        DATABASE_URL=f"sqlite:///{tmp_path / 'warn.db'}",
        LOG_LEVEL="INFO",
        WEB_CONCURRENCY="3",
        GUNICORN_HOST="127.0.0.1",
        PORT=str(port),
    )
    for name in ("JWT_SECRET_KEY", request_log.WARNED):  # the development secret, unwarned
        env.pop(name, None)
    log = tmp_path / "gunicorn.log"
    command = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:create_app()"]
    with serve(command, env, port, log=log) as process:
        wait_until_up(f"http://127.0.0.1:{port}", process, workers=3, timeout=60)
    lines = log.read_text().splitlines()
    assert sum("Booting worker" in line for line in lines) == 3
    warnings = [line for line in lines if "development-only secret" in line]
    assert len(warnings) == 1, lines
