"""Marshmallow fields for the contract's value rules: trimmed text, ids, money,
quantities, accounts, bounded lists. Each rule is defined here once: the API schemas
(schemas.py), the CSV importer's rows and the CLI's account checks all use these."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sized
from decimal import Decimal
from typing import Any, TypeVar

import marshmallow as ma
from marshmallow import ValidationError, validate
from typing_extensions import override

MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database
MAX_PRICE = Decimal(10) ** 10
MAX_QUANTITY = 1_000_000_000  # the largest stock, delta, set or expected a client may send

# Text rules are regular expressions, so that one pattern both validates the input
# and documents it in OpenAPI (clients and fuzzers see exactly what is accepted).
# - Blanks (ASCII and Unicode spaces, BOM) around a value are trimmed.
# - Never allowed: control characters (C0 but the line breaks and tab of multi-line
#   text, DEL, C1: PostgreSQL cannot even store NUL), line/paragraph separators,
#   and bidirectional overrides and marks (text that displays other than it reads).
# - The first and last character must be visible: not blank, and not one of the
#   invisible ones (zero-width, soft hyphen, fillers, variation selectors, ...).
# Lengths count what is left after trimming. The classes stay in the Basic
# Multilingual Plane, so that every JSON Schema (ECMA-262) engine reads them alike.
_BLANK_CHARS = r" \t\n\r\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\ufeff"
_INVISIBLE = (
    r"\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200d\u2060-\u2064"
    r"\u3164\ufe00-\ufe0f\uffa0"
)
_BIDI_AND_SEPARATORS = r"\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_FORBIDDEN = r"\x00-\x1f\x7f-\x9f" + _BIDI_AND_SEPARATORS
_FORBIDDEN_MULTILINE = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f" + _BIDI_AND_SEPARATORS
_BLANK = f"[{_BLANK_CHARS}]"
# What a word without blanks (an email's parts, say) may not contain, as the inside
# of a character class: blanks, invisible and forbidden characters.
NOT_VISIBLE = f"{_BLANK_CHARS}{_INVISIBLE}{_FORBIDDEN}"
_EDGE = f"[^{NOT_VISIBLE}]"
BLANKS = " \t\n\r\u00a0\u1680\u202f\u205f\u3000\ufeff" + "".join(
    chr(c) for c in range(0x2000, 0x200B)
)
_ASCII_INTEGER = re.compile(r"[0-9]+")
# A decimal string is plain: "19.99", not "1e1", "1_000" or Arabic-Indic digits.
_ASCII_DECIMAL = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
# Lone surrogates cannot be encoded as UTF-8 (a JSON body can still carry them).
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class FullMatch(validate.Regexp):
    """``validate.Regexp`` over the whole value: a pattern's ``$`` would also match
    before a trailing newline, which ``fullmatch`` does not let through. (The pattern
    stays as written for the OpenAPI document, whose ECMA regexes have no ``\\Z``.)"""

    def __call__(self, value: Any) -> Any:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def trimmed(core: str, *, optional: bool = False) -> str:
    """A full-match pattern: ``core`` (or nothing, if optional) with blanks around it."""
    return f"^{_BLANK}*{f'(?:{core})?' if optional else core}{_BLANK}*$"


def text_pattern(max_length: int, *, optional: bool = False, multiline: bool = False) -> str:
    inner = f"[^{_FORBIDDEN_MULTILINE if multiline else _FORBIDDEN}]"
    return trimmed(f"{_EDGE}(?:{inner}{{0,{max_length - 2}}}{_EDGE})?", optional=optional)


class Text(ma.fields.String):
    """A string, trimmed of surrounding blanks, matching ``pattern`` (if given).

    With ``blank_is_none``, a value that is blank (once trimmed) is stored as null.
    With ``composed``, the text is kept in Unicode's composed form (NFC), so that
    "é" typed as one character or as "e" and a combining accent is one value.
    """

    def __init__(
        self,
        *,
        pattern: str | None = None,
        error: str = "Invalid value.",
        trim: bool = True,
        blank_is_none: bool = False,
        max_length: int | None = None,
        composed: bool = False,
        **kwargs: Any,
    ) -> None:
        if pattern is not None:  # first, then any validators of the field's own
            given = kwargs.get("validate") or []
            given = list(given) if isinstance(given, list | tuple) else [given]
            kwargs["validate"] = [FullMatch(pattern, error=error), *given]
        if max_length is not None:  # a cap on the text as sent, blanks included
            kwargs["metadata"] = {"maxLength": max_length, **kwargs.get("metadata", {})}
        super().__init__(**kwargs)
        self.trim = trim
        self.blank_is_none = blank_is_none
        self.max_length = max_length
        self.error = error
        self.composed = composed

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if _SURROGATE.search(text):
            raise ValidationError("Not valid Unicode text.")
        if self.composed:  # before the length: composing lengthens a few characters
            text = unicodedata.normalize("NFC", text)
        if self.max_length is not None and len(text) > self.max_length:
            raise ValidationError(self.error)
        return text.strip(BLANKS) if self.trim else text

    # The base's overloads promise a str for any value but None: here a blank one
    # becomes None too, which they cannot express.
    def deserialize(  # type: ignore[override]
        self,
        value: Any,
        attr: str | None = None,
        data: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> str | None:
        # Validators see the trimmed text; only then does a blank become null.
        text = super().deserialize(value, attr, data, **kwargs)
        return None if self.blank_is_none and text == "" else text


def Line(max_length: int, **kwargs: Any) -> Text:  # noqa: N802 - reads as a field type
    """One line of 1 to ``max_length`` characters after trimming, no control characters."""
    return Text(
        pattern=text_pattern(max_length),
        error=f"Must be 1 to {max_length} characters (after trimming), without control characters.",
        **kwargs,
    )


def Name(**kwargs: Any) -> Text:  # noqa: N802 - reads as a field type
    """A name: the contract's 1 to 80 characters."""
    return Line(80, **kwargs)


