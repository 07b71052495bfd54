"""Marshmallow schemas: input shapes (load) and output shapes (dump) kept apart.

Input schemas reject unknown fields (marshmallow's default), which is what stops a
body from setting ``role``, ``owner_id`` or ``id``.
"""

from __future__ import annotations

import marshmallow as ma
from flask_jwt_extended import current_user
from marshmallow import ValidationError, fields, validate, validates, validates_schema

from core.auth.passwords import check_password_quality
from core.catalog.stock import MAX_QUANTITY
from core.web.fields import (
    Email,
    Id,
    Integer,
    Line,
    Money,
    Name,
    OptionalText,
    Password,
    Phone,
    Text,
    Username,
)
from db import db
from models import DELTA_REASONS, REASONS, ROLES, Store
from models.audit_entry import ACTOR_TYPES, TARGET_TYPES


def Timestamp() -> fields.DateTime:  # noqa: N802 - reads as a field type
    return fields.DateTime(metadata={"example": "2026-11-21T10:00:00+00:00"})


# --- users and tokens ------------------------------------------------------------


class UserSchema(ma.Schema):
    id = fields.Integer(metadata={"example": 1})
    username = fields.String(metadata={"example": "alice"})
    email = fields.String(metadata={"example": "alice@example.com"})
    role = fields.String(metadata={"enum": list(ROLES), "example": "user"})
    created_at = Timestamp()


class RegisterSchema(ma.Schema):
    username = Username(required=True)
    email = Email(required=True)
    password = Password(required=True, metadata={"example": "correct horse battery"})

    @validates_schema(skip_on_field_errors=False)
    def _strong_password(self, data: dict, **_kwargs) -> None:
        if "password" in data:
            check_password_quality(
                data["password"], username=data.get("username"), emails=[data.get("email")]
            )


class LoginSchema(ma.Schema):
    # Any text: a username that could not exist is just a wrong one (401).
    username = Line(254, required=True, metadata={"example": "alice"})
    password = Text(
        required=True,
        trim=False,
        load_only=True,
        validate=validate.Length(1, 128),
        metadata={"example": "correct horse battery"},
    )


class TokenSchema(ma.Schema):
    access_token = fields.String(metadata={"example": "eyJhbGciOiJIUzI1NiIs..."})
    refresh_token = fields.String(metadata={"example": "eyJhbGciOiJIUzI1NiIs..."})
    token_type = fields.String(metadata={"example": "Bearer"})
    expires_in = fields.Integer(
        metadata={"description": "Access token lifetime in seconds", "example": 900}
    )


class MessageSchema(ma.Schema):
    message = fields.String(metadata={"example": "Successfully logged out."})


CREDENTIALS = ("email", "password")  # what only the user, with their password, changes


class UserUpdateSchema(ma.Schema):
    """``role`` is for admins; ``email`` and ``password`` for the user themself, who
    confirms the change with ``current_password`` (OWASP ASVS 2.1.6)."""

    email = Email()
    password = Password(metadata={"example": "a new long passphrase"})
    role = fields.String(validate=validate.OneOf(ROLES), metadata={"example": "admin"})
    current_password = Text(
        trim=False,
        load_only=True,
        validate=validate.Length(1, 128),
        metadata={
            "description": "The password in use now: required with email or password, "
            "and only with them",
            "example": "the password you use now",
        },
    )

    @validates_schema
    def _current_password(self, data: dict, **_kwargs) -> None:
        changes = any(field in data for field in CREDENTIALS)
        if changes and "current_password" not in data:
            raise ValidationError(
                "Required to change the email or the password.", "current_password"
            )
        if "current_password" in data and not changes:
            raise ValidationError("Only sent with a new email or password.", "current_password")

    @validates_schema(skip_on_field_errors=False)
    def _strong_password(self, data: dict, **_kwargs) -> None:
        # Only the user themself may send a password (resources/users.py), so the
        # account it is judged against is the signed-in one.
        if "password" in data:
            check_password_quality(
                data["password"],
                username=current_user.username,
                emails=[current_user.email, data.get("email")],
            )


class PasswordResetRequestSchema(ma.Schema):
    email = Email(required=True)


