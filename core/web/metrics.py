"""Prometheus metrics, served at ``/metrics`` (see docs/observability.md).

Under gunicorn every worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus_client's multiprocess mode; gunicorn.conf.py makes and cleans the folder),
and a scrape of any worker reads them all: each worker is counted once, and a dead
worker's live gauges are dropped (``child_exit``). Without that variable (``flask run``,
tests) the process's own registry is served.

``/metrics`` is off (404) unless ``METRICS_TOKEN`` is set; then it answers only a request
that carries ``Authorization: Bearer <METRICS_TOKEN>`` (401 otherwise). Both errors are
the API's envelope, like every other (§2). It is never rate limited, and is
not part of the API's OpenAPI document.

The metrics of work done outside a request (events written, webhook deliveries, jobs)
are recorded by one call each: :func:`event_written`, :func:`webhook_delivered`,
:func:`job_finished`.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event
from sqlalchemy.pool import QueuePool

PATH = "/metrics"
# Response header the idempotency layer sets on an answer it replays (core/web/idempotency.py).
REPLAYED_HEADER = "Idempotent-Replayed"

# Requests take milliseconds; the last buckets catch the statement timeout's 5 s.
REQUEST_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SLOW_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
WAIT_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5)

REQUESTS = Histogram(
    "stores_http_request_duration_seconds",
    "Requests served, by route template, method and status, and how long they took.",
    ["route", "method", "status"],
    buckets=REQUEST_BUCKETS,
)
RATE_LIMITED = Counter(
    "stores_rate_limit_refusals", "Requests refused with 429 by the rate limiter.", ["route"]
)
IDEMPOTENT_REPLAYS = Counter(
    "stores_idempotent_replays", "Answers replayed for a repeated Idempotency-Key.", ["route"]
)
UNAVAILABLE = Counter(
    "stores_unavailable",
    "Requests answered 503 because a dependency failed, by reason "
    "(statement_timeout, pool_timeout, database, redis).",
    ["reason"],
)
POOL_IN_USE = Gauge(
    "stores_db_pool_connections_in_use",
    "Database connections checked out of the pools of live workers.",
    multiprocess_mode="livesum",
)
POOL_OVERFLOW = Gauge(
    "stores_db_pool_overflow",
    "Connections open beyond the pool size (DB_POOL_SIZE), summed over live workers.",
    multiprocess_mode="livesum",
)
POOL_WAIT = Histogram(
    "stores_db_pool_checkout_wait_seconds",
    "Time a request waited for a database connection from its worker's pool.",
    buckets=WAIT_BUCKETS,
)
POOL_EVENTS = Counter(
    "stores_db_pool_connections",
    "Pool connection events: connect (a new connection), invalidate (a dead one dropped).",
    ["event"],
)
EVENTS_WRITTEN = Counter(
    "stores_events_written", "Events written to the outbox, by event type.", ["type"]
)
WEBHOOK_DELIVERIES = Histogram(
    "stores_webhook_delivery_duration_seconds",
    "Webhook delivery attempts by outcome (delivered, failed, gave_up) and their latency.",
    ["outcome"],
    buckets=SLOW_BUCKETS,
)
JOBS = Histogram(
    "stores_job_duration_seconds",
    "Background jobs by kind and outcome (succeeded, failed, canceled), and how long they ran.",
    ["kind", "outcome"],
    buckets=SLOW_BUCKETS,
)


# --- helpers for work outside requests (the outbox, webhooks, jobs) -------------------


def event_written(event_type: str, count: int = 1) -> None:
    """``count`` events of ``event_type`` were written to the outbox."""
    EVENTS_WRITTEN.labels(event_type).inc(count)


def webhook_delivered(outcome: str, seconds: float) -> None:
    """One delivery attempt ended with ``outcome`` after ``seconds``."""
    WEBHOOK_DELIVERIES.labels(outcome).observe(seconds)


def job_finished(kind: str, outcome: str, seconds: float) -> None:
    """A job of ``kind`` ended with ``outcome`` after running ``seconds``."""
    JOBS.labels(kind, outcome).observe(seconds)


def unavailable(reason: str) -> None:
    """A request was answered 503 because of ``reason`` (core/web/errors.py)."""
    UNAVAILABLE.labels(reason).inc()


# --- the database pool ---------------------------------------------------------------


class MeasuredQueuePool(QueuePool):
    """SQLAlchemy's QueuePool, timing each checkout: a checkout that finds no idle
    connection and no room to open one waits (up to DB_POOL_TIMEOUT)."""

    def _do_get(self) -> Any:
        started = time.perf_counter()
        try:
            return super()._do_get()
        finally:
            POOL_WAIT.observe(time.perf_counter() - started)


# A pool logs under its class's module: this one's as quiet as SQLAlchemy's own (WARN).
logging.getLogger(f"{__name__}.{MeasuredQueuePool.__name__}").setLevel(logging.WARNING)


def watch_pool(engine: Engine) -> None:
    """Connections in use and overflow from the pool's checkout/checkin events."""
    pool = engine.pool
    overflow = getattr(pool, "overflow", None)

    def moved(delta: int) -> None:
        POOL_IN_USE.inc(delta)
        if overflow is not None:
            POOL_OVERFLOW.set(max(overflow(), 0))

    event.listen(pool, "checkout", lambda *_: moved(1))
    event.listen(pool, "checkin", lambda *_: moved(-1))
    event.listen(pool, "connect", lambda *_: POOL_EVENTS.labels("connect").inc())
    event.listen(pool, "invalidate", lambda *_: POOL_EVENTS.labels("invalidate").inc())


