"""gunicorn settings, from the environment (see .env.example and docs/deploying.md)."""

import os
import queue
import shutil
import signal
import tempfile
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from gunicorn.glogging import Logger

from core.web.config import config_from_env
from core.web.env import (
    SERVER_BOUNDS,
    ConfigError,
    env_int,
    env_str,
    head_limits,
    load_env_file,
    log_level,
    server_int,
)

T = TypeVar("T")


def setting(read: Callable[[Mapping[str, str]], T]) -> T:
    """``read(os.environ)``; a value it refuses ends gunicorn with one line naming the
    variable, as a refusal in on_starting does. gunicorn prints the traceback of any
    exception this file raises, but lets SystemExit through: it prints its message."""
    try:
        return read(os.environ)
    except ConfigError as exc:
        raise SystemExit(f"Error: {exc}") from None


def integer(name: str, default: int) -> int:
    read = server_int if name in SERVER_BOUNDS else env_int
    return setting(lambda environ: read(environ, name, default))


# gunicorn started from the project directory reads its .env before anything else,
# so PORT, WEB_CONCURRENCY and LOG_FORMAT may come from it too; the workers inherit
# the result. Real environment variables win.
load_env_file()

# Prometheus metrics of every worker (core/web/metrics.py): each writes its samples to
# files in this folder, a scrape of any worker reads them all. Set before any worker
# imports prometheus_client (it reads the variable on import); a folder of its own per
# master unless the environment names one; emptied when the master starts (on_starting).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="stores-metrics-")

# PORT is what a PaaS sets; a container listens on every interface, a laptop may not.
bind = f"{env_str(os.environ, 'GUNICORN_HOST', '0.0.0.0')}:{integer('PORT', 8000)}"  # noqa: S104
# Sync workers: the app is I/O-bound on PostgreSQL. The cap keeps a big host from
# opening workers x (DB_POOL_SIZE + DB_MAX_OVERFLOW) connections by surprise.
workers = integer("WEB_CONCURRENCY", min(2 * (os.cpu_count() or 1) + 1, 8))
threads = integer("GUNICORN_THREADS", 1)
timeout = integer("GUNICORN_TIMEOUT", 30)
# On SIGTERM, requests in flight get this long to finish before workers are killed.
graceful_timeout = integer("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Recycle workers now and then (jittered, so they do not all restart at once), seldom:
# the soak's workers hold their memory flat, and each new worker costs ~0.5 s of CPU
# (making the app, compiling its first statements): every 1,000 requests, that would
# be a quarter of a cheap request's own CPU (docs/performance.md).
max_requests = integer("GUNICORN_MAX_REQUESTS", 10000)
max_requests_jitter = integer("GUNICORN_MAX_REQUESTS_JITTER", 1000)

# Workers' heartbeat files in memory (gunicorn's advice for containers): a slow
# container filesystem cannot make a healthy worker look hung.
SHM = "/dev/shm"  # noqa: S108 - gunicorn makes its files there with mkstemp
worker_tmp_dir = SHM if os.path.isdir(SHM) else None

# Each worker makes the app and opens its own database pool after the fork: no
# connection is ever shared between processes (the master only imports the modules,
# on_starting).
preload_app = False

# Which proxy headers to believe is decided once, by the app: werkzeug's ProxyFix
# trusts exactly TRUSTED_PROXIES hops of X-Forwarded-For/-Proto/-Host. gunicorn's
# defaults would also take X-Forwarded-Proto from peers on 127.0.0.1 (its
# forwarded_allow_ips), whatever TRUSTED_PROXIES says, so it trusts no one here.
forwarded_allow_ips = ""
secure_scheme_headers: dict[str, str] = {}

# The request head's limits are the app's (MAX_URI_BYTES, MAX_HEADER_BYTES,
# MAX_HEADER_FIELDS; core/web/env.py). gunicorn reads and parses the head before the
# app sees it, in a time that grows with the square of its size: left unbounded, one
# request of megabytes held a worker until the timeout killed it. So gunicorn refuses
# first, at the app's bounds, and its refusals are the app's JSON envelope, not HTML
# (core/web/gunicorn_errors.py, installed in each worker by post_fork); the app's own
# checks (core/web/http.py) remain for other servers (flask run) and for the headers'
# total (MAX_HEADERS_TOTAL_BYTES). With the defaults, a head is parsed up to ~0.8 MB.
# - The request line is the target, the method, two spaces and "HTTP/1.1": 32 bytes
#   more than the target, but gunicorn takes at most 8190 (above, only 0: unlimited),
#   so with the default bound a line over 8190 bytes is its 414, whatever the target.
# - gunicorn counts a field's line with its CRLF; the app, its name, ": " and value.
MAX_URI_BYTES, MAX_HEADER_BYTES, MAX_HEADER_FIELDS = setting(head_limits)
limit_request_line = max(1, min(MAX_URI_BYTES + 32, 8190))
limit_request_field_size = max(1, MAX_HEADER_BYTES + 2)
limit_request_fields = max(1, MAX_HEADER_FIELDS)

# Workers are managed by signals and the orchestrator; a control socket under a
# shared $HOME would also collide between instances on one host.
control_socket_disable = True


class AppLogger(Logger):  # type: ignore[misc]  # gunicorn ships no types
    """gunicorn's logger without an access log: the app writes one line per request
    itself (core/web/request_log.py), so gunicorn neither writes nor even formats one."""

    def access(self, *_args: object, **_kwargs: object) -> None:
        return None


# gunicorn's own messages in the app's format (LOG_FORMAT: JSON, or text on a
# development terminal).
logger_class = AppLogger
accesslog = None
loglevel = setting(log_level).lower()
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"app": {"()": "core.web.request_log.formatter_from_env"}},
    "handlers": {
        "app": {
            "class": "logging.StreamHandler",
            "formatter": "app",
            "stream": "ext://sys.stderr",
        },
    },
    "root": {"level": loglevel.upper(), "handlers": []},
    "loggers": {
        "gunicorn.error": {"handlers": ["app"], "propagate": False},
    },
}


