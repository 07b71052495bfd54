"""``links`` in resources (contract §14, §16): ``self`` and the related collections,
as root-relative paths under the prefix the request came through (``/v1`` when the
request did), built from the object being dumped alone — no query, no URL map
lookup per row, so that a page of 100 items costs what it did without them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import marshmallow as ma
from flask import has_request_context, request

from core.web import sparse


def base() -> str:
    """The prefix the request's paths start with (its script root), "" outside one."""
    return request.script_root if has_request_context() else ""


def value(obj: Any, key: str) -> Any:
    """``key`` of a dumped object: a row's mapping or a model object."""
    return obj[key] if isinstance(obj, Mapping) else getattr(obj, key)


class Links(ma.fields.Nested):
    """A resource's ``links`` object, documented by ``schema`` and built by
    ``build(obj, base)`` (a dict of paths) without a nested dump; not built when the
    request's ``fields`` leave it out (a sparse row need not hold what it needs)."""

    def __init__(
        self, schema: type[ma.Schema], build: Callable[[Any, str], dict[str, str]], **kwargs: Any
    ) -> None:
        super().__init__(schema, dump_only=True, **kwargs)
        self.build = build

    def serialize(
        self,
        attr: str,  # noqa: ARG002 - the base method's parameters
        obj: Any,
        accessor: Callable[[Any, str, Any], Any] | None = None,  # noqa: ARG002
        **kwargs: Any,  # noqa: ARG002
    ) -> Any:
        shown = sparse.requested()
        if shown is not None and "links" not in shown:
            return ma.missing
        return self.build(obj, base())
