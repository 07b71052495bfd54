"""Token revocation: one small interface, a database store and a Redis store.

Keys are ``jti:<token id>`` (one token, e.g. a refresh token already rotated) or
``sid:<session id>`` (every token of a login session, e.g. after logout). Each entry
lives until the tokens it covers would have expired anyway, then disappears: Redis
expires it by TTL; the database store purges expired rows whenever it adds one, and
``flask blocklist purge`` does it on demand.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, cast

from flask import Flask, current_app
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from core.web.redis_client import redis_client
from db import db
from models import RevokedToken
from models.types import utcnow


class Blocklist(Protocol):
    def add(self, key: str, expires_at: datetime) -> bool:
        """Revoke ``key`` until ``expires_at``; False if it was revoked already."""

    def contains(self, *keys: str) -> bool:
        """Whether any of ``keys`` is revoked."""

    def purge(self) -> int:
        """Drop entries past their expiry; how many were dropped."""


class DatabaseBlocklist:
    """Revocations in the application database: nothing else to run.

    Each revocation uses its own short transaction, so it is durable at once and
    independent of whatever the request does afterwards.
    """

    def add(self, key: str, expires_at: datetime) -> bool:
        try:
            with db.engine.begin() as conn:
                conn.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
                conn.execute(insert(RevokedToken), {"key": key, "expires_at": expires_at})
        except IntegrityError:
            return False
        return True

    def contains(self, *keys: str) -> bool:
        # A read, on the request's own session: no second connection per request.
        query = select(RevokedToken.key).where(
            RevokedToken.key.in_(keys), RevokedToken.expires_at >= utcnow()
        )
        return db.session.execute(query.limit(1)).first() is not None

    def purge(self) -> int:
        with db.engine.begin() as conn:
            result = conn.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
        return result.rowcount


class RedisBlocklist:
    """Revocations in Redis: shared by every instance, expired by Redis itself."""

    def __init__(self, url: str, prefix: str = "stores") -> None:
        self.redis = redis_client(url)
        self.prefix = f"{prefix}:revoked:"

    def add(self, key: str, expires_at: datetime) -> bool:
        ttl = max(1, int((expires_at - utcnow()).total_seconds()) + 1)
        return bool(self.redis.set(self.prefix + key, 1, ex=ttl, nx=True))

    def contains(self, *keys: str) -> bool:
        # redis-py types its sync and asyncio clients alike; this one returns an int.
        found = cast(int, self.redis.exists(*(self.prefix + key for key in keys)))
        return found > 0

    def purge(self) -> int:
        return 0  # Redis drops each entry when its TTL runs out.

    def ping(self) -> None:
        """Raise if Redis cannot be reached (for /ready)."""
        self.redis.ping()


def init_app(app: Flask) -> None:
    url = app.config.get("REDIS_URL")
    app.extensions["blocklist"] = (
        RedisBlocklist(url, app.config["REDIS_KEY_PREFIX"]) if url else DatabaseBlocklist()
    )


def get_blocklist() -> Blocklist:
    blocklist: Blocklist = current_app.extensions["blocklist"]
    return blocklist
