"""One error envelope for every layer: ``{code, status, message[, errors][, error]}``.

A request whose ``Accept`` asks for ``application/problem+json`` gets the same error as
RFC 9457 problem details (``problem``, made from the envelope; contract §14).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, NoReturn, cast

import flask_smorest
import redis
from flask import Flask, Response, g, has_request_context, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.datastructures import MIMEAccept
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from core.web import metrics
from core.web.tracing import current_trace_id

log = logging.getLogger("stores.errors")

RETRY_AFTER_SECONDS = "5"
PROBLEM_TYPE = "application/problem+json"

# Short, stable messages where Werkzeug's default text is long or unhelpful.
MESSAGES = {
    400: "Malformed request.",
    401: "Authorization required.",
    403: "You are not allowed to do this.",
    404: "Not found.",
    405: "Method not allowed.",
    409: "The request conflicts with the current state of the resource.",
    412: "The resource has changed since you read it (If-Match does not match).",
    413: "Request body too large.",
    415: "Request bodies must be JSON (Content-Type: application/json).",
    422: "Validation failed; see errors.",
    429: "Too many requests.",
    500: "Internal server error.",
    503: "Service temporarily unavailable; try again shortly.",
}
# The statuses a problem's ``type`` links to in the OpenAPI document (core/web/
# negotiation.py puts each there); another status is ``about:blank`` (RFC 9457 §4.2.1).
DOCUMENTED_ERRORS = frozenset({*MESSAGES, 406})
# Every 401, 403 and 409 carries a code (§2); these where the view names none.
DEFAULT_ERRORS = {401: "authorization_required", 403: "forbidden", 409: "conflict"}
# The messages a 400 or 422 lists in ``errors`` at most (a batch of 100 items, each
# missing its name, lists them all); the message says how many were left out. Lists
# are bounded before their elements are read (core/web/fields.py ``List``), but a
# body of 50,000 unknown fields is still 50,000 problems: the answer stays small.
MAX_ERROR_MESSAGES = 100

# flask-smorest's abort (the status and the envelope's fields, sent as the exception's
# data), as what it is: a call that always raises. flask-smorest ships no types, and
# without this a type checker thinks code after ``abort(404)`` can run.
abort = cast(Callable[..., NoReturn], flask_smorest.abort)


def envelope(
    code: int,
    message: str | None = None,
    *,
    errors: dict[str, Any] | None = None,
    error: str | None = None,
    request_id: str | None = None,
    trace_id: str | None = None,
) -> dict[str, Any]:
    """The body of every error response."""
    body: dict[str, Any] = {
        "code": code,
        "status": HTTP_STATUS_CODES.get(code, "Unknown"),
        "message": message or MESSAGES.get(code) or HTTP_STATUS_CODES.get(code, "Error"),
    }
    if errors:
        body["errors"] = errors
    if error or code in DEFAULT_ERRORS:
        # Always on 401/403/409; on a 422 or 429 when the view names the rule (§8, §15).
        body["error"] = error or DEFAULT_ERRORS[code]
    if code >= 500:
        body["request_id"] = request_id
        body["trace_id"] = trace_id
    return body


def refused_early() -> None:
    """Marks the coming 422 as found before the request's handler ran (a body or query
    its schema refuses): Idempotency-Key keeps no such answer (§8), a retry runs afresh.
    A 422 the handler decides (a batch naming another store's item) is kept."""
    g.refused_early = True


def first_messages(errors: dict[str, Any], most: int) -> tuple[dict[str, Any], int]:
    """``errors`` (by location and field) with only its first ``most`` messages, in
    order, and how many messages it held."""
    seen = 0

    def kept(node: Any) -> Any:
        nonlocal seen
        if isinstance(node, dict):
            inner = {name: kept(value) for name, value in node.items()}
            return {name: value for name, value in inner.items() if value is not None} or None
        if isinstance(node, list | tuple):
            return [value for value in map(kept, node) if value is not None] or None
        seen += 1
        return node if seen <= most else None

    return kept(errors) or {}, seen


def problem(body: dict[str, Any], *, docs: str, instance: str) -> dict[str, Any]:
    """The envelope as RFC 9457 problem details: ``type`` is the status's error response
    in the OpenAPI document (``docs``) or ``about:blank``, ``title`` the reason phrase,
    ``status`` the code, ``detail`` the message, ``instance`` the request's path;
    ``code``, ``error``, ``errors``, ``request_id`` (always) and ``trace_id`` are
    extension members."""
    code = body["code"]
    documented = code in DOCUMENTED_ERRORS
    details = {
        "type": f"{docs}#/components/responses/{HTTPStatus(code).name}"
        if documented
        else "about:blank",
        "title": body["status"],
        "status": code,
        "detail": body["message"],
        "instance": instance,
    }
    extensions = {k: v for k, v in body.items() if k not in ("status", "message")}
    return details | extensions


def accepted() -> MIMEAccept:
    """The request's ``Accept``, each media type without its parameters (``q`` apart):
    the API answers in UTF-8, a CSV with its header row, so ``charset=utf-8`` or
    ``header=present`` asks for nothing else. (Werkzeug matches a type only to one with
    the same parameters.)"""
    return MIMEAccept(
        [(value.split(";", 1)[0].strip(), q) for value, q in request.accept_mimetypes]
    )


def wants_problem() -> bool:
    """``Accept`` names application/problem+json, at least as high as plain JSON."""
    if not has_request_context():
        return False
    accept = accepted()
    asked = max((q for value, q in accept if value.lower() == PROBLEM_TYPE), default=0.0)
    plain = max((q for value, q in accept if value.lower() == "application/json"), default=0.0)
    return asked > 0 and asked >= plain


def error_response(
    code: int,
    message: str | None = None,
    *,
    errors: dict[str, Any] | None = None,
    error: str | None = None,
    headers: dict[str, str] | None = None,
) -> ResponseReturnValue:
    if errors:
        errors, count = first_messages(errors, MAX_ERROR_MESSAGES)
        if count > MAX_ERROR_MESSAGES:
            message = (
                f"{message or MESSAGES.get(code, 'See errors.')} The first "
                f"{MAX_ERROR_MESSAGES} of {count} messages are listed."
            )
    body = envelope(
        code,
        message,
        errors=errors,
        error=error,
        request_id=g.get("request_id"),
        trace_id=current_trace_id() if code >= 500 else None,
    )
    headers = dict(headers or {})
    if code == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    if code == 503:
        headers.setdefault("Retry-After", RETRY_AFTER_SECONDS)
    as_problem = wants_problem()
    if as_problem:
        body = problem(
            body | {"request_id": g.get("request_id")},
            docs=f"{request.host_url}openapi.json",
            instance=request.script_root + request.path,
        )
    response = jsonify(body)
    if as_problem:
        response.mimetype = PROBLEM_TYPE
    response.status_code = code
    response.headers.update(headers)
    return response


def handle_http_exception(exc: HTTPException) -> ResponseReturnValue:
    """Werkzeug, webargs/flask-smorest ``abort`` and Flask-Limiter errors."""
    data = getattr(exc, "data", None) or {}
    # Keep the headers the exception carries, e.g. Allow on a 405.
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    headers.update(data.get("headers") or {})
    if exc.code == 304:
        return Response(status=304, headers=headers)
    errors = data.get("errors") or data.get("messages")
    message = data.get("message")
    if message is None and exc.code == 400 and errors and "json" in errors:
        message = "Malformed JSON body."
    if message is None and exc.code == 429:
        message = f"Too many requests: the limit is {exc.description}."
    if message is None and exc.code == 404:
        message = "Not found: no resource at this path."
    return error_response(
        exc.code or 500, message, errors=errors, error=data.get("error"), headers=headers
    )


def handle_unavailable(exc: Exception) -> ResponseReturnValue:
    """The database or Redis cannot be reached: a retryable 503, never a traceback."""
    log.error("dependency unavailable: %s: %s", type(exc).__name__, str(exc).splitlines()[0])
    metrics.unavailable(unavailable_reason(exc))
    return error_response(503)


def unavailable_reason(exc: Exception) -> str:
    """What failed, for the metric: a statement that ran past statement_timeout
    (SQLSTATE 57014), a full pool, the database, or Redis."""
    if isinstance(exc, PoolTimeoutError):
        return "pool_timeout"
    if isinstance(exc, redis.exceptions.RedisError):
        return "redis"
    if getattr(getattr(exc, "orig", None), "sqlstate", None) == "57014":
        return "statement_timeout"
    return "database"


def handle_integrity_error(exc: IntegrityError) -> ResponseReturnValue:
    """A constraint the view did not anticipate; the database refused the write."""
    log.warning("integrity error: %s", str(exc.orig).splitlines()[0])
    return error_response(409)


def handle_unexpected(_exc: Exception) -> ResponseReturnValue:
    log.exception("unhandled exception")
    return error_response(500)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http_exception)
    for exc_type in (
        OperationalError,
        InterfaceError,
        PoolTimeoutError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
    ):
        app.register_error_handler(exc_type, handle_unavailable)
    app.register_error_handler(IntegrityError, handle_integrity_error)
    app.register_error_handler(Exception, handle_unexpected)