# --- the Celery queue, read at scrape time ----------------------------------------------


class QueueDepth(Collector):
    """``stores_celery_queue_depth``: messages waiting in each queue of a Redis broker
    (LLEN of the queue's list and of its priority lists), read when scraped."""

    # kombu's Redis transport keeps priorities 3, 6, 9 in lists named queue + SEP + n.
    PRIORITY_SEP = "\x06\x16"

    def __init__(self, broker_url: str, queues: list[str]) -> None:
        import redis  # imported here: only with a Redis broker

        self.client = redis.Redis.from_url(broker_url, socket_timeout=1, socket_connect_timeout=1)
        self.queues = queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "stores_celery_queue_depth", "Tasks waiting in the broker, by queue.", labels=["queue"]
        )
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for queue in self.queues:
                    for suffix in ("", *(f"{self.PRIORITY_SEP}{p}" for p in (3, 6, 9))):
                        pipe.llen(queue + suffix)
                lengths = pipe.execute()
        except Exception:  # noqa: BLE001 - a scrape never fails for the broker's sake
            return
        for index, queue in enumerate(self.queues):
            family.add_metric([queue], sum(lengths[index * 4 : index * 4 + 4]))
        yield family


# --- requests ---------------------------------------------------------------------------


# A method label is one of these or "other": gunicorn passes any token of 3 to 20
# characters, and each made-up method was a new series (2,000 took a scrape from 22 KB
# to 3.4 MB).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _start() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    if started is None:
        return response
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    status = response.status_code
    method = request.method if request.method in METHODS else "other"
    REQUESTS.labels(route, method, str(status)).observe(time.perf_counter() - started)
    if response.headers.get(REPLAYED_HEADER) == "true":
        IDEMPOTENT_REPLAYS.labels(route).inc()
    return response


def _rate_limited(_limit: Any) -> None:
    """Flask-Limiter's on-breach callback: counts, and lets the 429 be answered as usual."""
    rule = request.url_rule
    RATE_LIMITED.labels(rule.rule if rule is not None else "unmatched").inc()


def registry() -> CollectorRegistry:
    """What a scrape reads: every process's files in multiprocess mode, else this
    process's own registry. (The Celery worker may turn multiprocess mode on after this
    module was imported: core/jobs/worker_metrics.py.)"""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    files = CollectorRegistry()
    multiprocess.MultiProcessCollector(files)  # type: ignore[no-untyped-call]
    return files


def _authorized(token: str) -> bool:
    sent = request.headers.get("Authorization", "")
    return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())


def serve_metrics() -> Response:
    """The samples, to a request with the token; errors in the envelope like any other:
    404 when metrics are served to no one (as for an unknown path), 401 (with
    ``WWW-Authenticate: Bearer``) without the token or with another."""
    from core.web.errors import abort  # imported here: errors imports this module

    token = current_app.config["METRICS_TOKEN"]
    if not token:
        abort(404)
    if not _authorized(token):
        if "Authorization" not in request.headers:
            abort(401)  # authorization_required
        abort(401, message="The metrics token is not valid.", error="invalid_token")
    depth = current_app.extensions.get("metrics_queue_depth")
    output = generate_latest(registry())
    if depth is not None:
        extra = CollectorRegistry(auto_describe=False)
        extra.register(depth)
        output += generate_latest(extra)
    return current_app.response_class(output, mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Right after request_log (its before_request first); before the limiter is
    initialised (it reads its breach callback from the config then)."""
    if not app.config["METRICS_ENABLED"]:
        return
    app.before_request(_start)
    app.after_request(_observe)
    app.config["RATELIMIT_ON_BREACH_CALLBACK"] = _rate_limited
    from core.web.extensions import limiter  # imported here: extensions import much

    app.add_url_rule(PATH, "metrics", limiter.exempt(serve_metrics), methods=["GET"])
    broker = app.config.get("CELERY_BROKER_URL", "")
    if broker.startswith(("redis://", "rediss://")):
        app.extensions["metrics_queue_depth"] = QueueDepth(broker, ["celery"])


def init_pool(app: Flask, engine: Engine) -> None:
    """Watches ``engine``'s pool (called once the engine exists)."""
    if app.config["METRICS_ENABLED"]:
        watch_pool(engine)
