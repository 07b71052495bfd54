"""Users: who signs in, and with which role."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from db import Model
from models.types import UTCDateTime, utcnow

ROLES = ("user", "admin")


def new_token_key() -> str:
    return uuid.uuid4().hex


class User(Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80))
    email: Mapped[str] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    # Every token carries the key current when it was issued. A new password gets
    # a new key, which ends every session of the user at once.
    token_key: Mapped[str] = mapped_column(String(32), default=new_token_key)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        CheckConstraint(f"role IN ({', '.join(repr(role) for role in ROLES)})", name="role"),
        Index("uq_users_username_lower", func.lower(username), unique=True),
        Index("uq_users_email_lower", func.lower(email), unique=True),
        # SQLite would otherwise give a deleted user's id to the next one.
        {"sqlite_autoincrement": True},
    )

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username!r}>"
