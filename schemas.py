"""Marshmallow schemas: input shapes (load) and output shapes (dump) kept apart.

Input schemas reject unknown fields (marshmallow's default), which is what stops a
body from setting ``role``, ``owner_id`` or ``id``.
"""

from __future__ import annotations

import marshmallow as ma
from marshmallow import ValidationError, fields, validate, validates, validates_schema

from db import db
from fields import Id, Money, Name, Text
from models import ROLES, Store, User

USERNAME = validate.Regexp(
    r"^[A-Za-z0-9_.-]{3,80}$", error="Must be 3 to 80 characters of A-Z a-z 0-9 _ . -"
)


def Email(**kwargs) -> Text:  # noqa: N802 - reads as a field type
    metadata = {"format": "email", "example": "alice@example.com", **kwargs.pop("metadata", {})}
    return Text(validate=[validate.Length(max=254), validate.Email()], metadata=metadata, **kwargs)


def Password(**kwargs) -> Text:  # noqa: N802 - reads as a field type
    # Not trimmed: every character of a password counts.
    return Text(trim=False, validate=validate.Length(8, 128), load_only=True, **kwargs)


def _check_exists(model, value: int | None, label: str) -> None:
    if value is not None and db.session.get(model, value) is None:
        raise ValidationError(f"{label} {value} does not exist.")


# --- users and tokens ------------------------------------------------------------


class UserSchema(ma.Schema):
    id = fields.Integer(metadata={"example": 1})
    username = fields.String(metadata={"example": "alice"})
    email = fields.String(metadata={"example": "alice@example.com"})
    role = fields.String(metadata={"enum": list(ROLES), "example": "user"})
    created_at = fields.DateTime()


class RegisterSchema(ma.Schema):
    username = Text(required=True, validate=USERNAME, metadata={"example": "alice"})
    email = Email(required=True)
    password = Password(required=True, metadata={"example": "correct horse battery"})


class LoginSchema(ma.Schema):
    username = Text(required=True, validate=validate.Length(1, 80), metadata={"example": "alice"})
    password = Text(
        required=True,
        trim=False,
        load_only=True,
        validate=validate.Length(1, 128),
        metadata={"example": "correct horse battery"},
    )


class TokenSchema(ma.Schema):
    access_token = fields.String()
    refresh_token = fields.String()
    token_type = fields.String(metadata={"example": "Bearer"})
    expires_in = fields.Integer(metadata={"description": "Access token lifetime in seconds"})


class MessageSchema(ma.Schema):
    message = fields.String(metadata={"example": "Successfully logged out."})


class UserUpdateSchema(ma.Schema):
    """``role`` is for admins; ``email`` and ``password`` for the user themself."""

    email = Email()
    password = Password()
    role = fields.String(validate=validate.OneOf(ROLES))


class UserQuerySchema(ma.Schema):
    q = Text(
        validate=validate.Length(1, 254),
        metadata={"description": "Case-insensitive substring of username or email"},
    )


# --- stores ---------------------------------------------------------------------


class StoreSchema(ma.Schema):
    id = fields.Integer(metadata={"example": 1})
    name = fields.String(metadata={"example": "Corner Shop"})
    address = fields.String(allow_none=True, metadata={"example": "1 Main St, Springfield"})
    contact_email = fields.String(allow_none=True, metadata={"example": "shop@example.com"})
    contact_phone = fields.String(allow_none=True, metadata={"example": "+1 555 0100"})
    owner_id = fields.Integer(metadata={"example": 1})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


PHONE = validate.Regexp(
    r"^\+?[0-9][0-9 ()./-]{2,31}$", error="Must be a phone number: digits, spaces, + ( ) . / -"
)


class StoreUpdateSchema(ma.Schema):
    """PATCH: any subset. ``owner_id`` (a transfer) is for admins only."""

    name = Name(metadata={"example": "Corner Shop"})
    address = Text(allow_none=True, validate=validate.Length(max=255))
    contact_email = Email(allow_none=True)
    contact_phone = Text(allow_none=True, validate=PHONE)
    owner_id = Id()

    @validates("owner_id")
    def _owner_exists(self, value: int, **_kwargs) -> None:
        _check_exists(User, value, "User")


