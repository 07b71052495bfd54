"""The thesis's singular paths, still answered, but deprecated.

This is the one place that maps them: a WSGI middleware rewrites ``/item/7`` to
``/items/7`` before Flask routes the request, so the canonical view answers, and
adds ``Deprecation`` (RFC 9745), ``Sunset`` (RFC 8594) and a ``successor-version``
link to the response. The old paths are not in the OpenAPI document, nor served
under ``/v1``.

Only a well-formed id (what ``<id:...>`` routes accept) is rewritten, so nothing a
client sends other than digits ever reaches the ``Link`` header: a path such as
``/item/1%0D%0ASet-Cookie:...`` is left alone and gets the ordinary 404.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from core.web.smorest import IdConverter
from core.web.versions import PREFIXED

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

LEGACY_PATHS = {
    "/store": "/stores",
    "/store/{id}": "/stores/{id}",
    "/store/{id}/tag": "/stores/{id}/tags",
    "/item": "/items",
    "/item/{id}": "/items/{id}",
    "/item/{id}/tag/{tag_id}": "/items/{id}/tags/{tag_id}",
    "/items/{id}/tag/{tag_id}": "/items/{id}/tags/{tag_id}",
    "/tag/{id}": "/tags/{id}",
    "/user/{id}": "/users/{id}",
}
DEPRECATED_SINCE = "@1795219200"  # 2026-11-21, as an RFC 9745 date


def _compile(template: str) -> re.Pattern[str]:
    # Matched with fullmatch: "$" would also match before a trailing newline.
    return re.compile(re.sub(r"\{(\w+)\}", rf"(?P<\1>{IdConverter.regex})", template) + "/?")


class LegacyPaths:
    def __init__(self, app: WSGIApplication, sunset: str) -> None:
        self.app = app
        self.sunset = sunset
        self.routes = [(_compile(old), new) for old, new in LEGACY_PATHS.items()]

    def canonical(self, path: str) -> str | None:
        for pattern, template in self.routes:
            match = pattern.fullmatch(path)
            if match:
                return template.format(**match.groupdict())
        return None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        # Under /v1 (core/web/versions.py) only the plural paths are served.
        versioned = PREFIXED in environ
        canonical = None if versioned else self.canonical(environ.get("PATH_INFO", ""))
        if canonical is None:
            return self.app(environ, start_response)
        environ["PATH_INFO"] = canonical
        script_root = environ.get("SCRIPT_NAME", "")

        def start_deprecated(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            headers = [
                *headers,
                ("Deprecation", DEPRECATED_SINCE),
                ("Sunset", self.sunset),
                ("Link", f'<{script_root}{canonical}>; rel="successor-version"'),
            ]
            return start_response(status, headers, exc_info)

        return self.app(environ, start_deprecated)