def on_starting(server: object) -> None:
    """Refuse to start on an unsafe configuration, once, in the master, with one line
    naming the variable (core/web/config.py decides; gunicorn prints "Error: ..." and exits 1).
    The configuration's warnings are written here, once: the workers stay silent.
    The metrics folder starts empty (a previous run's counters are not this one's)."""
    from core.web.request_log import WARNED  # imported here: after load_env_file

    config = config_from_env()
    config.validate()
    for message in config.warnings():
        server.log.warning(message)  # type: ignore[attr-defined]
    os.environ[WARNED] = "1"
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
    # The app's modules, imported once here: a worker forks with them loaded. Importing
    # them cost each new worker ~0.9 s of CPU, at every start (max_requests); making
    # the app and answering its first requests, what is left, ~0.5 s. Only the
    # import: each worker still makes its own app, pools and connections.
    import app  # noqa: F401


class _Worker(Protocol):
    """What post_fork and child_exit use of gunicorn's (untyped) worker."""

    pid: int
    alive: bool


class _Arbiter(Protocol):
    """What post_fork reads of gunicorn's (untyped) master."""

    SIG_QUEUE: queue.SimpleQueue[int]


# A worker's stop signals.
_STOPS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def heed_stops_from_the_fork(server: _Arbiter, worker: _Worker) -> None:
    """The worker stops on a stop signal from now on, and on one it got since the fork.

    gunicorn sets a worker's own handlers only after post_fork. Until then the master's
    handler is in place. It only puts the signal in this process's copy of the master's
    queue, which nobody reads. A stop signal sent to the group in that moment was lost,
    and the master waited its graceful_timeout (30 s) to kill the worker: a `make serve`
    stopped by Ctrl-C or SIGTERM just as a worker was forked took 30 s to stop.

    Until its own handlers are set, a stop only marks the worker as not alive: it boots,
    then leaves its loop at once. Not the worker's own handlers: the threaded worker's
    use what it makes while booting, and failed there ("Worker failed to boot", which
    halts the master)."""

    def stop(_signal: int, _frame: object) -> None:
        worker.alive = False

    for number in _STOPS:
        signal.signal(number, stop)
    while True:
        try:
            got = server.SIG_QUEUE.get_nowait()
        except queue.Empty:
            return
        if got in _STOPS:
            worker.alive = False


def post_fork(server: _Arbiter, worker: _Worker) -> None:
    """In each worker, before its first request: stop signals heeded, and gunicorn's
    own refusals (a head over the limits above, a method or an Expect it refuses) in
    the API's envelope."""
    heed_stops_from_the_fork(server, worker)
    from core.web import gunicorn_errors  # imported here: after the metrics' variable

    gunicorn_errors.install(
        gunicorn_errors.Limits(
            request_line=limit_request_line,
            field_bytes=limit_request_field_size - 2,
            fields=limit_request_fields,
            hsts_seconds=env_int(os.environ, "HSTS_SECONDS", 0),
        )
    )


def child_exit(_server: object, worker: _Worker) -> None:
    """A worker is gone: its live gauges (pool connections in use) stop counting."""
    from prometheus_client import multiprocess  # imported here: the variable is set

    # prometheus_client ships py.typed but leaves this one function unannotated.
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