class PasswordResetConfirmSchema(ma.Schema):
    # Judged by its hash: any text, within bounds (a real one is 43 characters).
    token = Text(
        required=True,
        trim=False,
        load_only=True,
        validate=validate.Length(1, 128),
        metadata={"description": "The token of the mailed link", "example": "q3Jx...Zk"},
    )
    new_password = Password(required=True, metadata={"example": "a new long passphrase"})


# Rules between fields, checked by the schemas' own validators, which apispec cannot
# derive: added to the OpenAPI components by name (app.py), so that clients and
# fuzzers know them too.
CROSS_FIELD_RULES = {
    "UserUpdate": {
        "anyOf": [
            {"required": ["current_password", "email"]},
            {"required": ["current_password", "password"]},
            {
                "not": {
                    "anyOf": [{"required": [name]} for name in (*CREDENTIALS, "current_password")]
                }
            },
        ]
    },
    # StockMovementInputSchema._delta_or_count: a delta with its reason, or a count.
    "StockMovementInput": {
        "anyOf": [
            {
                "required": ["delta", "reason"],
                "properties": {"reason": {"enum": list(DELTA_REASONS)}},
                "not": {"anyOf": [{"required": ["set"]}, {"required": ["expected"]}]},
            },
            {
                "required": ["set", "expected", "reason"],
                "properties": {"reason": {"enum": ["count"]}},
                "not": {"required": ["delta"]},
            },
        ]
    },
}


class UserQuerySchema(ma.Schema):
    q = Line(254, metadata={"description": "Case-insensitive substring of username or email"})


# --- stores ---------------------------------------------------------------------


class StoreSchema(ma.Schema):
    id = fields.Integer(metadata={"example": 1})
    name = fields.String(metadata={"example": "Corner Shop"})
    address = fields.String(allow_none=True, metadata={"example": "1 Main St, Springfield"})
    contact_email = fields.String(allow_none=True, metadata={"example": "shop@example.com"})
    contact_phone = fields.String(allow_none=True, metadata={"example": "+1 555 0100"})
    owner_id = fields.Integer(metadata={"example": 1})
    created_at = Timestamp()
    updated_at = Timestamp()


class StoreUpdateSchema(ma.Schema):
    """PATCH: any subset. ``owner_id`` (a transfer) is for admins only."""

    name = Name(metadata={"example": "Corner Shop"})
    address = OptionalText(255, metadata={"example": "1 Main St, Springfield"})
    contact_email = Email(optional=True)
    contact_phone = Phone()
    owner_id = Id(metadata={"example": 2})


class StoreReplaceSchema(StoreUpdateSchema):
    """PUT: ``name`` required; an optional field left out is cleared."""

    name = Name(required=True, metadata={"example": "Corner Shop"})


class StoreCreateSchema(ma.Schema):
    name = Name(required=True, metadata={"example": "Corner Shop"})
    address = OptionalText(255, metadata={"example": "1 Main St, Springfield"})
    contact_email = Email(optional=True)
    contact_phone = Phone()


# What PUT replaces (and clears when left out): everything a creator sets.
STORE_EDITABLE = tuple(StoreCreateSchema().fields)


class StoreQuerySchema(ma.Schema):
    q = Line(80, metadata={"description": "Case-insensitive substring of the name"})
    owner_id = Id(strict=False, metadata={"description": "Only stores of this owner"})


# --- tags -----------------------------------------------------------------------


class RefSchema(ma.Schema):
    """A reference to another resource, as nested in an item: its id and name."""

    id = fields.Integer(metadata={"example": 1})
    name = fields.String(metadata={"example": "dairy"})


class TagSchema(RefSchema):
    store_id = fields.Integer(metadata={"example": 1})


class TagInputSchema(ma.Schema):
    name = Name(required=True, metadata={"example": "dairy"})


# --- items ----------------------------------------------------------------------


