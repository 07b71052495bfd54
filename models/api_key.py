"""API keys (contract §15): a machine's credential, acting as its owner narrowed to
its scopes and (optionally) one store. Only a hash of the key is kept."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ColumnElement, ForeignKey, Index, String, and_, or_
from sqlalchemy.orm import Mapped, mapped_column

from db import Model
from models.types import UTCDateTime, utcnow

# What a key may be given; which endpoint needs which is core/auth/scopes.py.
SCOPES = ("catalog:read", "catalog:write", "stock:write", "events:read", "webhooks:manage", "jobs")


class ApiKey(Model):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(80))
    # SHA-256 of the whole key, hex: the key is 256 random bits, so a fast hash loses
    # nothing (there is no dictionary to try) and a lookup by it is one index probe.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # What a list shows to tell keys apart: "sk_" + the first characters, and the last four.
    prefix: Mapped[str] = mapped_column(String(16))
    last_four: Mapped[str] = mapped_column(String(4))
    scopes: Mapped[list[str]] = mapped_column(JSON())
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Written at most once a minute per key (core/auth/api_keys.py ``touch``).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        # The owner's keys, by keyset (GET /api-keys).
        Index("ix_api_keys_owner_id_id", "owner_id", "id"),
        Index("ix_api_keys_store_id", "store_id"),
        {"sqlite_autoincrement": True},
    )

    # A live key signs requests and counts against API_KEY_MAX_PER_USER; an expired one
    # is still listed until revoked, or ended by its owner's next key. The rule, on a
    # row and in SQL, side by side:

    def live_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @classmethod
    def live_at_sql(cls, now: datetime) -> ColumnElement[bool]:
        return and_(cls.revoked_at.is_(None), or_(cls.expires_at.is_(None), cls.expires_at > now))

    def __repr__(self) -> str:
        return f"<ApiKey {self.id} {self.prefix}...{self.last_four}>"
