"""API versions (contract §14): ``/v1/...`` and ``Accept: application/vnd.stores.v1+json``.

There is one registration of every route. ``/v1`` is a mount point, not a copy: a WSGI
middleware moves the prefix from ``PATH_INFO`` to ``SCRIPT_NAME`` before Flask routes
the request, exactly as a server mounting the app under ``/v1`` would. So the same view
answers ``/items`` and ``/v1/items``, and every URL the app writes (``Location``,
``Link``, a job's links) keeps the prefix the client used. The unprefixed paths are
version 1 too, the default, and stay (they are not deprecated); the deprecated singular
paths (core/web/legacy.py) are not served under ``/v1``.

Every response says ``API-Version: 1``. A version that does not exist is 404 on a path
(``/v2/items``) and 406 in ``Accept`` (core/web/negotiation.py), both naming the
versions there are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Flask, Response, request
from werkzeug.exceptions import NotFound

from core.web.errors import abort

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

SUPPORTED = ("1",)
CURRENT = SUPPORTED[-1]
HEADER = "API-Version"
# Set in the WSGI environment of a request that came in under a version's prefix.
PREFIXED = "stores.version_prefix"
VENDOR_TYPES = {f"application/vnd.stores.v{v}+json": v for v in SUPPORTED}
VENDOR_TYPE = re.compile(r"application/vnd\.stores\.v([^+;,\s]*)\+json", re.IGNORECASE)
_PATH_VERSION = re.compile(r"/v(\d+)(?=/|$)")


def supported_text() -> str:
    return ", ".join(SUPPORTED)


class VersionPrefix:
    """WSGI middleware: ``/v1/items`` is ``/items`` mounted at ``/v1``."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self.prefixes = [f"/v{v}" for v in SUPPORTED]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        for prefix in self.prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix) :] or "/"
                environ[PREFIXED] = prefix
                break
        return self.app(environ, start_response)


def refuse_unknown_version() -> None:
    """``/v2/...`` (or ``/v0``): 404 in the envelope, naming the versions there are."""
    if not isinstance(request.routing_exception, NotFound):
        return
    match = _PATH_VERSION.match(request.path)
    if match and match.group(1) not in SUPPORTED:
        abort(
            404,
            message=f"API version {match.group(1)} does not exist; "
            f"supported versions: {supported_text()} (/v{CURRENT}/...).",
        )


def version_header(response: Response) -> Response:
    response.headers[HEADER] = CURRENT
    return response


def init_app(app: Flask) -> None:
    app.before_request(refuse_unknown_version)
    app.after_request(version_header)