# The CSV export joins an item's tags with it (core/catalog/csv_format.py), so a tag
# name never contains it: an export re-imports the same tags.
TAG_SEPARATOR = "|"


def TagName(**kwargs: Any) -> Text:  # noqa: N802 - reads as a field type
    """A tag's name: a name without ``|`` (§4)."""
    no_separator = ma.validate.ContainsNoneOf(
        TAG_SEPARATOR, error=f"Must not contain {TAG_SEPARATOR!r} (CSV exports join tags with it)."
    )
    return Name(validate=no_separator, **kwargs)


def OptionalText(max_length: int, *, multiline: bool = False, **kwargs: Any) -> Text:  # noqa: N802
    """Free text of at most ``max_length`` characters after trimming; blank or null
    clears it."""
    controls = "control characters but line breaks and tabs" if multiline else "control characters"
    return Text(
        pattern=text_pattern(max_length, optional=True, multiline=multiline),
        error=f"Must be at most {max_length} characters (after trimming), without {controls}.",
        allow_none=True,
        blank_is_none=True,
        **kwargs,
    )


def Description(**kwargs: Any) -> Text:  # noqa: N802 - reads as a field type
    """An item's description: up to 2000 characters, several lines allowed."""
    return OptionalText(2000, multiline=True, metadata={"example": "1 litre, whole"}, **kwargs)


