"""The Celery worker's own ``/metrics`` (docs/observability.md): events written,
webhook deliveries and jobs happen in the worker, not in gunicorn, so the worker
answers for them on a port of its own (``WORKER_METRICS_PORT``), with the same bearer
token as the API's ``/metrics`` (``METRICS_TOKEN``). Prometheus scrapes it as a second
target; it works wherever the worker runs (another container, another host).

A prefork worker does its tasks in child processes: each child writes its samples to
files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, as under
gunicorn) and the main process, which serves the port, reads them all. The folder is
the worker's own and is emptied when the worker starts; without the variable, the
worker makes one.
"""

from __future__ import annotations

import hmac
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from celery import Celery
from celery.signals import worker_init, worker_process_shutdown
from flask import Flask
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, multiprocess, values

from core.web import metrics

log = logging.getLogger("stores.jobs")
VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class _Quiet(WSGIRequestHandler):
    def log_message(self, *_args: Any) -> None:  # a scrape a second: not worth a line
        return None


def metrics_app(token: str) -> Callable[..., Iterable[bytes]]:
    """A WSGI app: ``GET /metrics`` with ``Authorization: Bearer <token>``."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != metrics.PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Not found: the worker serves /metrics only.\n"]
        sent = environ.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            start_response("401 Unauthorized", [("WWW-Authenticate", "Bearer")])
            return [b""]
        output = generate_latest(metrics.registry())
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [output]

    return serve


def _multiprocess_folder() -> None:
    """Make sure the pool's children will write to an empty folder of the worker's
    own. Runs in the main process before the pool forks: the samples of this module's
    labelled metrics (events, deliveries, jobs) are made on first use, so a value class
    chosen now is the one the children use."""
    folder = os.environ.get(VARIABLE)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)
    else:
        os.environ[VARIABLE] = tempfile.mkdtemp(prefix="stores-worker-metrics-")
    # prometheus_client reads the variable when imported, which was before this.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def serve(host: str, port: int, token: str) -> WSGIServer:
    """Serve the worker's metrics in a daemon thread of this process."""
    server = make_server(host, port, metrics_app(token), handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def _started(sender: Any = None, **_kwargs: Any) -> None:
    """``worker_init``: in the worker's main process, before its pool starts."""
    settings = getattr(getattr(sender, "app", None), "stores_metrics", None)
    if not settings:
        return
    _multiprocess_folder()
    host, port, token = settings
    server = serve(host, port, token)
    log.info("worker metrics on %s:%s/metrics", host, server.server_port)


def _child_ended(pid: int | None = None, **_kwargs: Any) -> None:
    """A pool child is gone: its live gauges stop counting (counters stay)."""
    if os.environ.get(VARIABLE):
        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]


def init_app(app: Flask, celery: Celery) -> None:
    """Serve the worker's metrics when it starts, if METRICS_TOKEN and
    WORKER_METRICS_PORT are set (and metrics are on)."""
    config = app.config
    if config["METRICS_ENABLED"] and config["METRICS_TOKEN"] and config["WORKER_METRICS_PORT"]:
        celery.stores_metrics = (  # read by _started in the worker process
            config["WORKER_METRICS_HOST"],
            config["WORKER_METRICS_PORT"],
            config["METRICS_TOKEN"],
        )
    worker_init.connect(_started, weak=False, dispatch_uid="stores-worker-metrics")
    worker_process_shutdown.connect(_child_ended, weak=False, dispatch_uid="stores-metrics-child")
