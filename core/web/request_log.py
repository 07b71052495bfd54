"""Request ids and logs: one line per request and per error, as JSON or as text.

``LOG_FORMAT`` chooses: ``json`` (one object per line, for a log store) or ``text``
(a line a person reads in a terminal). Unset, production writes JSON and development
writes text when stderr is a terminal, JSON when it goes to a file or a pipe.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote

from flask import Flask, Response, g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter as LibraryJsonFormatter

from core.web.tracing import current_ids

# A caller's id is kept if it is short and printable; anything else is replaced,
# so that it cannot forge log lines or headers. At most 64 characters: what the events'
# and audit entries' request_id columns hold (a longer one failed every write).
SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,64}")
# Attributes every LogRecord has; anything else was passed as ``extra`` and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# Terminal colour codes: werkzeug's development server paints its messages with them.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# The access line's message already says these; text lines do not repeat them (nor
# the span id, which only a trace viewer needs).
_IN_ACCESS_MESSAGE = {"method", "path", "status", "span_id"}
# Query parameters whose values are never written: a secret sent in a URL stays out of
# the logs. A cursor is long and says nothing to a reader: its start is enough.
SECRET_PARAMETER = re.compile(r"token|password|passwd|secret|key|auth|signature", re.IGNORECASE)
CURSOR_SHOWN = 12
QUERY_LIMIT = 512  # characters of a query string written, at most

access_log = logging.getLogger("stores.access")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The request id (inside a request) and every field passed as ``extra``."""
    fields: dict[str, Any] = {}
    if has_request_context() and g.get("request_id"):
        fields["request_id"] = g.request_id
    fields |= {k: v for k, v in vars(record).items() if k not in _STANDARD}
    return fields


def _stamp_trace(factory: Any) -> Any:
    """A LogRecord factory that writes the current trace and span ids on each record
    as it is made (not when formatted: a handler may format it later, elsewhere)."""

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = factory(*args, **kwargs)
        trace_id, span_id = current_ids()
        if trace_id is not None:
            record.trace_id = trace_id
            record.span_id = span_id
        return record

    make.stamps_trace = True  # type: ignore[attr-defined]
    return make


def install_trace_stamp() -> None:
    """Once per process, whatever number of apps is made."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "stamps_trace", False):
        logging.setLogRecordFactory(_stamp_trace(factory))


class JsonFormatter(LibraryJsonFormatter):
    """One JSON object per line (python-json-logger): time, level, logger, message,
    request id, trace and span ids, and the fields passed as ``extra``. Colour codes
    are dropped: a log store shows them as ``\\u001b[31m``."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            reserved_attrs=[*_STANDARD],
            json_default=str,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        super().add_fields(log_data, record, message_dict)
        log_data["message"] = ANSI_ESCAPE.sub("", str(log_data.get("message", "")))
        log_data |= _fields(record)


class TextFormatter(logging.Formatter):
    """``12:00:01.234 INFO  stores.access  GET /items 200  duration_ms=3.1 user_id=2 ...``:
    local time, level, logger, message, then the extra fields that have a value."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        fields = _fields(record)
        if record.name == access_log.name:
            fields = {k: v for k, v in fields.items() if k not in _IN_ACCESS_MESSAGE}
        extras = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and v is not False)
        line = f"{when} {record.levelname:<7} {record.name}  {record.getMessage()}"
        line = f"{line}  {extras}" if extras else line
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


FORMATTERS: dict[str, type[logging.Formatter]] = {"json": JsonFormatter, "text": TextFormatter}


def choose_format(setting: str, app_env: str, stream: TextIO) -> str:
    """``setting`` (LOG_FORMAT) if given; else JSON in production and wherever the
    lines go to a file or a pipe (a log collector), text on a developer's terminal."""
    if setting:
        return setting
    if app_env != "production" and stream.isatty():
        return "text"
    return "json"


def formatter_from_env(environ: Mapping[str, str] | None = None) -> logging.Formatter:
    """The formatter LOG_FORMAT and APP_ENV call for, for stderr (gunicorn.conf.py)."""
    environ = os.environ if environ is None else environ
    setting = environ.get("LOG_FORMAT", "").strip().lower()
    app_env = environ.get("APP_ENV", "").strip().lower() or "development"
    return FORMATTERS.get(choose_format(setting, app_env, sys.stderr), JsonFormatter)()


class AppHandler(logging.StreamHandler[TextIO]):
    """stderr, one line per record, in the chosen format."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(formatter)


class NotWerkzeugAccess(logging.Filter):
    """Drops the development server's own line per request: the app writes one already
    (``stores.access``, with the request id and timing). Its other messages stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        # werkzeug.serving.WSGIRequestHandler.log_request: '<client> - - [<date>] "%s" %s %s'
        return not (isinstance(record.msg, str) and record.msg.endswith('"%s" %s %s'))


def configure_logging(level: str = "INFO", fmt: str | None = None) -> None:
    """Send every logger's records to stderr, in ``fmt`` (json or text; None = chosen
    from the environment). Idempotent: a second call replaces the handler of the
    first, and leaves other handlers alone."""
    formatter = FORMATTERS[fmt]() if fmt else formatter_from_env()
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, AppHandler)]
    root.addHandler(AppHandler(formatter))
    root.setLevel(level)
    werkzeug = logging.getLogger("werkzeug")
    if not any(isinstance(f, NotWerkzeugAccess) for f in werkzeug.filters):
        werkzeug.addFilter(NotWerkzeugAccess())


