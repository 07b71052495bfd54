"""Marshmallow schemas: input shapes (load) and output shapes (dump) kept apart.

Input schemas reject unknown fields (marshmallow's default), which is what stops a
body from setting ``role``, ``owner_id`` or ``id``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import marshmallow as ma
from flask_jwt_extended import current_user
from marshmallow import ValidationError, fields, validate, validates, validates_schema

from core.auth.passwords import check_password_quality
from core.catalog.stock import MAX_STOCK
from core.events.addresses import MAX_URL_LENGTH
from core.events.outbox import EVENT_TYPES, event_json
from core.web.fields import (
    MAX_QUANTITY,
    SKU_PATTERN,
    Description,
    Email,
    Id,
    Integer,
    Line,
    List,
    Metadata,
    Money,
    Name,
    OptionalText,
    Password,
    Phone,
    Quantity,
    Sku,
    TagName,
    Text,
    Username,
)
from core.web.links import Links, value
from core.web.openapi import ResponseSchema
from db import db
from models import DELIVERY_STATUSES, DELTA_REASONS, REASONS, ROLES, SCOPES, Event, Store
from models.audit_entry import ACTOR_TYPES, TARGET_TYPES
from models.item import STATUSES
from models.job import JOB_STATUSES, JOB_TYPES


def Timestamp() -> fields.DateTime:  # noqa: N802 - reads as a field type
    return fields.DateTime(metadata={"example": "2026-11-21T10:00:00+00:00"})


def MetadataOut() -> fields.Dict:  # noqa: N802 - reads as a field type
    return fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        attribute="metadata_",
        metadata={"example": {"erp_id": "A-1042"}},
    )


class UtcDateTime(fields.AwareDateTime):
    """An RFC 3339 time with ``Z`` or an offset, as the UTC instant it names (one
    that UTC cannot write, such as 0001-01-01T00:00:00+05:00, is a 422)."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> datetime:
        instant = super()._deserialize(value, attr, data, **kwargs)
        try:
            return instant.astimezone(UTC)
        except OverflowError:
            raise ValidationError("Out of range.") from None


def UpdatedAfter() -> UtcDateTime:  # noqa: N802 - reads as a field type
    """Incremental sync (§13): rows changed strictly after this instant."""
    return UtcDateTime(
        format="iso",
        metadata={
            "description": "RFC 3339 time with Z or an offset: only rows whose updated_at is "
            "strictly later (microsecond precision)",
            "example": "2026-11-21T10:00:00.000000Z",
        },
    )


# --- users and tokens ------------------------------------------------------------


class UserSchema(ResponseSchema):
    always = ("id",)  # fields= may leave out any other

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
    def _strong_password(self, data: dict[str, Any], **_kwargs: Any) -> None:
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


class TokenSchema(ResponseSchema):
    access_token = fields.String(metadata={"example": "eyJhbGciOiJIUzI1NiIs..."})
    refresh_token = fields.String(metadata={"example": "eyJhbGciOiJIUzI1NiIs..."})
    token_type = fields.String(metadata={"example": "Bearer"})
    expires_in = fields.Integer(
        metadata={"description": "Access token lifetime in seconds", "example": 900}
    )


class MessageSchema(ResponseSchema):
    message = fields.String(metadata={"example": "Successfully logged out."})


CREDENTIALS = ("email", "password")  # what only the user, with their password, changes