class Integer(ma.fields.Integer):
    """An integer; from text (a query string), only ASCII digits (not "1_0", not
    fullwidth or Arabic-Indic digits)."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int:
        if isinstance(value, str) and not _ASCII_INTEGER.fullmatch(value):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


def Quantity(  # noqa: N802 - reads as a field type
    minimum: int = -MAX_QUANTITY, *also: Any, strict: bool = True, **kwargs: Any
) -> Integer:
    """A whole number of units, at most 10^9: in JSON an integer (not 1.0, not "1");
    with ``strict=False`` (a CSV cell), ASCII digits."""
    return Integer(strict=strict, validate=[validate.Range(minimum, MAX_QUANTITY), *also], **kwargs)


def Id(*, strict: bool = True, **kwargs: Any) -> Integer:  # noqa: N802 - reads as a field type
    """A server-assigned id: a positive 32-bit integer (in a query string, from text)."""
    return Integer(strict=strict, validate=validate.Range(1, MAX_ID), **kwargs)


def _two_places(value: Decimal) -> None:
    exponent = value.as_tuple().exponent  # a letter only for NaN and infinity, refused before
    if isinstance(exponent, int) and exponent < -2:
        raise ValidationError("Must have at most 2 decimal places.")


class Money(ma.fields.Decimal):
    """A price: ``>= 0``, ``< 10^10``, at most 2 decimal places; a number or a string.

    Dumped as a JSON number. That is exact: a value of at most 12 significant digits
    (NUMERIC(12,2)) prints back from a double to the same digits.
    """

    def __init__(
        self,
        *,
        example: float | None = 19.99,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if example is not None:  # Swagger UI pre-fills fields with their example
            metadata = {"example": example, **(metadata or {})}
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
                "description": "Exact amount with at most 2 decimals; a JSON number or a "
                'plain decimal string such as "19.99".',
                **(metadata or {}),
            },
            **kwargs,
        )

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> Decimal:
        if isinstance(value, bool) or (  # Decimal(True) would be 1
            isinstance(value, str) and not _ASCII_DECIMAL.fullmatch(value.strip(" \t\n\r"))
        ):
            raise self.make_error("invalid")
        number = super()._deserialize(value, attr, data, **kwargs)
        return number.copy_abs() if number.is_zero() else number  # -0 is 0

    # A JSON number (a float), where marshmallow's Decimal declares a str or a Decimal.
    @override
    def _serialize(  # type: ignore[override]
        self, value: Decimal | None, attr: str | None, obj: Any, **kwargs: Any
    ) -> float | None:
        return None if value is None else float(value)


# --- accounts ------------------------------------------------------------------


def Username(**kwargs: Any) -> Text:  # noqa: N802 - reads as a field type
    return Text(
        pattern=trimmed("[A-Za-z0-9_.-]{3,80}"),
        error="Must be 3 to 80 characters of A-Z a-z 0-9 _ . -",
        metadata={"example": "alice"},
        **kwargs,
    )


# Something@domain.tld, of visible characters only (the text rules above) and none of
# RFC 5322's specials, which a mail header reads as syntax: "d<x@example.com" was
# mailed to x@example.com, "a,b@example.com" to no one (quoted local parts and address
# literals are refused with them), nor "=?", which starts an RFC 2047 encoded word
# that the mailer decodes: "=?utf-8?q?victim?=@example.com" was mailed to
# victim@example.com. Deliverability is for a mail to prove, not for a regular
# expression.
_SPECIALS = r'()<>\[\]:;\\,"'
EMAIL = (
    r"(?!.*=\?)"
    rf"[^@{NOT_VISIBLE}{_SPECIALS}]+@[^@{NOT_VISIBLE}{_SPECIALS}]+\.[^@.{NOT_VISIBLE}{_SPECIALS}]+"
)


def Email(*, optional: bool = False, **kwargs: Any) -> Text:  # noqa: N802 - reads as a field type
    """An email address, composed (NFC: one account per address however its accents
    were typed, migration 0014); ``optional``: blank or null clears it."""
    if optional:
        kwargs |= {"allow_none": True, "blank_is_none": True}
    return Text(
        pattern=trimmed(EMAIL, optional=optional),
        error="Must be an email address (name@example.com) of at most 254 characters.",
        max_length=254,
        composed=True,
        metadata={"example": "alice@example.com"},
        **kwargs,
    )


def Password(**kwargs: Any) -> Text:  # noqa: N802 - reads as a field type
    """8 to 128 characters, any of them, no composition rules. How hard it is to guess
    (and whether it holds the username or email) needs the account: the schemas check
    that with core/auth/passwords.py."""
    # Not trimmed, any characters: every character of a password counts.
    metadata = {
        "description": "8 to 128 characters, hard to guess (zxcvbn score 3 or more), "
        "without the username or the email address",
        **kwargs.pop("metadata", {}),
    }
    return Text(
        trim=False, validate=validate.Length(8, 128), load_only=True, metadata=metadata, **kwargs
    )


def Phone(**kwargs: Any) -> Text:  # noqa: N802 - reads as a field type
    return Text(
        pattern=trimmed(r"[+(]?[0-9][0-9 ()./-]{0,29}[0-9)]", optional=True),
        error="Must be a phone number of 2 to 32 characters: digits, spaces, + ( ) . / -",
        allow_none=True,
        blank_is_none=True,
        metadata={"example": "+1 555 0100"},
        **kwargs,
    )


class JsonBoolean(ma.fields.Boolean):
    """A JSON body's ``true`` or ``false`` only (marshmallow's Boolean also takes 1,
    "yes", "on": a query string's spellings, and 1 == True in Python)."""

    def _deserialize(
        self,
        value: Any,
        attr: str | None,  # noqa: ARG002 - the base method's parameters
        data: Mapping[str, Any] | None,  # noqa: ARG002
        **kwargs: Any,  # noqa: ARG002
    ) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