class StoreReplaceSchema(StoreUpdateSchema):
    """PUT: ``name`` required; an optional field left out is cleared."""

    name = Name(required=True, metadata={"example": "Corner Shop"})


class StoreCreateSchema(ma.Schema):
    name = Name(required=True, metadata={"example": "Corner Shop"})
    address = Text(allow_none=True, validate=validate.Length(max=255))
    contact_email = Email(allow_none=True)
    contact_phone = Text(allow_none=True, validate=PHONE)


class StoreQuerySchema(ma.Schema):
    q = Text(
        validate=validate.Length(1, 80),
        metadata={"description": "Case-insensitive substring of the name"},
    )
    owner_id = Id(strict=False, metadata={"description": "Only stores of this owner"})


# --- tags -----------------------------------------------------------------------


class TagRefSchema(ma.Schema):
    id = fields.Integer()
    name = fields.String()


class TagSchema(TagRefSchema):
    store_id = fields.Integer()


class TagInputSchema(ma.Schema):
    name = Name(required=True, metadata={"example": "dairy"})


# --- items ----------------------------------------------------------------------


class StoreRefSchema(ma.Schema):
    id = fields.Integer()
    name = fields.String()


class ItemSchema(ma.Schema):
    id = fields.Integer(metadata={"example": 1})
    name = fields.String(metadata={"example": "Milk"})
    description = fields.String(allow_none=True, metadata={"example": "1 litre, whole"})
    price = Money()
    store_id = fields.Integer()
    store = fields.Nested(StoreRefSchema)
    tags = fields.List(fields.Nested(TagRefSchema))
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


def Description(**kwargs) -> Text:  # noqa: N802 - reads as a field type
    return Text(
        multiline=True,
        allow_none=True,
        validate=validate.Length(max=2000),
        metadata={"example": "1 litre, whole"},
        **kwargs,
    )


class ItemUpdateSchema(ma.Schema):
    """PATCH: any subset. An item cannot move to another store."""

    name = Name(metadata={"example": "Milk"})
    price = Money()
    description = Description()


class ItemReplaceSchema(ItemUpdateSchema):
    """PUT: ``name`` and ``price`` required; a missing description is cleared."""

    name = Name(required=True, metadata={"example": "Milk"})
    price = Money(required=True)


class ItemCreateSchema(ItemReplaceSchema):
    store_id = Id(required=True, metadata={"example": 1})

    @validates("store_id")
    def _store_exists(self, value: int, **_kwargs) -> None:
        _check_exists(Store, value, "Store")


ITEM_SORTS = ("id", "name", "price", "created_at")


class ItemQuerySchema(ma.Schema):
    tag = fields.List(
        Name(),
        metadata={"description": "Repeatable: items that carry every one of these tags"},
    )
    q = Text(
        validate=validate.Length(1, 80),
        metadata={"description": "Case-insensitive substring of the name or description"},
    )
    min_price = Money(metadata={"description": "Inclusive lower bound"})
    max_price = Money(metadata={"description": "Inclusive upper bound"})
    store_id = Id(strict=False)
    sort = fields.String(
        load_default="id",
        validate=validate.OneOf([*ITEM_SORTS, *(f"-{s}" for s in ITEM_SORTS)]),
        metadata={"description": "Sort key; prefix with - for descending"},
    )

    @validates_schema
    def _price_range(self, data: dict, **_kwargs) -> None:
        low, high = data.get("min_price"), data.get("max_price")
        if low is not None and high is not None and low > high:
            raise ValidationError("Must not be less than min_price.", "max_price")


class StoreItemQuerySchema(ItemQuerySchema):
    """``GET /stores/{id}/items``: the store comes from the path."""

    class Meta:
        exclude = ("store_id",)


class HealthSchema(ma.Schema):
    status = fields.String(metadata={"example": "ok"})
    checks = fields.Dict(keys=fields.String(), values=fields.String())
