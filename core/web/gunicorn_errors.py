"""gunicorn's own refusals in the API's error envelope (§2).

gunicorn answers some requests itself, before the app sees them: a request head over
its limits (414, 431: gunicorn.conf.py sets them to the app's), an unknown ``Expect``
(417), a method it refuses (``get``, 32 letters: 400), a transfer coding it does not
know (501), an error it cannot hand to the app (500). It writes every one of those
answers with a single function, ``gunicorn.util.write_error(sock, status, reason,
message)``, which ``Worker.handle_error`` looks up on the module at each call (every
worker class goes through it). Its answer is an HTML page; :func:`install` (called by
gunicorn.conf.py in each worker, after the fork) puts :func:`write_error` in its place,
which writes the same status as the envelope.

Why this way: gunicorn has no setting or hook for the body of its errors. A worker class
overriding ``handle_error`` would have to copy gunicorn's table of exceptions to statuses
(and would stop gunicorn choosing gthread when ``GUNICORN_THREADS`` > 1); replacing
the one function that formats the answer keeps gunicorn deciding what to refuse and why,
and changes only how it is written. :func:`install` checks the function's signature
first, so a gunicorn that changed it stops the worker at its start instead of quietly
answering HTML (tests/system/test_request_head.py checks the answers).

Only what can be known there goes in: no request was parsed (no path, no
``X-Request-ID`` of the caller, no ``Accept``), so the answer has a request id of its
own (in ``X-Request-ID``, in the body of a 5xx, and in the access line logged for it),
``trace_id`` null, and plain JSON (never problem details). The connection is closed.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import socket
import uuid
from dataclasses import dataclass

import gunicorn.util

from core.web.errors import envelope
from core.web.versions import CURRENT, HEADER

access_log = logging.getLogger("stores.access")

# What gunicorn says in its 431s (gunicorn/http/message.py), read for a precise message.
TOO_MANY_FIELDS = "limit request headers fields'"
FIELD_TOO_LARGE = "fields size"
DETAIL_SHOWN = 200  # characters of gunicorn's reason for a 400, at most
UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True)
class Limits:
    """What the answers take from gunicorn.conf.py: gunicorn's bounds of the request
    head (for the messages) and HSTS_SECONDS (the app's header, on these answers too)."""

    request_line: int
    field_bytes: int
    fields: int
    hsts_seconds: int = 0


LIMITS = Limits(request_line=8190, field_bytes=8190, fields=100)


def message(status: int, detail: str) -> str | None:
    """The envelope's message for gunicorn's ``status`` and its reason ``detail``;
    None: the status's usual message (core/web/errors.py)."""
    if status == 414:
        return f"The request line is over {LIMITS.request_line} bytes."
    if status == 431:
        if detail.endswith(TOO_MANY_FIELDS):
            return f"More than {LIMITS.fields} header fields."
        if FIELD_TOO_LARGE in detail:
            return f"A header field is over {LIMITS.field_bytes} bytes."
        return "The request's header fields are too large."
    if status == 417:
        return "Expect is not understood: only 100-continue is."
    if status != 400:
        return None
    shown = UNPRINTABLE.sub("?", detail)[:DETAIL_SHOWN].rstrip(".")
    return f"Malformed request: {shown}." if shown else None


def answer(status: int, reason: str, detail: str, request_id: str) -> bytes:
    """The whole HTTP response: status line, headers, the envelope."""
    body = envelope(status, message(status, detail), request_id=request_id, trace_id=None)
    # The reason phrase is gunicorn's, from its own table: ASCII, no line breaks.
    data = json.dumps(body).encode()
    headers = [
        f"HTTP/1.1 {status} {reason}",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        f"X-Request-ID: {request_id}",
        f"{HEADER}: {CURRENT}",
        "X-Content-Type-Options: nosniff",
        "Cache-Control: no-store",
    ]
    if LIMITS.hsts_seconds > 0:
        headers.append(
            f"Strict-Transport-Security: max-age={LIMITS.hsts_seconds}; includeSubDomains"
        )
    return "\r\n".join([*headers, "", ""]).encode("latin-1") + data


def write_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error``, answering in the envelope (same arguments)."""
    request_id = uuid.uuid4().hex
    level = logging.ERROR if status_int >= 500 else logging.WARNING
    # gunicorn has logged why (gunicorn.error); this is the request's access line.
    fields = {"request_id": request_id, "status": status_int, "refused_by": "gunicorn"}
    access_log.log(level, "gunicorn refused a request: %s", status_int, extra=fields)
    gunicorn.util.write_nonblock(sock, answer(status_int, reason, str(mesg), request_id))


def install(limits: Limits) -> None:
    """Make gunicorn's own refusals the envelope, in this process (a worker)."""
    global LIMITS  # set once per worker, before its first request
    expected = ["sock", "status_int", "reason", "mesg"]
    found = list(inspect.signature(gunicorn.util.write_error).parameters)
    if found != expected:
        raise RuntimeError(f"gunicorn.util.write_error takes {found}, not {expected}")
    LIMITS = limits
    gunicorn.util.write_error = write_error
