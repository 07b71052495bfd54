"""Stock movements: the ledger an item's stock is the sum of."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db import Model
from models.item import Item
from models.types import UTCDateTime, utcnow

# A delta says why stock moved; a physical count (`set`) is always "count".
DELTA_REASONS = ("received", "sale", "return", "damaged", "correction")
REASONS = (*DELTA_REASONS, "count")


class StockMovement(Model):
    __tablename__ = "stock_movements"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    delta: Mapped[int]
    stock_after: Mapped[int]
    reason: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str | None] = mapped_column(String(100))
    # The ledger outlives the user who wrote it: their movements stay, anonymous.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    item: Mapped[Item] = relationship(lazy="raise")

    __table_args__ = (
        CheckConstraint(
            f"reason IN ({', '.join(repr(reason) for reason in REASONS)})", name="reason"
        ),
        CheckConstraint("stock_after >= 0", name="stock_after_not_negative"),
        # An item's movements, newest first, by keyset (GET /items/{id}/stock).
        Index("ix_stock_movements_item_id_id", item_id, "id"),
        {"sqlite_autoincrement": True},
    )

    def __repr__(self) -> str:
        return f"<StockMovement {self.id} item {self.item_id} {self.delta:+d}>"
