"""Sparse fieldsets (contract §14): ``?fields=id,name,price`` on the reads of items,
stores, tags and users and on their lists answers only those fields (``id`` always).

The parameter is declared where it applies (``sparse`` on a single read, the
``fields`` argument of ``Listing.paginate`` on a list), so that OpenAPI shows it
with the names it accepts. Its parsed value is kept for the request (``use``) and
the Blueprint trims what it dumps (``trim``) before the body is written, so that the
ETag is of the representation sent. A list of items also reads fewer columns
(core/catalog/queries.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, TypeVar

import marshmallow as ma
from flask import g

View = TypeVar("View", bound=Callable[..., Any])

# Characters of the parameter: every name of a schema, once each, fits in far fewer.
MAX_FIELDS_LENGTH = 500


def field_names(schema: type[ma.Schema]) -> list[str]:
    """The names a representation of ``schema`` shows, in its order."""
    return [
        field.data_key or name
        for name, field in schema._declared_fields.items()
        if not field.load_only
    ]


class Fieldset(ma.fields.String):
    """``fields``: comma-separated names of ``schema``'s fields (no spaces), at most as
    many as it has; an unknown one is a 422 naming it. Loads as the set of names,
    ``id`` included. OpenAPI has it as a string with the pattern it must match (an
    array with ``explode: false`` is what it is, but fuzzers and generated clients
    handle a plain string better)."""

    def __init__(self, schema: type[ma.Schema], **kwargs: Any) -> None:
        self.known = field_names(schema)
        name = f"(?:{'|'.join(self.known)})"
        super().__init__(
            metadata={
                # No example: Swagger UI's "Try it out" would fill it in, and every
                # read tried there would come back trimmed.
                "description": "Comma-separated fields to answer with (id is always "
                f"included), e.g. {','.join(self.known[:2])}: {', '.join(self.known)}",
                "pattern": f"^{name}(?:,{name}){{0,{len(self.known) - 1}}}$",
            },
            **kwargs,
        )

    # A set, where a String gives a str.
    def _deserialize(  # type: ignore[override]
        self,
        value: Any,
        attr: str | None,  # noqa: ARG002 - the base method's parameters
        data: Mapping[str, Any] | None,  # noqa: ARG002
        **kwargs: Any,  # noqa: ARG002
    ) -> frozenset[str]:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        if len(value) > MAX_FIELDS_LENGTH:
            raise ma.ValidationError(f"At most {MAX_FIELDS_LENGTH} characters.")
        names = value.split(",")
        if len(names) > len(self.known):
            raise ma.ValidationError(f"At most {len(self.known)} names.")
        unknown = [name for name in dict.fromkeys(names) if name not in self.known]
        if unknown == [""]:
            raise ma.ValidationError("Name at least one field, e.g. fields=id,name.")
        if unknown:
            listed = ", ".join(repr(name) for name in unknown)
            raise ma.ValidationError(
                f"Unknown field{'s' if len(unknown) > 1 else ''}: {listed}. "
                f"Known: {', '.join(self.known)}."
            )
        return frozenset(names) | {"id"}


def use(fields: frozenset[str] | None) -> None:
    """The fields this request's response shows (None: all)."""
    g.sparse_fields = fields


def requested() -> frozenset[str] | None:
    fields: frozenset[str] | None = g.get("sparse_fields")
    return fields


def trim(data: Any) -> Any:
    """The dumped response (an object or a list of them) with only the requested
    fields."""
    fields = requested()
    if fields is None:
        return data
    if isinstance(data, list):
        return [{k: v for k, v in row.items() if k in fields} for row in data]
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if k in fields}
    return data


_queries: dict[type[ma.Schema], type[ma.Schema]] = {}


def fields_query_schema(schema: type[ma.Schema]) -> type[ma.Schema]:
    """The query schema of a read of ``schema``: ``fields`` alone."""
    if schema not in _queries:
        name = f"{schema.__name__.removesuffix('Schema')}FieldsQuerySchema"
        _queries[schema] = type(name, (ma.Schema,), {"fields": Fieldset(schema)})
    return _queries[schema]


def sparse(blp: Any, schema: type[ma.Schema]) -> Callable[[View], View]:
    """A single read that takes ``fields``. Put it below ``@blp.response``."""

    def decorator(func: View) -> View:
        @wraps(func)
        def view(*args: Any, fields_query: dict[str, Any], **kwargs: Any) -> Any:
            use(fields_query.get("fields"))
            return func(*args, **kwargs)

        parsed: View = blp.arguments(
            fields_query_schema(schema), location="query", arg_name="fields_query"
        )(view)
        return parsed

    return decorator