# §13: a SKU is 1 to 64 visible ASCII characters (0x21-0x7E), compared case-sensitively.
SKU_PATTERN = r"[!-~]{1,64}"


def Sku(**kwargs: Any) -> Text:  # noqa: N802 - reads as a field type
    """An optional SKU; blank or null clears it."""
    return Text(
        pattern=trimmed(SKU_PATTERN, optional=True),
        error="Must be 1 to 64 visible ASCII characters (no spaces).",
        allow_none=True,
        blank_is_none=True,
        **{"metadata": {"example": "MILK-1L-WHOLE"}} | kwargs,
    )


# --- collections ---------------------------------------------------------------

_T = TypeVar("_T")


def _refuse_too_many(field: ma.fields.Field[Any], value: Sized) -> None:
    """The field's ``Length`` bound, checked before its elements are: a body of 150,000
    bad elements gets one message about the bound, not one per element (a 750 KB
    request must not make a 38 MB answer, nor the work of reading every element)."""
    for validator in field.validators:
        if isinstance(validator, validate.Length):
            most = validator.max if validator.equal is None else validator.equal
            if most is not None and len(value) > most:
                validator(value)  # raises the bound's own message


class List(ma.fields.List[_T]):
    """A JSON array whose length bound (``validate.Length``) is checked first: the
    elements of a list within the bound are then validated one by one."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> list[_T | None]:
        if ma.utils.is_collection(value) and isinstance(value, Sized):
            _refuse_too_many(self, value)
        return super()._deserialize(value, attr, data, **kwargs)


class Dict(ma.fields.Dict):
    """A JSON object whose bound on its number of keys is checked before its keys
    and values are."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> Any:
        if isinstance(value, Mapping):
            _refuse_too_many(self, value)
        return super()._deserialize(value, attr, data, **kwargs)  # type: ignore[no-untyped-call]


MAX_METADATA_KEYS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 50, 40, 500
# No control characters but tab and line breaks (PostgreSQL's jsonb cannot even hold NUL).
_METADATA_TEXT = r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]"


def Metadata(**kwargs: Any) -> Dict:  # noqa: N802 - reads as a field type
    """The integrator's own key-value pairs (§13): at most 50 keys of 1 to 40
    characters, string values of at most 500. A null value removes its key (PATCH
    merges; core/catalog/metadata.py)."""
    return Dict(
        keys=ma.fields.String(
            validate=FullMatch(
                f"^{_METADATA_TEXT}{{1,{MAX_METADATA_KEY}}}$",
                error=f"A key is 1 to {MAX_METADATA_KEY} characters, without control characters.",
            )
        ),
        values=ma.fields.String(
            allow_none=True,
            validate=FullMatch(
                f"^{_METADATA_TEXT}{{0,{MAX_METADATA_VALUE}}}$",
                error=f"A value is text of at most {MAX_METADATA_VALUE} characters, "
                "without control characters.",
            ),
        ),
        validate=validate.Length(max=MAX_METADATA_KEYS, error=f"At most {MAX_METADATA_KEYS} keys."),
        attribute="metadata_",
        metadata={
            "description": f"Your own key-value pairs: at most {MAX_METADATA_KEYS} keys of 1 to "
            f"{MAX_METADATA_KEY} characters, string values of at most {MAX_METADATA_VALUE}. "
            "PATCH merges; a key set to null is removed",
            "example": {"erp_id": "A-1042"},
            # The keys' rule, which apispec does not derive from the keys' field.
            "propertyNames": {"pattern": f"^{_METADATA_TEXT}{{1,{MAX_METADATA_KEY}}}$"},
        },
        **kwargs,
    )
