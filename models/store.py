"""Stores: the unit of ownership for items and tags."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from db import Model
from models.types import EMPTY_OBJECT, JSONObject, Timestamps, UTCDateTime


class Store(Timestamps, Model):
    __tablename__ = "stores"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    address: Mapped[str | None] = mapped_column(String(255))
    contact_email: Mapped[str | None] = mapped_column(String(254))
    contact_phone: Mapped[str | None] = mapped_column(String(32))
    # RESTRICT: a user who still owns stores cannot be deleted (the API answers 409).
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    # Set when a deletion job takes the store (§12): from then on it is gone for every
    # read and write (core/catalog/stores.py), while a worker deletes its rows.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # `metadata` is SQLAlchemy's name for the table's MetaData: the attribute is metadata_.
    metadata_: Mapped[dict[str, str]] = mapped_column(
        "metadata", JSONObject, default=dict, server_default=EMPTY_OBJECT
    )

    __table_args__ = (
        # Live stores only: a store being deleted gives its name up at once.
        Index(
            "uq_stores_name_lower",
            func.lower(name),
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        ),
        # The few stores being deleted, which every read of the catalog leaves out.
        Index(
            "ix_stores_deleting",
            "id",
            postgresql_where=text("deleted_at IS NOT NULL"),
            sqlite_where=text("deleted_at IS NOT NULL"),
        ),
        # sort=updated_at and updated_after (incremental sync, §13).
        Index("ix_stores_updated_at_id", "updated_at", id),
        {"sqlite_autoincrement": True},
    )

    @property
    def last_modified(self) -> datetime:
        """When what the store's JSON shows last changed (Last-Modified, §14)."""
        return self.updated_at

    def __repr__(self) -> str:
        return f"<Store {self.id} {self.name!r}>"
