"""Revoked tokens and sessions: the database store behind blocklist.py."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from db import Model
from models.types import UTCDateTime


class RevokedToken(Model):
    __tablename__ = "revoked_tokens"

    # "jti:<token id>" or "sid:<session id>".
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Once past, the revoked token would be refused as expired anyway: safe to purge.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
