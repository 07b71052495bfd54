"""Last-Modified and the date preconditions (contract §14, §16; RFC 9110 §13).

The ETag preconditions (If-None-Match, If-Match) are flask-smorest's, adapted in
core/web/smorest.py's Blueprint, which calls these beside them:

- A single read states its ``last_modified`` (``Blueprint.set_last_modified``); the
  response carries ``Last-Modified``, and ``If-Modified-Since`` gives 304 when the
  resource has not changed since — unless ``If-None-Match`` is sent, which then
  decides alone (RFC 9110 §13.2.2).
- A change (PUT, PATCH, DELETE) with ``If-Unmodified-Since`` is refused with 412 when
  the resource changed since — unless ``If-Match`` is sent, which then decides alone.

HTTP dates have whole seconds. ``Last-Modified`` is ``updated_at`` truncated to the
second, and conditions compare that truncated time: a resource changed twice within
one second looks unchanged to a client that holds the first of those versions'
date. The ETag tells them apart; clients that need certainty use it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Response, request
from werkzeug.http import http_date

from core.web.errors import abort


def to_second(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(microsecond=0)


def set_header(response: Response, last_modified: datetime) -> None:
    response.headers["Last-Modified"] = http_date(to_second(last_modified))


def not_modified(last_modified: datetime) -> bool:
    """A GET or HEAD whose If-Modified-Since is at or after ``last_modified``
    (ignored when If-None-Match is sent, or when the date is not a valid one)."""
    if request.method not in ("GET", "HEAD") or "If-None-Match" in request.headers:
        return False
    since = request.if_modified_since
    return since is not None and to_second(last_modified) <= since


def check_unmodified_since(last_modified: datetime) -> None:
    """412 when If-Unmodified-Since is sent (without If-Match) and the resource
    changed after it."""
    if "If-Match" in request.headers:
        return
    since = request.if_unmodified_since
    if since is not None and to_second(last_modified) > since:
        abort(
            412,
            message="The resource has changed since the date you sent "
            "(If-Unmodified-Since); read it again.",
        )


# OpenAPI documentation of the header on a single read: @blp.response(..., headers=LAST_MODIFIED).
LAST_MODIFIED = {
    "Last-Modified": {
        "description": "When the representation last changed, to the second "
        "(If-Modified-Since on a GET, If-Unmodified-Since on a change compare with it)",
        "schema": {"type": "string"},
        "example": "Sat, 21 Nov 2026 10:00:00 GMT",
    }
}


# The request headers, documented where they apply (core/web/smorest.py).
DATE_HEADERS = {
    "IF_MODIFIED_SINCE": {
        "name": "If-Modified-Since",
        "description": "An HTTP date: 304 when the resource has not changed since "
        "(ignored with If-None-Match)",
        "schema": {"type": "string"},
        "required": False,
    },
    "IF_UNMODIFIED_SINCE": {
        "name": "If-Unmodified-Since",
        "description": "An HTTP date: 412 when the resource has changed since "
        "(ignored with If-Match)",
        "schema": {"type": "string"},
        "required": False,
    },
}
