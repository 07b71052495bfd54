"""Remembered answers to POSTs sent with an Idempotency-Key: the database store
behind core/web/idempotency.py."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db import Model
from models.types import UTCDateTime


class IdempotencyKey(Model):
    __tablename__ = "idempotency_keys"

    # sha256 of the caller's scope and the key they sent: fixed width, and the
    # primary key is what makes the claim atomic (a second INSERT fails).
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    # sha256 of method, path and body: a reuse for another request is refused.
    fingerprint: Mapped[str] = mapped_column(String(64))
    # Null while the first request runs; then the answer to repeat.
    status: Mapped[int | None]
    body: Mapped[str | None] = mapped_column(Text())
    headers: Mapped[str | None] = mapped_column(Text())  # JSON: Location, ETag, Content-Type
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # In progress: when the claim counts as abandoned (the worker died); done: when
    # the answer is forgotten. Either way, past it the row may be purged.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
