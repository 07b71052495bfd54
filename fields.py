"""Marshmallow fields for the contract's value rules: trimmed text, ids, money."""

from __future__ import annotations

import re
from decimal import Decimal

import marshmallow as ma
from marshmallow import ValidationError, validate

MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database
MAX_PRICE = Decimal(10) ** 10

# Text rules are regular expressions, so that one pattern both validates the input
# and documents it in OpenAPI (clients and fuzzers see exactly what is accepted).
# Surrounding blanks are allowed and trimmed; control characters are not allowed
# (PostgreSQL cannot even store NUL), except line breaks and tabs inside multi-line
# text. Lengths count what is left after trimming.
BLANKS = " \t\n\r"
_BLANK = r"[ \t\n\r]"
_EDGE = r"[^\x00-\x20\x7f]"  # first and last character: not blank, not control
_INNER = r"[^\x00-\x1f\x7f]"
_INNER_MULTILINE = r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
# Lone surrogates cannot be encoded as UTF-8 (a JSON body can still carry them).
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def trimmed(core: str) -> str:
    """A full-match pattern: ``core`` with optional blanks around it."""
    return f"^{_BLANK}*{core}{_BLANK}*$"


def text_pattern(max_length: int, *, optional: bool = False, multiline: bool = False) -> str:
    inner = _INNER_MULTILINE if multiline else _INNER
    core = f"{_EDGE}(?:{inner}{{0,{max_length - 2}}}{_EDGE})?"
    return trimmed(f"(?:{core})?" if optional else core)


class Text(ma.fields.String):
    """A string, trimmed of surrounding blanks, matching ``pattern`` (if given)."""

    def __init__(
        self,
        *,
        pattern: str | None = None,
        error: str = "Invalid value.",
        trim: bool = True,
        blank_is_none: bool = False,
        max_length: int | None = None,
        **kwargs,
    ) -> None:
        if pattern is not None:
            kwargs["validate"] = validate.Regexp(pattern, error=error)
        if max_length is not None:  # a cap on the text as sent, blanks included
            kwargs["metadata"] = {"maxLength": max_length, **kwargs.get("metadata", {})}
        super().__init__(**kwargs)
        self.trim = trim
        self.blank_is_none = blank_is_none
        self.max_length = max_length
        self.error = error

    def _deserialize(self, value, attr, data, **kwargs) -> str | None:
        value = super()._deserialize(value, attr, data, **kwargs)
        if self.max_length is not None and len(value) > self.max_length:
            raise ValidationError(self.error)
        if _SURROGATE.search(value):
            raise ValidationError("Not valid Unicode text.")
        if self.trim:
            value = value.strip(BLANKS)
        return None if self.blank_is_none and not value else value


def Name(**kwargs) -> Text:  # noqa: N802 - reads as a field type
    """A name: 1 to 80 characters after trimming, no control characters."""
    return Text(
        pattern=text_pattern(80),
        error="Must be 1 to 80 characters (after trimming), without control characters.",
        **kwargs,
    )


def OptionalText(max_length: int, *, multiline: bool = False, **kwargs) -> Text:  # noqa: N802
    """Free text of at most ``max_length`` characters after trimming; blank or null
    clears it."""
    controls = (
        "control characters other than line breaks and tabs"
        if multiline
        else ("control characters")
    )
    return Text(
        pattern=text_pattern(max_length, optional=True, multiline=multiline),
        error=f"Must be at most {max_length} characters (after trimming), without {controls}.",
        allow_none=True,
        blank_is_none=True,
        **kwargs,
    )


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
                # apispec writes the Range's maximum but not that it is exclusive.
                "exclusiveMaximum": True,
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