class ItemSchema(ma.Schema):
    id = fields.Integer(metadata={"example": 1})
    name = fields.String(metadata={"example": "Milk"})
    description = fields.String(allow_none=True, metadata={"example": "1 litre, whole"})
    price = Money()
    stock = fields.Integer(metadata={"example": 12, "description": "Changed through /stock"})
    store_id = fields.Integer(metadata={"example": 1})
    store = fields.Nested(RefSchema)
    tags = fields.List(fields.Nested(RefSchema))
    created_at = Timestamp()
    updated_at = Timestamp()


def Description(**kwargs) -> Text:  # noqa: N802 - reads as a field type
    return OptionalText(2000, multiline=True, metadata={"example": "1 litre, whole"}, **kwargs)


class ItemUpdateSchema(ma.Schema):
    """PATCH: any subset. An item cannot move to another store."""

    name = Name(metadata={"example": "Milk"})
    price = Money()
    description = Description()


class ItemReplaceSchema(ItemUpdateSchema):
    """PUT: ``name`` and ``price`` required; a missing description is cleared."""

    name = Name(required=True, metadata={"example": "Milk"})
    price = Money(required=True)


def Quantity(minimum: int = -MAX_QUANTITY, *also, **kwargs) -> Integer:  # noqa: N802
    """A whole number of units: a JSON integer (not 1.0, not "1") of at most 10^9."""
    return Integer(strict=True, validate=[validate.Range(minimum, MAX_QUANTITY), *also], **kwargs)


class ItemCreateSchema(ItemReplaceSchema):
    store_id = Id(required=True, metadata={"example": 1})
    stock = Quantity(0, metadata={"example": 12, "description": "Initial stock (a count)"})

    @validates("store_id")
    def _store_exists(self, value: int, **_kwargs) -> None:
        if db.session.get(Store, value) is None:
            raise ValidationError(f"Store {value} does not exist.")


class ItemQuerySchema(ma.Schema):
    tag = fields.List(
        Name(),
        metadata={"description": "Repeatable: items that carry every one of these tags"},
    )
    q = Line(80, metadata={"description": "Case-insensitive substring of the name or description"})
    search = Line(
        200,
        metadata={
            "description": 'Full-text search, web-search syntax: words, "a phrase", or, -word '
            "(PostgreSQL; on SQLite every word is a substring). Orders by relevance unless "
            "sort says otherwise"
        },
    )
    # No example: Swagger UI would send it as a filter on "Try it out".
    min_price = Money(example=None, metadata={"description": "Inclusive lower bound"})
    max_price = Money(example=None, metadata={"description": "Inclusive upper bound"})
    store_id = Id(strict=False)
    in_stock = fields.Boolean(
        truthy={"true"},
        falsy={"false"},
        metadata={"description": "true: stock above 0; false: stock 0"},
    )
    # sort, page, page_size, cursor, count: from the list's Listing (core/lists/listing.py).


class StoreItemQuerySchema(ItemQuerySchema):
    """``GET /stores/{id}/items``: the store comes from the path."""

    class Meta:
        exclude = ("store_id",)


# --- batch -----------------------------------------------------------------------

MAX_BATCH = 100


class BatchCreateSchema(ItemReplaceSchema):
    """An item to create in the batch's store (the store comes from the path)."""

    stock = Quantity(0, metadata={"example": 12, "description": "Initial stock (a count)"})


class BatchUpdateSchema(ItemUpdateSchema):
    """Like PATCH: only the fields sent change."""

    id = Id(required=True, metadata={"example": 1})


class BatchSchema(ma.Schema):
    create = fields.List(fields.Nested(BatchCreateSchema), validate=validate.Length(max=MAX_BATCH))
    update = fields.List(fields.Nested(BatchUpdateSchema), validate=validate.Length(max=MAX_BATCH))
    delete = fields.List(Id(), validate=validate.Length(max=MAX_BATCH), metadata={"example": [3]})

    @ma.validates_schema(skip_on_field_errors=False)
    def _at_most_100(self, data: dict, **_kwargs) -> None:
        if sum(len(data.get(name) or ()) for name in ("create", "update", "delete")) > MAX_BATCH:
            raise ValidationError(f"At most {MAX_BATCH} operations in all.", "_schema")


class BatchResultSchema(ma.Schema):
    created = fields.List(fields.Nested(ItemSchema))
    updated = fields.List(fields.Nested(ItemSchema))
    deleted = fields.List(fields.Integer(), metadata={"example": [3]})


