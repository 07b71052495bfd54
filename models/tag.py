"""Tags: labels a store puts on its own items."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from db import Model
from models.types import UTCDateTime, utcnow


class Tag(Model):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
    # For incremental sync (§13). The database's now() by default too: tags written by
    # plain SQL (a bulk import) get both.
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    __table_args__ = (
        Index("uq_tags_store_id_name_lower", store_id, func.lower(name), unique=True),
        # Search by tag name across stores (`GET /items?tag=...`).
        Index("ix_tags_name_lower", func.lower(name)),
        # A store's tags by sort=updated_at and updated_after (incremental sync, §13).
        Index("ix_tags_store_id_updated_at_id", store_id, "updated_at", id),
        {"sqlite_autoincrement": True},
    )

    @property
    def last_modified(self) -> datetime:
        """When what the tag's JSON shows last changed (Last-Modified, §14)."""
        return self.updated_at

    def __repr__(self) -> str:
        return f"<Tag {self.id} {self.name!r}>"
