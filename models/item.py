"""Items a store sells, and their links to the store's tags."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    DDL,
    CheckConstraint,
    Column,
    Computed,
    ForeignKey,
    Index,
    Numeric,
    String,
    Table,
    event,
    func,
    literal_column,
)
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from db import Model, db, postgresql_only
from models.store import Store
from models.tag import Tag
from models.types import EMPTY_OBJECT, JSONObject, Timestamps, UTCDateTime, utcnow

# An item's life: `active` items are the storefront's; `draft` and `archived` ones are
# seen only by the store's owner and admins (§13). The first is the default.
STATUSES = ("active", "draft", "archived")

# The text search configuration of the `search` document and of its queries.
SEARCH_CONFIG = "english"

# Deleting an item removes its links. The tag side has no ON DELETE action, so a
# tag that an item still carries cannot be deleted (the API answers 409); it is
# checked at commit (DEFERRED) so that deleting a whole store, whose cascades
# remove its items' links and its tags in no guaranteed order, still succeeds.
item_tags = Table(
    "item_tags",
    db.metadata,
    Column("item_id", ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "tag_id",
        ForeignKey("tags.id", deferrable=True, initially="DEFERRED"),
        primary_key=True,
    ),
    # The items of a tag (`?tag=`), read from the index alone.
    Index("ix_item_tags_tag_id_item_id", "tag_id", "item_id"),
)


# The trigram operator classes of the `q` indexes (the migration creates it too).
event.listen(
    db.metadata,
    "before_create",
    DDL("CREATE EXTENSION IF NOT EXISTS pg_trgm").execute_if(  # type: ignore[no-untyped-call]
        dialect="postgresql"
    ),
)


class SearchDocument(ColumnElement[Any]):
    """What `search` looks in, computed by the database from the row: on PostgreSQL a
    weighted tsvector, the name above the description; on SQLite (which searches
    by substring) nothing."""

    inherit_cache = True
    type = TSVECTOR()


@compiles(SearchDocument)
def _no_document(_element: SearchDocument, _compiler: Any, **_kw: Any) -> str:
    return "NULL"


@compiles(SearchDocument, "postgresql")
def _weighted_document(_element: SearchDocument, _compiler: Any, **_kw: Any) -> str:
    return (
        f"setweight(to_tsvector('{SEARCH_CONFIG}', name), 'A') || "
        f"setweight(to_tsvector('{SEARCH_CONFIG}', coalesce(description, '')), 'B')"
    )


class Item(Timestamps, Model):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    description: Mapped[str | None] = mapped_column(String(2000))
    price: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
    # Changed only through the stock ledger (core/catalog/stock.py), never assigned by a view.
    stock: Mapped[int] = mapped_column(default=0, server_default="0")
    # Indexed with the id below, as every sort key is.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The integrator's own identifier: unique within a store, case-sensitively (§13).
    sku: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    # stock.low fires when stock falls to or below it from above (core/events/catalog.py).
    low_stock_threshold: Mapped[int | None]
    # `metadata` is SQLAlchemy's name for the table's MetaData: the attribute is metadata_.
    metadata_: Mapped[dict[str, str]] = mapped_column(
        "metadata", JSONObject, default=dict, server_default=EMPTY_OBJECT
    )
    # Never loaded: only queries read it (core/catalog/queries.py).
    search_vector: Mapped[Any] = mapped_column(
        TSVECTOR().with_variant(String(), "sqlite"),
        Computed(SearchDocument(), persisted=True),
        nullable=True,
        deferred=True,
    )

    store: Mapped[Store] = relationship(lazy="raise")
    tags: Mapped[list[Tag]] = relationship(
        secondary=item_tags, order_by=Tag.id, lazy="raise", passive_deletes=True
    )

    __table_args__ = (
        CheckConstraint("price >= 0", name="price_not_negative"),
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        # A name is unique within its store (case-insensitively), which also makes this
        # the index of `sort=name` within a store: no two rows tie, so the page reads it
        # in name order and sorts nothing but groups of one by id (migration 0013).
        Index("uq_items_store_id_name_lower", store_id, func.lower(name), unique=True),
        CheckConstraint(
            f"status IN ({', '.join(repr(status) for status in STATUSES)})", name="status"
        ),
        CheckConstraint("low_stock_threshold >= 0", name="low_stock_threshold_not_negative"),
        # One index for both rules: unique within a store, and `?sku=` across stores
        # (its first column). NULLs never collide: an item without a SKU is allowed twice.
        Index("uq_items_sku_store_id", "sku", store_id, unique=True),
        # `status=draft|archived`, by id: only the few rows that are not active (a list
        # of active items never picks it over the index of its own sort or filter).
        Index(
            "ix_items_status_id",
            "status",
            id,
            postgresql_where=literal_column("status <> 'active'"),
            sqlite_where=literal_column("status <> 'active'"),
        ),
        # Every sort of a list of items (core/catalog/queries.py ITEMS) with its id
        # tie-break, over all items and within one store (by name: the unique index
        # above); in_stock uses the stock ones.
        Index("ix_items_name_lower_id", func.lower(name), id),
        Index("ix_items_price_id", price, id),
        Index("ix_items_created_at_id", "created_at", id),
        Index("ix_items_stock_id", stock, "id"),
        Index("ix_items_updated_at_id", "updated_at", id),
        Index("ix_items_store_id_id", store_id, id),
        Index("ix_items_store_id_price_id", store_id, price, id),
        Index("ix_items_store_id_created_at_id", store_id, "created_at", id),
        Index("ix_items_store_id_stock_id", store_id, stock, "id"),
        Index("ix_items_store_id_updated_at_id", store_id, "updated_at", id),
        # `search`, on PostgreSQL (`q`'s index follows the class).
        postgresql_only(Index("ix_items_search_vector", "search_vector", postgresql_using="gin")),
        {"sqlite_autoincrement": True},
    )

    @property
    def last_modified(self) -> datetime:
        """When what the item's JSON shows last changed (Last-Modified, §16): the
        item, or its store's or a tag's name (the store and tags are loaded)."""
        return max([self.updated_at, self.store.updated_at, *(t.updated_at for t in self.tags)])

    def __repr__(self) -> str:
        return f"<Item {self.id} {self.name!r}>"


class _WithSeparator(FunctionElement[str]):
    """``(text || U+001F)``: the text, then a character that no name, description or
    `q` may contain. In parentheses, as PostgreSQL shows the index's expression, so
    that Alembic finds the two equal."""

    type = String()
    inherit_cache = True


@compiles(_WithSeparator)
def _sqlite_separated(element: _WithSeparator, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.clauses, **kw)} || char(31))"


@compiles(_WithSeparator, "postgresql")
def _separated(element: _WithSeparator, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.clauses, **kw)} || chr(31))"


# What `q` looks in: the name and the description as one text, split by a character
# that `q` cannot contain, so that a match never spans the two. One trigram index
# serves it (substrings from 3 characters): where a trigram is in every row (every
# name says "widget"), one index reads its list once, where two read it twice.
ITEM_TEXT = _WithSeparator(Item.name) + func.coalesce(Item.description, literal_column("''"))
postgresql_only(
    Index(
        "ix_items_text_trgm",
        func.lower(ITEM_TEXT).label("text_lower"),
        postgresql_using="gin",
        postgresql_ops={"text_lower": "gin_trgm_ops"},
    )
)


# `updated_at` on PostgreSQL, for rows changed by plain SQL too (§13): an UPDATE that
# leaves `updated_at` as it was gets the time of the change, and linking or unlinking
# tags touches the items, unless this transaction has already set a later time (the
# application sets `updated_at` itself on every change it makes, so that what it
# answers is what is stored; on SQLite that is the only maintenance). Migration 0007
# creates the same: a migration keeps its own copy, unchanged when the model changes.
TOUCH_TRIGGERS = (
    """CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
    NEW.updated_at := clock_timestamp();
  END IF;
  RETURN NEW;
END $$""",
    """CREATE OR REPLACE FUNCTION touch_linked_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE items SET updated_at = clock_timestamp()
  WHERE id IN (SELECT item_id FROM links) AND updated_at < now();
  RETURN NULL;
END $$""",
    *(
        f"CREATE TRIGGER {table}_touch BEFORE UPDATE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION touch_updated_at()"
        for table in ("stores", "items", "tags")
    ),
    "CREATE TRIGGER item_tags_touch_insert AFTER INSERT ON item_tags "
    "REFERENCING NEW TABLE AS links FOR EACH STATEMENT EXECUTE FUNCTION touch_linked_items()",
    "CREATE TRIGGER item_tags_touch_delete AFTER DELETE ON item_tags "
    "REFERENCING OLD TABLE AS links FOR EACH STATEMENT EXECUTE FUNCTION touch_linked_items()",
)
for _statement in TOUCH_TRIGGERS:
    event.listen(
        db.metadata,
        "after_create",
        DDL(_statement).execute_if(dialect="postgresql"),  # type: ignore[no-untyped-call]
    )
