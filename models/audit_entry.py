"""The audit log: who changed what, from where, and what it was before."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, query_expression

from db import Model
from models.types import UTCDateTime, utcnow

ACTOR_TYPES = ("user", "anonymous", "api_key", "system")  # system: the command line
# What a store owner is shown of their stores' entries: the catalog, never an account's
# (an API key bound to the store is its maker's, who may be someone else).
STORE_TARGETS = ("store", "item", "tag", "stock_movement")
TARGET_TYPES = (*STORE_TARGETS, "user", "api_key", "webhook")


class AuditEntry(Model):
    """One change or sign-in. No foreign keys: the row outlives what it names (a
    deleted store's history stays), and it never holds a password, token or key."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[int | None] = mapped_column(Integer)
    # The store the target belongs to (catalog rows): what lets an owner read their
    # stores' entries.
    store_id: Mapped[int | None] = mapped_column(Integer)
    changes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    request_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(45))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    # ``ip`` as GET /audit shows it to its reader (an admin: every entry's; anyone else:
    # only their own entries' and their keys'), set by the list's query.
    shown_ip: Mapped[str | None] = query_expression()

    # Each filter of GET /audit with the id order it is listed in.
    __table_args__ = (
        Index("ix_audit_log_actor_id_id", "actor_id", "id"),
        Index("ix_audit_log_target_type_target_id_id", "target_type", "target_id", "id"),
        Index("ix_audit_log_target_type_id", "target_type", "id"),
        Index("ix_audit_log_action_id", "action", "id"),
        Index("ix_audit_log_store_id_id", "store_id", "id"),
        {"sqlite_autoincrement": True},
    )

    @property
    def actor(self) -> dict[str, Any]:
        if self.actor_id is None:  # anonymous, or the command line
            return {"type": self.actor_type}
        return {"type": self.actor_type, "id": self.actor_id}

    @property
    def target(self) -> dict[str, Any]:
        return {"type": self.target_type, "id": self.target_id}

    def __repr__(self) -> str:
        return f"<AuditEntry {self.id} {self.action}>"
