"""Unknown query parameters are refused (contract §14): 422 naming them, on every endpoint;
so is a parameter that takes one value sent more than once (``?sort=name&sort=-price``:
no reading of it is the obvious one, and a cache or proxy in front may read the other).

One check for the whole API, before any view runs: the parameters a view takes are the
query schemas it declares to flask-smorest (``@blp.arguments(..., location="query")``,
the paging of core/lists/listing.py) and the query parameters its ``@blp.doc`` lists,
the very ones the OpenAPI document publishes. An endpoint that declares none (a single
resource, the docs, ``/metrics``) takes none; ``fields`` only where it is declared
(core/web/sparse.py: items, stores, tags, users). Every endpoint ignores names starting
with ``_`` (cache-busters such as ``_=1700000000``, §16).
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import current_app, request

from core.web.errors import abort, refused_early

UNKNOWN = "Unknown query parameter."
REPEATED = "Give this parameter once; it takes one value."


def view_of(endpoint: str | None, method: str) -> Any:
    """The function that answers ``method`` on ``endpoint`` (a MethodView's method)."""
    view = current_app.view_functions.get(endpoint or "")
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        method = method.lower()
        view = getattr(view_class, method, None) or (
            getattr(view_class, "get", None) if method == "head" else None
        )
    return view


def declared(view: Any) -> frozenset[str]:
    """The query parameters a view declares to flask-smorest (read once per view)."""
    return _read(view)[0]


def repeatable(view: Any) -> frozenset[str]:
    """Those of them that take a list, one value per repetition (``?tag=a&tag=b``)."""
    return _read(view)[1]


_declared: dict[Any, tuple[frozenset[str], frozenset[str]]] = {}


def _read(view: Any) -> tuple[frozenset[str], frozenset[str]]:
    if view not in _declared:
        _declared[view] = _read_declared(view)
    return _declared[view]


def _read_declared(view: Any) -> tuple[frozenset[str], frozenset[str]]:
    apidoc = getattr(view, "_apidoc", None) or {}
    names: set[str] = set()
    lists: set[str] = set()
    for parameter in apidoc.get("arguments", {}).get("parameters", []):
        if parameter.get("in") != "query":
            continue
        schema = parameter["schema"]
        schema = schema() if isinstance(schema, type) else schema
        if isinstance(schema, ma.Schema):
            for name, field in schema.fields.items():
                names.add(field.data_key or name)
                if isinstance(field, ma.fields.List):
                    lists.add(field.data_key or name)
    for parameter in apidoc.get("manual_doc", {}).get("parameters", []):
        if isinstance(parameter, dict) and parameter.get("in") == "query":
            names.add(parameter["name"])
            if parameter.get("schema", {}).get("type") == "array":
                lists.add(parameter["name"])
    return frozenset(names), frozenset(lists)


def refuse_unknown(view: Any) -> None:
    """422 naming each query parameter ``view`` does not take, or takes once and was
    sent more than once."""
    sent = [name for name in request.args if not name.startswith("_")]
    if not sent:
        return
    unknown = sorted(set(sent) - declared(view))
    if unknown:
        refused_early()
        abort(
            422,
            message=f"Unknown query parameter(s): {', '.join(unknown)}.",
            errors={"query": {name: [UNKNOWN] for name in unknown}},
        )
    lists = repeatable(view)
    repeated = [name for name in sent if name not in lists and len(request.args.getlist(name)) > 1]
    if repeated:
        refused_early()
        abort(
            422,
            message=f"Query parameter(s) given more than once: {', '.join(repeated)}.",
            errors={"query": {name: [REPEATED] for name in repeated}},
        )
