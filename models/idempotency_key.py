"""Remembered answers to POSTs sent with an Idempotency-Key: the database store
behind core/web/idempotency.py."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db import Model
from models.types import UTCDateTime


class IdempotencyKey(Model):
    __tablename__ = "idempotency_keys"

    # sha256 of the caller's scope and the key they sent: fixed width, and the
    # primary key is what makes the claim atomic (a second INSERT fails).
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    # HMAC of method, path and body: a reuse for another request is refused.
    fingerprint: Mapped[str] = mapped_column(String(64))
    # sha256 of the caller's scope: what each caller stored today (the quota, §8).
    owner: Mapped[str] = mapped_column(String(64), default="")
    # The claiming request's token: only it records or lets go of the key, so a
    # late original cannot overwrite the answer of a retry that took over.
    claim: Mapped[str | None] = mapped_column(String(32))
    # Bytes of the kept answer's body, counted against the caller's daily quota.
    size: Mapped[int] = mapped_column(default=0)
    # Null while the first request runs; then the answer to repeat.
    status: Mapped[int | None]
    body: Mapped[str | None] = mapped_column(Text())
    headers: Mapped[str | None] = mapped_column(Text())  # JSON: Location, ETag, Content-Type
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # In progress: when the claim counts as abandoned (the worker died); done: when
    # the answer is forgotten. Either way, past it the row may be purged.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

    __table_args__ = (Index("ix_idempotency_keys_owner_created_at", "owner", "created_at"),)