def _start_request() -> None:
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    g.started = time.perf_counter()


def logged_query() -> str | None:
    """The query string as logged: a secret's value replaced, a cursor shortened,
    the whole bounded; None without one."""
    if not request.query_string:
        return None
    parts = []
    for name, value in request.args.items(multi=True):
        if SECRET_PARAMETER.search(name):
            value = "[redacted]"
        elif name == "cursor" and len(value) > CURSOR_SHOWN:
            value = value[:CURSOR_SHOWN] + "..."
        parts.append(f"{quote(name, safe='')}={quote(value, safe='.,:[]')}")
    query = "&".join(parts)
    return query if len(query) <= QUERY_LIMIT else query[:QUERY_LIMIT] + "..."


def stream_outcome() -> dict[str, Any]:
    """Called by a view that streams its body (a CSV export): its access line is
    written when the stream ends, not when it starts, with the whole transfer's duration.
    The stream writes ``cut`` (the error's class) and ``rows_sent`` in the dict
    returned if it fails after its first byte: the one line then says so, at ERROR."""
    outcome: dict[str, Any] = {}
    g.stream_outcome = outcome
    return outcome


def _write_access(level: int, status: int, fields: dict[str, Any], started: float) -> None:
    fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
    access_log.log(level, "%s %s %s", fields["method"], fields["path"], status, extra=fields)


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id") or uuid.uuid4().hex
    response.headers["X-Request-ID"] = request_id
    status = response.status_code
    level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
    started = g.get("started", time.perf_counter())
    fields = {
        "request_id": request_id,
        "method": request.method,
        "path": request.script_root + request.path,  # /v1/... as sent
        "query": logged_query(),
        "status": status,
        "duration_ms": None,  # when the line is written
        "user_id": g.get("user_id"),
        "api_key_id": g.get("api_key_id"),
        "idempotent_replayed": response.headers.get("Idempotent-Replayed") == "true",
        "client_ip": request.remote_addr,
    }
    outcome = g.get("stream_outcome")
    if outcome is not None and response.is_streamed:
        # The line is written when the server closes the response (after the last byte,
        # or after a cut): by then the request context is gone, so it is built now.
        def when_sent() -> None:
            fields.update(outcome)
            _write_access(logging.ERROR if outcome else level, status, fields, started)

        response.call_on_close(when_sent)
        return response
    _write_access(level, status, fields, started)
    return response


# Set once the configuration's warnings have been written: the processes this one
# starts (gunicorn's workers, a reloader's child) inherit it and stay silent.
WARNED = "STORES_CONFIG_WARNED"


def _cli_not_serving(argv: list[str]) -> bool:
    """``flask --help``, ``flask create-admin``, ``flask db upgrade``: any ``flask``
    command but ``run`` loads the app without serving it, so a warning about serving
    (a development secret) would be noise, repeated at every command."""
    program = os.path.basename(argv[0]) if argv else ""
    return program == "flask" and "run" not in argv[1:]


def warn_once(logger: logging.Logger, messages: list[str]) -> None:
    """One line per configuration warning per process group (see ``WARNED``)."""
    if not messages or os.environ.get(WARNED) or _cli_not_serving(sys.argv):
        return
    for message in messages:
        logger.warning(message)
    os.environ[WARNED] = "1"


def init_app(app: Flask) -> None:
    """Register first, so the id exists before any other hook can fail, and the
    access line is written after every other hook has shaped the response."""
    fmt = choose_format(app.config.get("LOG_FORMAT", ""), app.config["APP_ENV"], sys.stderr)
    configure_logging(app.config.get("LOG_LEVEL", "INFO"), fmt)
    install_trace_stamp()
    app.before_request(_start_request)
    app.after_request(_finish_request)
