"""Marshmallow fields for the contract's value rules: trimmed text, ids, money."""

from __future__ import annotations

import re
from decimal import Decimal

import marshmallow as ma
from marshmallow import ValidationError, validate

MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database
MAX_PRICE = Decimal(10) ** 10
# Control characters (PostgreSQL cannot store NUL at all) and lone surrogates
# (not encodable as UTF-8). Line breaks and tabs are allowed where text may span lines.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


class Text(ma.fields.String):
    """A string, trimmed of surrounding whitespace, with no control characters."""

    def __init__(self, *, multiline: bool = False, trim: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.forbidden = _CONTROL_MULTILINE if multiline else _CONTROL
        self.trim = trim

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        value = super()._deserialize(value, attr, data, **kwargs)
        if self.trim:
            value = value.strip()
        if self.forbidden.search(value):
            raise ValidationError("Must not contain control characters.")
        return value


def Name(**kwargs) -> Text:  # noqa: N802 - reads as a field type
    """A name: 1 to 80 characters after trimming."""
    return Text(validate=validate.Length(1, 80), **kwargs)


def Id(*, strict: bool = True, **kwargs) -> ma.fields.Integer:  # noqa: N802 - a field type
    """A server-assigned id: a positive 32-bit integer (in a query string, from text)."""
    return ma.fields.Integer(strict=strict, validate=validate.Range(1, MAX_ID), **kwargs)


def _two_places(value: Decimal) -> None:
    if value.as_tuple().exponent < -2:
        raise ValidationError("Must have at most 2 decimal places.")


class Money(ma.fields.Decimal):
    """A price: ``>= 0``, ``< 10^10``, at most 2 decimal places; a number or a string.

    Dumped as a JSON number. That is exact: a value of at most 12 significant digits
    (NUMERIC(12,2)) prints back from a double to the same digits.
    """

    def __init__(self, *, metadata: dict | None = None, **kwargs) -> None:
        super().__init__(
            allow_nan=False,
            validate=[
                validate.Range(min=0, max=MAX_PRICE, max_inclusive=False),
                _two_places,
            ],
            metadata={
                "multipleOf": 0.01,
                "example": 19.99,
                "description": "Exact amount with at most 2 decimals; a JSON number or a "
                'decimal string such as "19.99".',
                **(metadata or {}),
            },
            **kwargs,
        )

    def _deserialize(self, value, attr, data, **kwargs) -> Decimal:
        if isinstance(value, bool):  # Decimal(True) would be 1
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)

    def _serialize(self, value, attr, obj, **kwargs) -> float | None:
        return None if value is None else float(value)
