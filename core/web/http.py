"""HTTP behaviour every response shares: the request head's bounds (414, 431), JSON
request bodies (415, chunked bodies), security and cache headers, and the CORS
options."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, g, request
from gunicorn.http.errors import ParseException

from core.web.errors import RETRY_AFTER_SECONDS, abort
from core.web.idempotency import HEADER as IDEMPOTENCY_HEADER

BODY_METHODS = {"POST", "PUT", "PATCH"}
MALFORMED_CHUNKS = "The body's chunked encoding is malformed or cut off."
CUT_BODY = "The body ended before its Content-Length."

# For the origins in CORS_ORIGINS: the request headers a browser client may send,
# and the response headers its scripts may read.
CORS_OPTIONS: dict[str, Any] = {
    "allow_headers": [
        "Authorization",
        "Content-Type",
        "Idempotency-Key",
        "If-Match",
        "If-Modified-Since",
        "If-None-Match",
        "If-Unmodified-Since",
        "X-Request-ID",
    ],
    "expose_headers": [
        "API-Version",
        "ETag",
        "Idempotent-Replayed",
        "Link",
        "Location",
        "Retry-After",
        "X-Pagination",
        "X-Request-ID",
        "X-Total-Count",
        "X-Total-Count-Estimate",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    ],
    "max_age": 600,
}


def takes_csv(limit_setting: str) -> Callable[[Any], Any]:
    """Marks a view whose body is CSV (an import, §12), of at most the config value
    ``limit_setting`` bytes: it checks its own content type and reads its body as a
    stream. Put it above the view's other decorators."""

    def mark(view: Any) -> Any:
        view.takes_csv = limit_setting
        return view

    return mark


def _csv_limit_setting() -> str | None:
    view = current_app.view_functions.get(request.endpoint or "")
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        view = getattr(view_class, request.method.lower(), None)
    return getattr(view, "takes_csv", None)


def require_json_body() -> None:
    """A body in anything but JSON is refused with 415 before any view runs."""
    # An unknown path or method answers 404/405 whatever its body (the router's error
    # is raised after this hook).
    if request.method not in BODY_METHODS or request.routing_exception is not None:
        return
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    length = None if chunked else request.content_length
    if chunked or length:  # before anything reads it (request.stream is made once, from it)
        request.environ["wsgi.input"] = BodyInput(request.environ["wsgi.input"], length)
    setting = _csv_limit_setting()
    if setting is not None:  # its own size limit, for whoever reads it (idempotency too)
        limit = current_app.config[setting]
        if length is not None and length > limit:
            abort(413, message=f"The file is over {limit:,} bytes ({setting}).")
        # One byte more: where the server terminates the input (gunicorn), Werkzeug's
        # limit refuses the read after the last byte, so a body of exactly the limit,
        # read to its end, was a 413. Over the limit, the reader refuses it (the view).
        request.max_content_length = limit + 1
        # The view streams the body (Werkzeug refuses it past the limit), but an
        # Idempotency-Key's fingerprint reads it whole with get_data(), which would
        # stop at the limit without an error: the view would import a cut file.
        if chunked and IDEMPOTENCY_HEADER in request.headers:
            _buffer_chunked_body(limit)
        return
    if not (request.content_length or chunked):
        return
    mimetype = request.mimetype
    if not (mimetype == "application/json" or mimetype.endswith("+json")):
        abort(415)
    if chunked:
        _buffer_chunked_body(current_app.config["MAX_CONTENT_LENGTH"])


class BodyInput:
    """The body's ``wsgi.input``, read through the checks the server leaves to the app,
    wherever the app reads (a JSON body, an import's CSV stream):

    - chunked: the server decodes the chunks as the app reads, so a malformed chunk, or
      a body cut off before its last chunk, surfaces from a read: gunicorn raises its
      ParseException (InvalidChunkSize, ChunkMissingTerminator, ...) or NoMoreData, an
      OSError; werkzeug's dev server, an OSError.
    - with a Content-Length: gunicorn hands over what arrived, and a body cut off before
      its length just ends early (Werkzeug trusts a server that terminates the input),
      so an import took the half of a file that came, a JSON body what parsed. A read
      that ends before the length, or fails, is the cut.

    Either is the client's error: 400 in the envelope, where the request would otherwise
    end in a 500, or go through with a part of its body."""

    def __init__(self, stream: Any, length: int | None) -> None:
        self.stream = stream
        self.left = length  # None: chunked
        self.message = MALFORMED_CHUNKS if length is None else CUT_BODY

    def read(self, *size: int | None) -> bytes:
        to_end = not size or size[0] is None or size[0] < 0
        return self._checked(self.stream.read, size, to_end=to_end)

    def readline(self, *size: int | None) -> bytes:
        return self._checked(self.stream.readline, size, to_end=False)

    def _checked(
        self, read: Callable[..., Any], size: tuple[int | None, ...], *, to_end: bool
    ) -> bytes:
        try:
            data = bytes(read(*size))
        except (ParseException, OSError):
            abort(400, message=self.message)
        if self.left is not None:
            self.left -= len(data)
            ended = to_end or (not data and size != (0,))
            if self.left > 0 and ended:
                abort(400, message=self.message)
        return data


