"""Where Idempotency-Key claims and answers live (core/web/idempotency.py uses them):
one small interface, a database store and a Redis store, both shared by every
worker and instance. Entries expire: Redis by TTL; the database store purges
expired rows whenever it claims a key, and ``flask idempotency purge`` on demand.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import redis
from flask import g
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from db import db
from models import IdempotencyKey
from models.types import utcnow


@dataclass
class Answer:
    """What a key holds: the request it was first sent with (its fingerprint), and
    the answer to that request once there is one (``status`` None: still running)."""

    fingerprint: str
    status: int | None = None
    body: str = ""
    headers: dict[str, str] | None = None


class ReplayStore(Protocol):
    def claim(self, key: str, fingerprint: str, lock_seconds: int) -> Answer | None:
        """None if ``key`` is now ours; else what it already holds."""

    def finish(self, key: str, answer: Answer, ttl_seconds: int) -> None:
        """Record the answer of a claimed key, to be replayed for ``ttl_seconds``."""

    def release(self, key: str) -> None:
        """Let go of a claimed key: a retry runs afresh."""

    def purge(self) -> int:
        """Drop keys past their expiry; how many."""


def _answer(fingerprint: str, status: int | None, body: str | None, headers: str | None) -> Answer:
    return Answer(fingerprint, status, body or "", json.loads(headers) if headers else {})


class DatabaseStore:
    """Keys in the application database. Each step is its own short transaction,
    independent of the request's: a claim is seen by every other worker at once."""

    def claim(self, key: str, fingerprint: str, lock_seconds: int) -> Answer | None:
        now = utcnow()
        row = {
            "key": key,
            "fingerprint": fingerprint,
            "created_at": now,
            "expires_at": now + timedelta(seconds=lock_seconds),
        }
        for _attempt in range(3):
            try:
                with db.engine.begin() as conn:
                    # Purged on the fly: expired answers and abandoned claims, this
                    # key's own included (which lets a retry take it over).
                    conn.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at < now))
                    conn.execute(insert(IdempotencyKey), row)
                return None
            except IntegrityError:
                with db.engine.connect() as conn:
                    found = conn.execute(
                        select(
                            IdempotencyKey.fingerprint,
                            IdempotencyKey.status,
                            IdempotencyKey.body,
                            IdempotencyKey.headers,
                        ).where(IdempotencyKey.key == key)
                    ).first()
                if found is not None:
                    return _answer(*found)
                # Let go of in between (a refused first request): claim it again.
        return Answer(fingerprint)  # pragma: no cover - three lost races in a row

    def finish(self, key: str, answer: Answer, ttl_seconds: int) -> None:
        with db.engine.begin() as conn:
            conn.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.key == key, IdempotencyKey.status.is_(None))
                .values(
                    status=answer.status,
                    body=answer.body,
                    headers=json.dumps(answer.headers),
                    expires_at=utcnow() + timedelta(seconds=ttl_seconds),
                )
            )

    def release(self, key: str) -> None:
        with db.engine.begin() as conn:
            conn.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.key == key, IdempotencyKey.status.is_(None)
                )
            )

    def purge(self) -> int:
        with db.engine.begin() as conn:
            result = conn.execute(
                delete(IdempotencyKey).where(IdempotencyKey.expires_at < utcnow())
            )
        return result.rowcount


# Changes a key only while it still holds this worker's claim (its token), so a
# claim taken over after it was abandoned is not overwritten by the late original.
_IF_OURS = """
local value = redis.call('GET', KEYS[1])
if not value or cjson.decode(value)['claim'] ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


class RedisStore:
    """Keys in Redis, expired by Redis itself."""

    def __init__(self, url: str, prefix: str = "stores") -> None:
        self.redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = f"{prefix}:idempotency:"
        self.if_ours = self.redis.register_script(_IF_OURS)

    def claim(self, key: str, fingerprint: str, lock_seconds: int) -> Answer | None:
        token = uuid.uuid4().hex
        g.idempotency_claim = token
        value = json.dumps({"fingerprint": fingerprint, "claim": token})
        for _attempt in range(3):
            if self.redis.set(self.prefix + key, value, nx=True, ex=max(1, lock_seconds)):
                return None
            found: bytes | None = self.redis.get(self.prefix + key)  # type: ignore[assignment]
            if found is not None:
                data = json.loads(found)
                return Answer(
                    data["fingerprint"],
                    data.get("status"),
                    data.get("body", ""),
                    data.get("headers") or {},
                )
        return Answer(fingerprint)  # pragma: no cover - three lost races in a row

    def finish(self, key: str, answer: Answer, ttl_seconds: int) -> None:
        value = json.dumps(
            {
                "fingerprint": answer.fingerprint,
                "claim": g.idempotency_claim,
                "status": answer.status,
                "body": answer.body,
                "headers": answer.headers,
            }
        )
        ttl = max(1, ttl_seconds)
        self.if_ours(keys=[self.prefix + key], args=[g.idempotency_claim, value, ttl])

    def release(self, key: str) -> None:
        self.if_ours(keys=[self.prefix + key], args=[g.idempotency_claim, "", 0])

    def purge(self) -> int:
        return 0  # Redis drops each key when its TTL runs out.
