"""Keyset cursors: where a page of a list ends, signed, bound to the list's filters
and sort (core/lists/listing.py makes and reads them)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NoReturn

from flask import current_app, request
from itsdangerous import URLSafeSerializer
from sqlalchemy import ColumnElement, and_, literal, or_, tuple_

from core.web.errors import abort

SALT = "stores.pagination.cursor"
Key = tuple[ColumnElement[Any], bool]  # an expression, and whether it is descending


def serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["JWT_SECRET_KEY"], salt=SALT)


def encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def decode(value: Any, expr: ColumnElement[Any]) -> Any:
    type_ = expr.type
    type_ = getattr(type_, "impl_instance", type_)  # a TypeDecorator: the type it stores as
    try:
        python_type = type_.python_type
    except NotImplementedError:  # pragma: no cover - every key type here has one
        return value
    if python_type is Decimal:
        return Decimal(value)
    if python_type is datetime:
        return datetime.fromisoformat(value)
    if python_type is float:
        return float(value)
    if not isinstance(value, python_type):
        raise ValueError(f"{value!r} is not {python_type.__name__}")
    return value


def fingerprint(filters: dict[str, Any]) -> str:
    """What a cursor is bound to: the list (its path) and every filter and the sort."""
    text = json.dumps([request.path, filters], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def bad_cursor(message: str) -> NoReturn:
    abort(422, errors={"query": {"cursor": [message]}})


def after(keys: list[Key], values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order of ``keys``."""
    bound = [literal(value, type_=expr.type) for (expr, _), value in zip(keys, values, strict=True)]
    directions = {descending for _, descending in keys}
    if len(directions) == 1:
        # One row comparison: a B-tree index on the keys serves it as a range.
        left = tuple_(*(expr for expr, _ in keys)) if len(keys) > 1 else keys[0][0]
        right = tuple_(*bound) if len(keys) > 1 else bound[0]
        return left < right if directions == {True} else left > right
    clauses = []
    for i, (expr, descending) in enumerate(keys):
        earlier = [keys[j][0] == bound[j] for j in range(i)]
        clauses.append(and_(*earlier, expr < bound[i] if descending else expr > bound[i]))
    return or_(*clauses)