class UserUpdateSchema(ma.Schema):
    """`role` is for admins; `email` and `password` for the user themself, who
    confirms the change with `current_password` (required with them, and only with
    them; OWASP ASVS 2.1.6)."""

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

    example: ClassVar[dict[str, Any]] = {
        "email": "alice@example.org",
        "current_password": "correct horse battery",
    }

    # The rule _current_password checks, for OpenAPI (core/web/openapi.SchemaDoc).
    cross_field_rules: ClassVar[dict[str, Any]] = {
        "anyOf": [
            {"required": ["current_password", "email"]},
            {"required": ["current_password", "password"]},
            {
                "not": {
                    "anyOf": [{"required": [name]} for name in (*CREDENTIALS, "current_password")]
                }
            },
        ]
    }

    @validates_schema
    def _current_password(self, data: dict[str, Any], **_kwargs: Any) -> None:
        changes = any(field in data for field in CREDENTIALS)
        if changes and "current_password" not in data:
            raise ValidationError(
                "Required to change the email or the password.", "current_password"
            )
        if "current_password" in data and not changes:
            raise ValidationError("Only sent with a new email or password.", "current_password")

    @validates_schema(skip_on_field_errors=False)
    def _strong_password(self, data: dict[str, Any], **_kwargs: Any) -> None:
        # Only the user themself may send a password (resources/users.py), so the
        # account it is judged against is the signed-in one.
        if "password" in data:
            check_password_quality(
                data["password"],
                username=current_user.username,
                emails=[current_user.email, data.get("email")],
            )


