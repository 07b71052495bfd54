"""Stores: the unit of ownership for items and tags."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from db import Model
from models.types import EMPTY_OBJECT, JSONObject, Timestamps


class Store(Timestamps, Model):
    __tablename__ = "stores"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    address: Mapped[str | None] = mapped_column(String(255))
    contact_email: Mapped[str | None] = mapped_column(String(254))
    contact_phone: Mapped[str | None] = mapped_column(String(32))
    # RESTRICT: a user who still owns stores cannot be deleted (the API answers 409).
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    # `metadata` is SQLAlchemy's name for the table's MetaData: the attribute is metadata_.
    metadata_: Mapped[dict[str, str]] = mapped_column(
        "metadata", JSONObject, default=dict, server_default=EMPTY_OBJECT
    )

    __table_args__ = (
        Index("uq_stores_name_lower", func.lower(name), unique=True),
        # sort=updated_at and updated_after (incremental sync, §13).
        Index("ix_stores_updated_at_id", "updated_at", id),
        {"sqlite_autoincrement": True},
    )

    def __repr__(self) -> str:
        return f"<Store {self.id} {self.name!r}>"
