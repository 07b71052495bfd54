"""Tags: labels a store puts on its own items."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from db import Model


class Tag(Model):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))

    __table_args__ = (
        Index("uq_tags_store_id_name_lower", store_id, func.lower(name), unique=True),
        # Search by tag name across stores (`GET /items?tag=...`).
        Index("ix_tags_name_lower", func.lower(name)),
        {"sqlite_autoincrement": True},
    )

    def __repr__(self) -> str:
        return f"<Tag {self.id} {self.name!r}>"