class UserQuerySchema(ma.Schema):
    # Composed as emails are kept (NFC): an accent typed apart still finds the address.
    q = Line(
        254,
        composed=True,
        metadata={"description": "Case-insensitive substring of username or email"},
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


# --- stores ---------------------------------------------------------------------


class StoreRecordSchema(ResponseSchema):
    """A store's fields, as events and the audit log record them (no links)."""

    id = fields.Integer(metadata={"example": 1})
    name = fields.String(metadata={"example": "Corner Shop"})
    address = fields.String(allow_none=True, metadata={"example": "1 Main St, Springfield"})
    contact_email = fields.String(allow_none=True, metadata={"example": "shop@example.com"})
    contact_phone = fields.String(allow_none=True, metadata={"example": "+1 555 0100"})
    owner_id = fields.Integer(metadata={"example": 1})
    metadata = MetadataOut()
    created_at = Timestamp()
    updated_at = Timestamp()


class StoreLinksSchema(ma.Schema):
    self = fields.String(metadata={"example": "/stores/1"})
    items = fields.String(metadata={"example": "/stores/1/items"})
    tags = fields.String(metadata={"example": "/stores/1/tags"})


def _store_links(store: Any, base: str) -> dict[str, str]:
    path = f"{base}/stores/{value(store, 'id')}"
    return {"self": path, "items": f"{path}/items", "tags": f"{path}/tags"}


class StoreSchema(StoreRecordSchema):
    """A store as the API answers it: its fields and its links."""

    always = ("id",)  # fields= may leave out any other

    links = Links(StoreLinksSchema, _store_links)


class StoreUpdateSchema(ma.Schema):
    """PATCH: any subset. ``owner_id`` (a transfer) is for admins only."""

    # Without owner_id: what any store's owner may send (core/web/openapi.SchemaDoc).
    example: ClassVar[dict[str, Any]] = {
        "name": "Corner Shop",
        "address": "1 Main St, Springfield",
        "contact_email": "shop@example.com",
        "contact_phone": "+1 555 0100",
        "metadata": {"erp_id": "A-1042"},
    }

    name = Name(metadata={"example": "Corner Shop"})
    address = OptionalText(255, metadata={"example": "1 Main St, Springfield"})
    contact_email = Email(optional=True)
    contact_phone = Phone()
    metadata = Metadata()
    owner_id = Id(metadata={"example": 2})


class StoreReplaceSchema(StoreUpdateSchema):
    """PUT: ``name`` required; an optional field left out is cleared."""

    name = Name(required=True, metadata={"example": "Corner Shop"})


class StoreCreateSchema(ma.Schema):
    name = Name(required=True, metadata={"example": "Corner Shop"})
    address = OptionalText(255, metadata={"example": "1 Main St, Springfield"})
    contact_email = Email(optional=True)
    contact_phone = Phone()
    metadata = Metadata()


# What PUT replaces (and clears when left out): everything a creator sets, by attribute.
STORE_EDITABLE = tuple(
    field.attribute or name for name, field in StoreCreateSchema().fields.items()
)


class StoreQuerySchema(ma.Schema):
    q = Line(80, metadata={"description": "Case-insensitive substring of the name"})
    owner_id = Id(strict=False, metadata={"description": "Only stores of this owner"})
    updated_after = UpdatedAfter()


# --- tags -----------------------------------------------------------------------


class RefSchema(ResponseSchema):
    """A reference to another resource, as nested in an item: its id and name."""

    id = fields.Integer(metadata={"example": 1})
    name = fields.String(metadata={"example": "dairy"})


class TagRecordSchema(RefSchema):
    """A tag's fields, as events and the audit log record them (no links)."""

    store_id = fields.Integer(metadata={"example": 1})
    created_at = Timestamp()
    updated_at = Timestamp()


class TagLinksSchema(ma.Schema):
    self = fields.String(metadata={"example": "/tags/1"})
    store = fields.String(metadata={"example": "/stores/1"})


def _tag_links(tag: Any, base: str) -> dict[str, str]:
    return {
        "self": f"{base}/tags/{value(tag, 'id')}",
        "store": f"{base}/stores/{value(tag, 'store_id')}",
    }


class TagSchema(TagRecordSchema):
    """A tag as the API answers it: its fields and its links."""

    always = ("id",)  # fields= may leave out any other

    links = Links(TagLinksSchema, _tag_links)


class TagQuerySchema(ma.Schema):
    updated_after = UpdatedAfter()


class TagInputSchema(ma.Schema):
    name = TagName(required=True, metadata={"example": "dairy"})


# --- items ----------------------------------------------------------------------


class ItemRecordSchema(ResponseSchema):
    """An item's fields, as events and the audit log record them (no links)."""

    id = fields.Integer(metadata={"example": 1})
    name = fields.String(metadata={"example": "Milk"})
    description = fields.String(allow_none=True, metadata={"example": "1 litre, whole"})
    price = Money()
    stock = fields.Integer(metadata={"example": 12, "description": "Changed through /stock"})
    store_id = fields.Integer(metadata={"example": 1})
    store = fields.Nested(RefSchema)
    tags = fields.List(fields.Nested(RefSchema))
    sku = fields.String(allow_none=True, metadata={"example": "MILK-1L-WHOLE"})
    status = fields.String(metadata={"enum": list(STATUSES), "example": "active"})
    low_stock_threshold = fields.Integer(allow_none=True, metadata={"example": 5})
    metadata = MetadataOut()
    created_at = Timestamp()
    updated_at = Timestamp()


class ItemLinksSchema(ma.Schema):
    self = fields.String(metadata={"example": "/items/1"})
    store = fields.String(metadata={"example": "/stores/1"})
    stock = fields.String(
        metadata={"description": "The item's stock movements", "example": "/items/1/stock"}
    )


def _item_links(item: Any, base: str) -> dict[str, str]:
    path = f"{base}/items/{value(item, 'id')}"
    return {
        "self": path,
        "store": f"{base}/stores/{value(item, 'store_id')}",
        "stock": f"{path}/stock",
    }


class ItemSchema(ItemRecordSchema):
    """An item as the API answers it: its fields and its links."""

    always = ("id",)  # fields= may leave out any other

    links = Links(ItemLinksSchema, _item_links)


class ItemUpdateSchema(ma.Schema):
    """PATCH: any subset. An item cannot move to another store."""

    name = Name(metadata={"example": "Milk"})
    price = Money()
    description = Description()
    sku = Sku(
        metadata={
            "example": "MILK-1L-WHOLE",
            "description": "Unique within the store (case-sensitive)",
        }
    )
    status = fields.String(
        validate=validate.OneOf(STATUSES),
        metadata={
            "example": "active",
            "description": "active (listed for everyone), draft or archived (seen by the "
            "store's owner and admins; an archived item's stock moves only by a count)",
        },
    )
    low_stock_threshold = Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(0, MAX_STOCK),
        metadata={"example": 5, "description": "Stock at or below which it runs low"},
    )
    metadata = Metadata()


class ItemReplaceSchema(ItemUpdateSchema):
    """PUT: ``name`` and ``price`` required; the other fields left out take their
    defaults (no description, SKU or threshold, status active, metadata {})."""

    name = Name(required=True, metadata={"example": "Milk"})
    price = Money(required=True)


