"""The request's JSON body, parsed once: permissions, batch, idempotency and
webargs (core/web/smorest.py) all read this one parse.

Numbers with a fraction arrive as exact ``Decimal``; NaN and Infinity are not JSON.
Input the standard library cannot take (digits beyond Python's limit, nesting deeper
than its recursion limit) is malformed, like any other bad JSON.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from flask import g, request


class MalformedBodyError(ValueError):
    """The body is not JSON (or not UTF-8); ``text`` is what could be decoded."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _parse(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBodyError(str(exc), raw.decode("latin-1")) from None
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedBodyError(str(exc) or "invalid JSON", text) from None


def json_body() -> Any:
    """The body as JSON (raises ``MalformedBodyError``), parsed on first use in a request."""
    if "json_body" not in g:
        try:
            g.json_body = (True, _parse(request.get_data(cache=True)))
        except MalformedBodyError as exc:
            g.json_body = (False, exc)
    ok, value = g.json_body
    if not ok:
        raise value
    return value


def body_object() -> dict[str, Any]:
    """The body when it is a JSON object, else ``{}`` (validation reports the rest
    later)."""
    try:
        body = json_body()
    except MalformedBodyError:
        return {}
    return body if isinstance(body, dict) else {}
