"""Items a store sells, and their links to the store's tags."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, Numeric, String, Table, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db import Model, db
from models.store import Store
from models.tag import Tag
from models.types import Timestamps

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
        index=True,
    ),
)


class Item(Timestamps, Model):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    description: Mapped[str | None] = mapped_column(String(2000))
    price: Mapped[Decimal] = mapped_column(Numeric(12, 2), index=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
    # Changed only through the stock ledger (core/stock.py), never assigned by a view.
    stock: Mapped[int] = mapped_column(default=0, server_default="0")

    store: Mapped[Store] = relationship(lazy="raise")
    tags: Mapped[list[Tag]] = relationship(
        secondary=item_tags, order_by=Tag.id, lazy="raise", passive_deletes=True
    )

    __table_args__ = (
        CheckConstraint("price >= 0", name="price_not_negative"),
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        Index("uq_items_store_id_name_lower", store_id, func.lower(name), unique=True),
        Index("ix_items_name_lower", func.lower(name)),
        # sort=stock, across stores and within one; in_stock uses them too.
        Index("ix_items_stock_id", stock, "id"),
        Index("ix_items_store_id_stock_id", store_id, stock, "id"),
        {"sqlite_autoincrement": True},
    )

    def __repr__(self) -> str:
        return f"<Item {self.id} {self.name!r}>"
