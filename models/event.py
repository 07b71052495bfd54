"""The outbox: every committed change as an event (contract §10), and the counter
that gives events their public, gap-free order once they are committed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DDL, JSON, BigInteger, Index, Integer, String, event, text
from sqlalchemy.orm import Mapped, mapped_column

from db import Model
from models.types import UTCDateTime, utcnow

# A 64-bit key on PostgreSQL; SQLite's rowid (only INTEGER PRIMARY KEY autoincrements).
BigId = BigInteger().with_variant(Integer(), "sqlite")


# The predicate of the indexes that serve GET /events (it lists numbered events only).
NUMBERED: dict[str, Any] = {
    "postgresql_where": text("seq IS NOT NULL"),
    "sqlite_where": text("seq IS NOT NULL"),
}


class Event(Model):
    __tablename__ = "events"

    # Assigned at INSERT, in the order transactions wrote, which is not the order they
    # commit in: the outbox's own key, never shown.
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Assigned after commit by the one sequencer (core/events/relay.py), in commit order:
    # the public id (`evt_` + seq) and the order of GET /events. NULL until then: an
    # event without it is neither listed nor delivered yet.
    seq: Mapped[int | None] = mapped_column(BigInteger(), unique=True)
    type: Mapped[str] = mapped_column(String(40))
    # No foreign keys: an event outlives the store, user or webhook it tells about.
    store_id: Mapped[int | None]
    # Who may read it (GET /events) and whose webhooks receive it: the store's owner
    # when it was written, or the job's / webhook's owner (store_id null).
    owner_id: Mapped[int | None]
    # Only this webhook receives it (a `webhook.test`); else every matching one.
    webhook_id: Mapped[int | None]
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None]
    request_id: Mapped[str | None] = mapped_column(String(64))
    # The span it was written in, as a W3C ``traceparent``: its deliveries are sent in
    # that trace, however late and by whichever task (NULL: written with tracing off).
    traceparent: Mapped[str | None] = mapped_column(String(55))
    data: Mapped[dict[str, Any]] = mapped_column(JSON())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)

    __table_args__ = (
        # The sequencer's work: events still without a position (few at any time).
        Index(
            "ix_events_unsequenced",
            "id",
            postgresql_where=text("seq IS NULL"),
            sqlite_where=text("seq IS NULL"),
        ),
        # GET /events of one owner, and of one store, in order.
        Index("ix_events_owner_id_seq", "owner_id", "seq"),
        Index("ix_events_store_id_seq", "store_id", "seq"),
        # An owner's filtered by type (a store's too: the owner's range, by store), and
        # an admin's by type: numbered events only (the listed ones), so an event enters
        # them when the relay numbers it, not when it is written (migration 0017).
        Index("ix_events_owner_id_type_seq", "owner_id", "type", "seq", **NUMBERED),
        Index("ix_events_type_seq", "type", "seq", **NUMBERED),
        {"sqlite_autoincrement": True},
    )

    @property
    def public_id(self) -> str:
        return public_id(self.seq)

    def __repr__(self) -> str:
        return f"<Event {self.id} {self.type} seq={self.seq}>"


def public_id(seq: int | None) -> str:
    """``evt_`` + the position, zero-padded so that ids sort as they are ordered."""
    return f"evt_{seq or 0:016d}"


class EventCounter(Model):
    """One row: the last position given. Its row lock makes the sequencer one writer."""

    __tablename__ = "event_counter"

    id: Mapped[int] = mapped_column(primary_key=True)
    last: Mapped[int] = mapped_column(BigInteger(), default=0)


# The one row, wherever the table is made (the migration inserts it too).
event.listen(
    EventCounter.__table__,
    "after_create",
    DDL("INSERT INTO event_counter (id, last) VALUES (1, 0)"),  # type: ignore[no-untyped-call]
)
