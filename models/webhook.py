"""Webhooks (contract §11): where events are sent, and every attempt to send one."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from db import Model
from models.event import BigId
from models.types import Timestamps, UTCDateTime, utcnow

DELIVERY_STATUSES = ("pending", "succeeded", "failed")


class Webhook(Timestamps, Model):
    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    # Event types, or ["*"] for every type.
    events: Mapped[list[str]] = mapped_column(JSON())
    # One store, or NULL: every store of the owner (and the owner's job/webhook events).
    store_id: Mapped[int | None] = mapped_column(
        ForeignKey("stores.id", ondelete="CASCADE"), index=True
    )
    description: Mapped[str | None] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean(), default=True)
    # whsec_ + base64: shown once, at creation.
    secret: Mapped[str] = mapped_column(String(64))
    # Failed attempts since the last success: WEBHOOK_DISABLE_AFTER of them disable it.
    consecutive_failures: Mapped[int] = mapped_column(default=0)

    __table_args__ = ({"sqlite_autoincrement": True},)

    def __repr__(self) -> str:
        return f"<Webhook {self.id} {self.url!r}>"


class Delivery(Model):
    """One attempt to send one event to one webhook: the delivery log. A failed
    attempt with retries left is followed by a new pending row, numbered after the
    event's attempts so far (a manual retry takes a number too)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # A manual retry is one attempt: it schedules none after it.
    manual: Mapped[bool] = mapped_column(Boolean(), default=False)
    response_status: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(Text())
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int | None]
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Until then the attempt is queued (the sweep does not queue it again) ...
    queued_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # ... or running (a worker holds it; past it, the worker is presumed dead).
    running_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        # The delivery log of a webhook, newest first, by keyset.
        Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
        # The sweep's work: each webhook's attempts due (core/events/relay.py).
        Index(
            "ix_webhook_deliveries_webhook_id_due",
            "webhook_id",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        {"sqlite_autoincrement": True},
    )