# --- stock -----------------------------------------------------------------------


class StockMovementSchema(ma.Schema):
    id = fields.Integer(metadata={"example": 1})
    item_id = fields.Integer(metadata={"example": 1})
    delta = fields.Integer(metadata={"example": -2})
    stock_after = fields.Integer(metadata={"example": 10})
    reason = fields.String(metadata={"enum": list(REASONS), "example": "sale"})
    reference = fields.String(allow_none=True, metadata={"example": "order 1042"})
    user_id = fields.Integer(allow_none=True, metadata={"example": 1})
    created_at = Timestamp()


class StockMovementInputSchema(ma.Schema):
    """Either ``delta`` with a reason, or a count: ``set`` and ``expected``."""

    delta = Quantity(
        -MAX_QUANTITY,
        validate.NoneOf([0], error="Must not be 0."),
        metadata={"example": -2, "description": "Units in (+) or out (-); not 0"},
    )
    set = Quantity(
        0, metadata={"example": 10, "description": "A count: the stock found on the shelf"}
    )
    expected = Quantity(
        metadata={"example": 12, "description": "With set: the stock the count started from"}
    )
    reason = fields.String(
        required=True,
        validate=validate.OneOf(REASONS),
        metadata={"example": "sale", "description": "count for a set; else the delta's cause"},
    )
    reference = OptionalText(100, metadata={"example": "order 1042"})

    @ma.validates_schema
    def _delta_or_count(self, data: dict, **_kwargs) -> None:
        if "delta" in data and "set" in data:
            raise ValidationError("Send either delta or set, not both.", "set")
        if "set" in data:
            if "expected" not in data:
                raise ValidationError(
                    "Required with set (the stock the count started from).", "expected"
                )
            if data["reason"] != "count":
                raise ValidationError("A count (set) has reason count.", "reason")
        elif "delta" not in data:
            raise ValidationError("Send delta, or set with expected.", "delta")
        else:
            if "expected" in data:
                raise ValidationError("Only with set.", "expected")
            if data["reason"] not in DELTA_REASONS:
                raise ValidationError(
                    f"A delta's reason is one of: {', '.join(DELTA_REASONS)}.", "reason"
                )


# --- audit -----------------------------------------------------------------------


class AuditActorSchema(ma.Schema):
    type = fields.String(metadata={"enum": list(ACTOR_TYPES), "example": "user"})
    id = fields.Integer(
        metadata={"example": 1, "description": "Absent for an anonymous actor"},
    )


class AuditTargetSchema(ma.Schema):
    type = fields.String(metadata={"enum": list(TARGET_TYPES), "example": "item"})
    id = fields.Integer(allow_none=True, metadata={"example": 7})


class AuditEntrySchema(ma.Schema):
    id = fields.Integer(metadata={"example": 1})
    actor = fields.Nested(AuditActorSchema)
    action = fields.String(metadata={"example": "item.updated"})
    target = fields.Nested(AuditTargetSchema)
    changes = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.Raw()),
        metadata={
            "description": "field: [old, new], as the resource's JSON writes them; a "
            "password is named with no values ([])",
            "example": {"price": [19.99, 24.5]},
        },
    )
    request_id = fields.String(allow_none=True, metadata={"example": "4bf92f3577b34da6"})
    ip = fields.String(allow_none=True, metadata={"example": "203.0.113.7"})
    created_at = Timestamp()


class AuditQuerySchema(ma.Schema):
    actor_id = Id(strict=False, metadata={"description": "Entries of this user (or API key)"})
    target_type = fields.String(validate=validate.OneOf(TARGET_TYPES))
    target_id = Id(strict=False, metadata={"description": "With or without target_type"})
    action = Line(64, metadata={"description": "e.g. item.updated, user.sign_in_failed"})
    created_after = fields.AwareDateTime(
        metadata={"description": "Strictly after this instant (ISO 8601 with an offset)"}
    )


class HealthSchema(ma.Schema):
    status = fields.String(metadata={"example": "ok"})
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"example": {"database": "ok", "redis": "ok"}},
    )
