"""Content negotiation (contract §14, §16): what ``Accept`` chooses, and ``Vary``.

An operation of the API offers the media types its OpenAPI response declares: JSON
(``application/json``, or the version's own ``application/vnd.stores.v1+json``, which is
then the response's ``Content-Type``), or what it declares instead (CSV). The lists of
items also offer ``text/csv``: they answer it with their export (§9, resources/exports.py),
the whole filtered list, streamed, with the export's parameters and refusals. An
``Accept`` that none of them satisfies is 406 in the envelope, naming what is offered
(and the versions, when it asked for one that does not exist). A type's parameters
other than ``q`` are not matched (``text/csv; charset=utf-8`` is the CSV).
``application/problem+json`` asks for errors as problem details (core/web/errors.py): it
never causes a 406 nor stops one, the other types in ``Accept`` are judged without it.

The docs, Swagger UI's files and ``/metrics`` are not negotiated.

``Vary``: every operation's response depends on ``Accept`` (the media type, and the
form of its errors); with ``CORS_ORIGINS`` set (and not ``*``) every response depends
on ``Origin`` (flask-cors adds ``Access-Control-Allow-Origin`` only for an allowed
origin, and says ``Vary: Origin`` only when several are configured), so a shared cache
never serves one origin's answer to another.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MIMEAccept

from core.web import query, versions
from core.web.errors import DOCUMENTED_ERRORS, PROBLEM_TYPE, abort, accepted

JSON = "application/json"
CSV = "text/csv"
JSON_TYPES = (JSON, *versions.VENDOR_TYPES)

# A list whose rows also come as CSV, and the export that writes them.
CSV_ALTERNATIVES = {"items.Items": "exports.ItemsCsv", "stores.StoreItems": "exports.StoreItemsCsv"}


def offered(view: Any, endpoint: str | None) -> list[str]:
    """The media types an operation answers with ([] for what is not an operation); a
    list's CSV only to a read."""
    apidoc = getattr(view, "_apidoc", None)
    if apidoc is None:
        return []
    responses = apidoc.get("response", {}).get("responses", {})
    success = [r for status, rs in responses.items() if status < 300 for r in rs]
    declared = {r.get("content_type") for r in success if isinstance(r, dict)}
    types = sorted(t for t in declared if t and t not in JSON_TYPES)
    if not types:
        types = list(JSON_TYPES)
    if endpoint in CSV_ALTERNATIVES and request.method in ("GET", "HEAD"):
        types.append(CSV)
    return types


def _judged(accept: MIMEAccept) -> MIMEAccept:
    """``Accept`` without the application/problem+json it asks for, which is the form of
    errors: that never causes a 406 and never stops one, the other types are judged
    alone."""
    return MIMEAccept(
        [(value, q) for value, q in accept if not (value.lower() == PROBLEM_TYPE and q > 0)]
    )


def _refuse(types: list[str]) -> None:
    asked = request.headers.get("Accept", "")
    for match in versions.VENDOR_TYPE.finditer(asked):
        if match.group(0).lower() not in versions.VENDOR_TYPES:
            abort(
                406,
                message=f"API version {match.group(1)[:20]} does not exist; supported "
                f"versions: {versions.supported_text()} "
                f"({', '.join(versions.VENDOR_TYPES)}).",
            )
    abort(
        406,
        message=f"Cannot answer with Accept: {asked[:200]}; "
        f"this resource is available as {', '.join(types)}.",
    )


def negotiate() -> ResponseReturnValue | None:
    """Before the view: 406, unknown query parameters (422), or the CSV of a list."""
    if request.routing_exception is not None or request.method == "OPTIONS":
        return None
    endpoint = request.endpoint
    view = query.view_of(endpoint, request.method)
    types = offered(view, endpoint)
    g.negotiated = bool(types)
    if types and request.accept_mimetypes:
        accept = _judged(accepted())
        chosen = accept.best_match(types)
        if chosen is None and accept:  # problem+json alone refuses nothing
            _refuse(types)
        g.media_type = chosen or types[0]
    if g.get("media_type") == CSV and endpoint in CSV_ALTERNATIVES and CSV in types:
        export = CSV_ALTERNATIVES[endpoint]
        query.refuse_unknown(query.view_of(export, request.method))
        view_function = current_app.view_functions[export]
        return current_app.ensure_sync(view_function)(**(request.view_args or {}))  # type: ignore[no-any-return]
    query.refuse_unknown(view)
    return None


def label(response: Response) -> Response:
    """The chosen JSON media type as the Content-Type, and Vary. An error raised before
    negotiation (routing, the request head, the body) has none chosen: it comes in the
    JSON type ``Accept`` prefers."""
    media_type = g.get("media_type")
    if media_type is None and response.status_code >= 400:
        media_type = accepted().best_match(JSON_TYPES)
    if media_type in versions.VENDOR_TYPES and response.mimetype == JSON:
        response.mimetype = media_type
    if g.get("negotiated") or response.status_code >= 400:  # an error's form too
        response.vary.add("Accept")
    origins = current_app.config.get("CORS_ORIGINS") or []
    if origins and "*" not in origins:
        response.vary.add("Origin")
    return response


def init_app(app: Flask) -> None:
    app.before_request(negotiate)
    app.after_request(label)


def document(spec: Any) -> None:
    """In the OpenAPI document: each path once, served at ``/`` and under ``/v1``; and
    every error response, which a problem's ``type`` links to."""
    spec.options["servers"] = [
        {"url": "/", "description": f"Version {versions.CURRENT}, the default"},
        *({"url": f"/v{v}", "description": f"Version {v}"} for v in versions.SUPPORTED),
    ]
    for status in DOCUMENTED_ERRORS:
        spec.components.get_ref("response", HTTPStatus(status).name)