class ItemCreateSchema(ItemReplaceSchema):
    store_id = Id(required=True, metadata={"example": 1})
    stock = Quantity(0, metadata={"example": 12, "description": "Initial stock (a count)"})

    @validates("store_id")
    def _store_exists(self, value: int, **_kwargs: Any) -> None:
        if db.session.get(Store, value) is None:
            raise ValidationError(f"Store {value} does not exist.")


MAX_TAGS = 10  # every repeatable parameter is bounded (§4)


# PostgreSQL's web-search parser stacks at most 32 "-" (not) before a word: one more is
# the database's error ("tsquery stack too small"), which was a 500.
_NEGATIONS = re.compile(r"(?:-\s*){33}")


def _bounded_negation(value: str) -> None:
    if _NEGATIONS.search(value):
        raise ValidationError("At most 32 '-' (not) in a row.")


class ItemQuerySchema(ma.Schema):
    tag = List(
        Name(),
        validate=validate.Length(max=MAX_TAGS),
        metadata={
            "description": f"Repeatable, at most {MAX_TAGS}: items that carry every one of "
            'these tags. A query string has no null: `tag=null` is the tag named "null"'
        },
    )
    q = Line(80, metadata={"description": "Case-insensitive substring of the name or description"})
    search = Line(
        200,
        validate=_bounded_negation,
        metadata={
            "description": 'Full-text search, web-search syntax: words, "a phrase", or, -word '
            "(PostgreSQL; on SQLite every word is a substring; at most 32 '-' in a row). "
            "Orders by relevance unless sort says otherwise"
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
    sku = Text(
        pattern=f"^{SKU_PATTERN}$",
        error="Must be 1 to 64 visible ASCII characters (no spaces).",
        trim=False,
        metadata={"description": "Exact SKU (case-sensitive)"},
    )
    status = fields.String(
        validate=validate.OneOf([*STATUSES, "all"]),
        metadata={
            "description": "active (the default, open to anyone); draft, archived or all: "
            "only for your own stores (admins: any)"
        },
    )
    updated_after = UpdatedAfter()
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
    create = List(fields.Nested(BatchCreateSchema), validate=validate.Length(max=MAX_BATCH))
    update = List(fields.Nested(BatchUpdateSchema), validate=validate.Length(max=MAX_BATCH))
    delete = List(Id(), validate=validate.Length(max=MAX_BATCH), metadata={"example": [3]})

    @ma.validates_schema(skip_on_field_errors=False)
    def _at_most_100(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if sum(len(data.get(name) or ()) for name in ("create", "update", "delete")) > MAX_BATCH:
            raise ValidationError(f"At most {MAX_BATCH} operations in all.", "_schema")


class BatchResultSchema(ResponseSchema):
    created = fields.List(fields.Nested(ItemSchema))
    updated = fields.List(fields.Nested(ItemSchema))
    deleted = fields.List(fields.Integer(), metadata={"example": [3]})


# --- stock -----------------------------------------------------------------------


class StockMovementSchema(ResponseSchema):
    id = fields.Integer(metadata={"example": 1})
    item_id = fields.Integer(metadata={"example": 1})
    delta = fields.Integer(metadata={"example": -2})
    stock_after = fields.Integer(metadata={"example": 10})
    reason = fields.String(metadata={"enum": list(REASONS), "example": "sale"})
    reference = fields.String(allow_none=True, metadata={"example": "order 1042"})
    user_id = fields.Integer(allow_none=True, metadata={"example": 1})
    created_at = Timestamp()


class StockMovementInputSchema(ma.Schema):
    """Exactly one of `delta` and `set`. A move: `delta` (units in, or out when
    negative; not 0) with a `reason` other than `count`. A count: `set` (the stock found
    on the shelf) with `expected` (the stock the count started from) and `reason`
    `count`. Any other combination is a 422 naming the field."""

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

    example: ClassVar[dict[str, Any]] = {"delta": -2, "reason": "sale", "reference": "order 1042"}

    # The rule _delta_or_count checks, for OpenAPI (core/web/openapi.SchemaDoc):
    # a delta with its reason, or a count.
    cross_field_rules: ClassVar[dict[str, Any]] = {
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
    }

    @ma.validates_schema
    def _delta_or_count(self, data: dict[str, Any], **_kwargs: Any) -> None:
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


# --- events and webhooks ------------------------------------------------------------

MAX_TYPE_FILTERS = 10
# What a webhook may subscribe to (a `webhook.test` goes to the webhook it tests).
SUBSCRIBABLE = tuple(t for t in EVENT_TYPES if t != "webhook.test")


class ActorSchema(ResponseSchema):
    type = fields.String(metadata={"enum": ["user", "api_key", "system"], "example": "user"})
    id = fields.Integer(allow_none=True, metadata={"example": 1})


class EventDataSchema(ResponseSchema):
    sometimes = ("previous",)  # updates only

    object = fields.Dict(
        metadata={
            "description": "The resource as its GET returns it; {id} for a deletion",
            "example": {"id": 7, "item_id": 3, "delta": -2, "stock_after": 10},
        }
    )
    previous = fields.Dict(
        metadata={
            "description": "Updates only: the changed fields' old values",
            "example": {"price": 2.5},
        }
    )


class EventSchema(ResponseSchema):
    id = fields.String(metadata={"example": "evt_0000000000000042"})
    type = fields.String(metadata={"enum": list(EVENT_TYPES), "example": "stock.moved"})
    created_at = fields.String(metadata={"example": "2026-11-21T10:00:00+00:00"})
    store_id = fields.Integer(allow_none=True, metadata={"example": 1})
    actor = fields.Nested(ActorSchema)
    request_id = fields.String(allow_none=True, metadata={"example": "9f3c2a7e"})
    data = fields.Nested(EventDataSchema)

    @ma.pre_dump
    def _as_json(self, event: Event | dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        return event_json(event) if isinstance(event, Event) else event


class EventQuerySchema(ma.Schema):
    type = List(
        fields.String(validate=validate.OneOf(EVENT_TYPES)),
        validate=validate.Length(1, MAX_TYPE_FILTERS),
        metadata={"description": f"Event types (repeatable, at most {MAX_TYPE_FILTERS})"},
    )
    store_id = Id(strict=False, metadata={"description": "Only events of this store"})
    created_after = UtcDateTime(
        metadata={"description": "Only events written after this instant (ISO 8601, with zone)"}
    )


class WebhookSchema(ResponseSchema):
    id = fields.Integer(metadata={"example": 1})
    url = fields.String(metadata={"example": "https://example.com/hooks/stores"})
    events = fields.List(fields.String(), metadata={"example": ["stock.low", "stock.out"]})
    store_id = fields.Integer(allow_none=True, metadata={"example": None})
    description = fields.String(allow_none=True, metadata={"example": "ERP sync"})
    enabled = fields.Boolean(metadata={"example": True})
    created_at = Timestamp()
    updated_at = Timestamp()


class WebhookCreatedSchema(WebhookSchema):
    secret = fields.String(
        metadata={
            "example": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "description": "The signing secret: shown in this answer only",
        }
    )


def EventTypes(**kwargs: Any) -> List[str]:  # noqa: N802 - reads as a field type
    return List(
        fields.String(validate=validate.OneOf([*SUBSCRIBABLE, "*"])),
        validate=validate.Length(1, len(SUBSCRIBABLE)),
        metadata={
            "example": ["stock.low", "stock.out"],
            "description": 'Types; "*" is every type (repeats are kept once)',
        },
        **kwargs,
    )


class WebhookUpdateSchema(ma.Schema):
    url = Line(MAX_URL_LENGTH, metadata={"example": "https://example.com/hooks/stores"})
    events = EventTypes()
    description = OptionalText(255, metadata={"example": "ERP sync"})
    enabled = fields.Boolean(metadata={"example": True})


class WebhookCreateSchema(WebhookUpdateSchema):
    url = Line(MAX_URL_LENGTH, required=True, metadata={"example": "https://example.com/hooks"})
    events = EventTypes(required=True)
    store_id = Id(
        allow_none=True,
        metadata={"description": "One of your stores, or null: every store you own", "example": 1},
    )


class DeliverySchema(ResponseSchema):
    id = fields.Integer(metadata={"example": 1})
    event_id = fields.String(
        allow_none=True,
        metadata={
            "example": "evt_0000000000000042",
            "description": "null only in a test call's answer, while a backlog of events "
            "waits for the relay before its own",
        },
    )
    attempt = fields.Integer(metadata={"example": 1})
    status = fields.String(metadata={"enum": list(DELIVERY_STATUSES), "example": "succeeded"})
    response_status = fields.Integer(allow_none=True, metadata={"example": 200})
    response_body = fields.String(
        allow_none=True, metadata={"description": "At most 1 KiB", "example": "ok"}
    )
    error = fields.String(allow_none=True, metadata={"example": None})
    duration_ms = fields.Integer(allow_none=True, metadata={"example": 42})
    next_attempt_at = fields.DateTime(
        allow_none=True, metadata={"example": None, "description": "When it is (re)tried"}
    )
    created_at = Timestamp()


# --- API keys --------------------------------------------------------------------


class ApiKeySchema(ma.Schema):
    id = fields.Integer(metadata={"example": 1})
    name = fields.String(metadata={"example": "ERP sync"})
    prefix = fields.String(metadata={"example": "sk_Xy4aB", "description": "The key's start"})
    last_four = fields.String(metadata={"example": "Qz9w", "description": "The key's end"})
    scopes = fields.List(fields.String(), metadata={"example": ["catalog:read"]})
    store_id = fields.Integer(allow_none=True, metadata={"example": None})
    expires_at = fields.DateTime(allow_none=True, metadata={"example": None})
    last_used_at = fields.DateTime(
        allow_none=True,
        metadata={"example": None, "description": "To the minute: written once a minute"},
    )
    created_at = Timestamp()


class ApiKeyCreatedSchema(ApiKeySchema):
    key = fields.String(
        metadata={
            "example": "sk_Xy4aBn0Cq1Yv7Jd3Lw8Ke2Hf5Rt6Ug9Pm4So0Ia2Qz9w",
            "description": "The key: shown in this answer only; send it as `Bearer sk_…`",
        }
    )


class ApiKeyCreateSchema(ma.Schema):
    name = Name(required=True, metadata={"example": "ERP sync"})
    scopes = List(
        fields.String(validate=validate.OneOf(SCOPES)),
        required=True,
        validate=validate.Length(1, len(SCOPES)),
        metadata={"example": ["catalog:read", "stock:write"]},
    )
    store_id = Id(
        allow_none=True,
        metadata={"description": "One of your stores, or null: all you may do", "example": 1},
    )
    expires_at = UtcDateTime(
        format="iso",
        allow_none=True,
        metadata={"description": "A future time, or null: until revoked", "example": None},
    )

    @ma.pre_load
    def _each_scope_once(self, data: Any, **_kwargs: Any) -> Any:
        """Scopes are a set: one named twice counts once, before the list's bound is
        checked (7 copies of one scope were refused as longer than the 6 there are)."""
        scopes = data.get("scopes") if isinstance(data, dict) else None
        if isinstance(scopes, list) and all(isinstance(scope, str) for scope in scopes):
            data = {**data, "scopes": list(dict.fromkeys(scopes))}
        return data

    @validates("expires_at")
    def _in_the_future(self, value: datetime | None, **_kwargs: Any) -> None:
        if value is not None and value <= datetime.now(UTC):
            raise ValidationError("Must be in the future.")


# --- audit -----------------------------------------------------------------------


class AuditActorSchema(ResponseSchema):
    sometimes = ("id",)  # not for an anonymous actor

    type = fields.String(metadata={"enum": list(ACTOR_TYPES), "example": "user"})
    id = fields.Integer(
        metadata={"example": 1, "description": "Absent for an anonymous actor"},
    )


class AuditTargetSchema(ResponseSchema):
    type = fields.String(metadata={"enum": list(TARGET_TYPES), "example": "item"})
    id = fields.Integer(allow_none=True, metadata={"example": 7})


class AuditEntrySchema(ResponseSchema):
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
    ip = fields.String(
        attribute="shown_ip",
        allow_none=True,
        metadata={
            "example": "203.0.113.7",
            "description": "Where the change came from: null for the command line, and "
            "for anyone but an admin, on a change someone else made",
        },
    )
    created_at = Timestamp()


class AuditQuerySchema(ma.Schema):
    actor_id = Id(
        strict=False,
        metadata={
            "description": "Entries whose actor has this id: a user's or an API key's (an "
            "entry's actor.type tells them apart)"
        },
    )
    target_type = fields.String(validate=validate.OneOf(TARGET_TYPES))
    target_id = Id(strict=False, metadata={"description": "With or without target_type"})
    action = Line(64, metadata={"description": "e.g. item.updated, user.sign_in_failed"})
    created_after = UtcDateTime(
        metadata={"description": "Strictly after this instant (ISO 8601 with an offset)"}
    )


class HealthSchema(ResponseSchema):
    sometimes = ("checks",)  # /ready only

    status = fields.String(metadata={"example": "ok"})
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"example": {"database": "ok", "redis": "ok"}},
    )


class IndexLinksSchema(ResponseSchema):
    self = fields.String(metadata={"example": "/"})
    items = fields.String(metadata={"example": "/items"})
    stores = fields.String(metadata={"example": "/stores"})
    users = fields.String(metadata={"example": "/users"})
    events = fields.String(metadata={"example": "/events"})
    webhooks = fields.String(metadata={"example": "/webhooks"})
    jobs = fields.String(metadata={"example": "/jobs"})
    api_keys = fields.String(metadata={"example": "/api-keys"})
    audit = fields.String(metadata={"example": "/audit"})
    openapi = fields.String(metadata={"example": "/openapi.json"})
    swagger_ui = fields.String(metadata={"example": "/swagger-ui"})


class IndexSchema(ResponseSchema):
    name = fields.String(metadata={"example": "Stores REST API"})
    version = fields.String(metadata={"example": "1"})
    links = fields.Nested(IndexLinksSchema)


# --- jobs (§12) ---------------------------------------------------------------------


class JobProgressSchema(ResponseSchema):
    done = fields.Integer(
        metadata={
            "description": "Items deleted (store_delete), bytes of the file read (import), "
            "rows written (export)",
            "example": 5000,
        }
    )
    total = fields.Integer(
        allow_none=True,
        metadata={
            "description": "Counted when the job starts: null while queued",
            "example": 400000,
        },
    )


class JobLinksSchema(ResponseSchema):
    sometimes = ("file",)  # an export's, once written

    self = fields.String(metadata={"example": "/jobs/7"})
    file = fields.String(
        metadata={
            "description": "An export's CSV, for 24 hours; shown to its creator only",
            "example": "/jobs/7/file",
        }
    )


class JobSchema(ResponseSchema):
    id = fields.Integer(metadata={"example": 7})
    type = fields.String(metadata={"enum": list(JOB_TYPES), "example": "export"})
    status = fields.String(metadata={"enum": list(JOB_STATUSES), "example": "succeeded"})
    progress = fields.Nested(JobProgressSchema)
    result = fields.Dict(
        allow_none=True,
        metadata={
            "description": "store_delete: {store_id, deleted}; import: {created, updated, "
            "unchanged, invalid, errors: [{line, column, message}]}; export: {rows, bytes}",
            "example": {"rows": 5000, "bytes": 812345},
        },
    )
    error = fields.Dict(
        allow_none=True,
        metadata={"description": "The error envelope of a failed job", "example": None},
    )
    created_at = Timestamp()
    started_at = fields.DateTime(allow_none=True, metadata={"example": "2026-11-21T10:00:01+00:00"})
    finished_at = fields.DateTime(
        allow_none=True, metadata={"example": "2026-11-21T10:00:09+00:00"}
    )
    links = fields.Nested(JobLinksSchema)


class ImportQuerySchema(ma.Schema):
    dry_run = fields.Boolean(
        load_default=False,
        truthy={"true", "1"},
        falsy={"false", "0"},
        metadata={"description": "Check and count, write nothing"},
    )
    skip_invalid = fields.Boolean(
        load_default=False,
        truthy={"true", "1"},
        falsy={"false", "0"},
        metadata={"description": "Import the valid rows, report the others"},
    )