def _buffer_chunked_body(limit: int) -> None:
    """Read a chunked body (which has no Content-Length) up front, refusing it whole
    when it is over ``limit`` bytes. Werkzeug would stop reading it at the limit
    without an error, and the view would then parse a truncated body."""
    body = request.environ["wsgi.input"].read(limit + 1)
    if len(body) > limit:
        abort(413)
    request.environ.update(
        {
            "wsgi.input": io.BytesIO(body),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input_terminated": False,
        }
    )
    request.environ.pop("HTTP_TRANSFER_ENCODING", None)


def security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.method == "OPTIONS" and response.status_code == 200 and not response.data:
        # Flask's own OPTIONS (and a CORS preflight): an Allow and no body, said as a
        # 204, not an empty text/html 200.
        response.status_code = 204
    if response.status_code in (204, 304):  # no body, so no type (RFC 9110 §8.3)
        response.headers.pop("Content-Type", None)
    # No error is kept by a cache: those of the views say so already; a routing 404 or
    # 405 said nothing, and a 404 is cacheable by default (RFC 9111 §4.2.2).
    if response.status_code >= 400:
        response.headers.setdefault("Cache-Control", "no-store")
    # Flask-Limiter writes its reset time as Retry-After on every response, over
    # ours too. It belongs on its own 429s; a 503 gets the service's retry hint.
    if response.status_code == 503:
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    elif response.status_code != 429:
        response.headers.pop("Retry-After", None)
    if g.get("retry_after"):  # a hint of our own, e.g. idempotency_key_in_use (409)
        response.headers["Retry-After"] = g.retry_after
    hsts = current_app.config.get("HSTS_SECONDS", 0)
    if hsts > 0:
        response.headers.setdefault(
            "Strict-Transport-Security", f"max-age={hsts}; includeSubDomains"
        )
    return response


def no_store(response: Response) -> Response:
    """Tokens and account data never sit in a cache."""
    response.headers["Cache-Control"] = "no-store"
    return response


def public_cache(response: Response) -> Response:
    """Catalog reads may be cached anywhere, but revalidated with their ETag first;
    those that show what only the caller may see (draft items, §13) are the caller's."""
    if request.method in ("GET", "HEAD") and response.status_code in (200, 304):
        if g.get("caller_specific"):
            response.headers.setdefault("Cache-Control", "private, no-cache")
            response.vary.add("Authorization")
        response.headers.setdefault("Cache-Control", "public, no-cache")
    else:
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _request_target(environ: dict[str, Any]) -> str:
    """The request line's target as sent (gunicorn: RAW_URI), else rebuilt."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    query = environ.get("QUERY_STRING", "")
    return f"{environ.get('PATH_INFO', '')}{f'?{query}' if query else ''}"


def _header_fields(environ: dict[str, Any]) -> list[tuple[str, str]]:
    fields = [(k[5:], str(v)) for k, v in environ.items() if k.startswith("HTTP_")]
    fields += [(k, str(environ[k])) for k in ("CONTENT_TYPE", "CONTENT_LENGTH") if k in environ]
    return fields


def refuse_oversized_head() -> None:
    """414 for a request target over MAX_URI_BYTES; 431 for a header field over
    MAX_HEADER_BYTES, more than MAX_HEADER_FIELDS fields, or more than
    MAX_HEADERS_TOTAL_BYTES in all — in the envelope. gunicorn's own limits are set
    above these (gunicorn.conf.py), so that the app decides and answers in JSON.
    (WSGI joins repeated fields of one name into one: it counts once, and its joined
    value is bounded like any other.)"""
    config = current_app.config
    environ = request.environ
    target = _request_target(environ)
    if len(target.encode("latin-1", "replace")) > config["MAX_URI_BYTES"]:
        abort(414, message=f"The request target is over {config['MAX_URI_BYTES']} bytes.")
    fields = _header_fields(environ)
    sizes = [len(name) + 2 + len(value.encode("latin-1", "replace")) for name, value in fields]
    if len(fields) > config["MAX_HEADER_FIELDS"]:
        abort(431, message=f"More than {config['MAX_HEADER_FIELDS']} header fields.")
    if sizes and max(sizes) > config["MAX_HEADER_BYTES"]:
        name = fields[sizes.index(max(sizes))][0].replace("_", "-").title()
        abort(431, message=f"The {name} header is over {config['MAX_HEADER_BYTES']} bytes.")
    if sum(sizes) > config["MAX_HEADERS_TOTAL_BYTES"]:
        abort(431, message=f"The headers are over {config['MAX_HEADERS_TOTAL_BYTES']} bytes.")


def refuse_empty_segments() -> None:
    """A path with an empty segment (``/items//3``, ``//items``, ``/v1//items``) is no
    route: 404, as the router answers an unknown path. The router would otherwise
    strip the leading slashes (``//items`` served as ``/items``); merging the others is
    off (app.py), as werkzeug merges them by a redirect built from the Host header."""
    if "//" in request.environ.get("PATH_INFO", ""):
        abort(404)


def init_app(app: Flask) -> None:
    """Call right after request logging: a head out of bounds is refused first, then a
    path that is no route, before its body is judged."""
    app.before_request(refuse_oversized_head)
    app.before_request(refuse_empty_segments)
    app.before_request(require_json_body)
    app.after_request(security_headers)
