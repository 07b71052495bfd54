"""Where Idempotency-Key claims and answers live (core/web/idempotency.py uses them):
one small interface, a database store and a Redis store, both shared by every
worker and instance.

Entries expire: Redis drops them by TTL; expired database rows are taken over one by
one when their key comes again, and purged in bounded batches by ``purge`` (``flask
idempotency purge``, a periodic job) — never inside a request. Each store also counts
what every caller stored in the current UTC day, for the quota (§8).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Protocol

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from core.web.redis_client import redis_client
from db import db
from models import IdempotencyKey
from models.types import utcnow

DAY = 24 * 3600


@dataclass
class Answer:
    """What a key holds: the request it was first sent with (its fingerprint), and
    the answer to that request once there is one (``status`` None: still running)."""

    fingerprint: str
    status: int | None = None
    body: str = ""
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Usage:
    """What one caller stored today: keys claimed, bytes of answers kept."""

    keys: int
    size: int


class ReplayStore(Protocol):
    def claim(self, key: str, owner: str, fingerprint: str, lock_seconds: int) -> str | Answer:
        """A claim token if ``key`` is now ours (the token finishes or releases it);
        else what the key already holds."""

    def finish(self, key: str, token: str, answer: Answer, ttl_seconds: int) -> None:
        """Record the answer of a claimed key, to be replayed for ``ttl_seconds``;
        nothing if the claim ``token`` is no longer the key's (taken over)."""

    def release(self, key: str, token: str) -> None:
        """Let go of a claimed key (a retry runs afresh), if still ours; it no
        longer counts against the caller's quota."""

    def usage(self, owner: str) -> Usage:
        """What ``owner`` stored since the start of the current UTC day."""

    def purge(self, batch: int = 1000) -> int:
        """Drop keys past their expiry, ``batch`` rows per statement; how many."""


def _today() -> datetime:
    now = utcnow()
    return datetime.combine(now.date(), time(), tzinfo=now.tzinfo)


def _answer(fingerprint: str, status: int | None, body: str | None, headers: str | None) -> Answer:
    return Answer(fingerprint, status, body or "", json.loads(headers) if headers else {})


class DatabaseStore:
    """Keys in the application database. Each step is its own short transaction,
    independent of the request's: a claim is seen by every other worker at once."""

    def claim(self, key: str, owner: str, fingerprint: str, lock_seconds: int) -> str | Answer:
        token = uuid.uuid4().hex
        now = utcnow()
        fresh = {
            "fingerprint": fingerprint,
            "owner": owner,
            "claim": token,
            "status": None,
            "body": None,
            "headers": None,
            "size": 0,
            "created_at": now,
            "expires_at": now + timedelta(seconds=lock_seconds),
        }
        for _attempt in range(3):
            try:
                with db.engine.begin() as conn:
                    conn.execute(insert(IdempotencyKey), {"key": key, **fresh})
                return token
            except IntegrityError:
                pass
            with db.engine.begin() as conn:
                # Taken over only if expired: an old answer, or a claim whose worker
                # died. One row, by its primary key: no purge here.
                taken = conn.execute(
                    update(IdempotencyKey)
                    .where(IdempotencyKey.key == key, IdempotencyKey.expires_at < now)
                    .values(**fresh)
                ).rowcount
                if taken:
                    return token
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

    def finish(self, key: str, token: str, answer: Answer, ttl_seconds: int) -> None:
        with db.engine.begin() as conn:
            conn.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.key == key, IdempotencyKey.claim == token)
                .values(
                    status=answer.status,
                    body=answer.body,
                    headers=json.dumps(answer.headers),
                    size=len(answer.body.encode()),
                    expires_at=utcnow() + timedelta(seconds=ttl_seconds),
                )
            )

    def release(self, key: str, token: str) -> None:
        with db.engine.begin() as conn:
            conn.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.key == key,
                    IdempotencyKey.claim == token,
                    IdempotencyKey.status.is_(None),
                )
            )

    def usage(self, owner: str) -> Usage:
        with db.engine.connect() as conn:
            keys, size = conn.execute(
                select(func.count(), func.coalesce(func.sum(IdempotencyKey.size), 0)).where(
                    IdempotencyKey.owner == owner, IdempotencyKey.created_at >= _today()
                )
            ).one()
        return Usage(int(keys), int(size))

    def purge(self, batch: int = 1000) -> int:
        purged = 0
        while True:
            with db.engine.begin() as conn:
                expired = (
                    select(IdempotencyKey.key)
                    .where(IdempotencyKey.expires_at < utcnow())
                    .limit(batch)
                    .scalar_subquery()
                )
                count = conn.execute(
                    delete(IdempotencyKey).where(IdempotencyKey.key.in_(expired))
                ).rowcount
            purged += count
            if count < batch:
                return purged


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
    """Keys in Redis, expired by Redis itself; a claim expires after ``lock_seconds``
    (a dead worker's claim is abandoned), an answer after ``ttl_seconds``."""

    def __init__(self, url: str, prefix: str = "stores") -> None:
        self.redis = redis_client(url)
        self.prefix = f"{prefix}:idempotency:"
        self.if_ours = self.redis.register_script(_IF_OURS)

    def _usage_key(self, owner: str) -> str:
        return f"{self.prefix}usage:{_today().date().isoformat()}:{owner}"

    def claim(self, key: str, owner: str, fingerprint: str, lock_seconds: int) -> str | Answer:
        token = uuid.uuid4().hex
        value = json.dumps({"fingerprint": fingerprint, "claim": token, "owner": owner})
        for _attempt in range(3):
            if self.redis.set(self.prefix + key, value, nx=True, ex=max(1, lock_seconds)):
                usage = self._usage_key(owner)
                pipe = self.redis.pipeline()
                pipe.hincrby(usage, "keys", 1)
                pipe.expire(usage, DAY + 3600)
                pipe.execute()
                return token
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

    def finish(self, key: str, token: str, answer: Answer, ttl_seconds: int) -> None:
        found: bytes | None = self.redis.get(self.prefix + key)  # type: ignore[assignment]
        owner = json.loads(found).get("owner", "") if found else ""
        value = json.dumps(
            {
                "fingerprint": answer.fingerprint,
                "claim": token,
                "owner": owner,
                "status": answer.status,
                "body": answer.body,
                "headers": answer.headers,
            }
        )
        if self.if_ours(keys=[self.prefix + key], args=[token, value, max(1, ttl_seconds)]):
            usage = self._usage_key(owner)
            self.redis.hincrby(usage, "size", len(answer.body.encode()))

    def release(self, key: str, token: str) -> None:
        found: bytes | None = self.redis.get(self.prefix + key)  # type: ignore[assignment]
        if found and self.if_ours(keys=[self.prefix + key], args=[token, "", 0]):
            # Nothing is kept for it: it does not count against the quota.
            self.redis.hincrby(self._usage_key(json.loads(found).get("owner", "")), "keys", -1)

    def usage(self, owner: str) -> Usage:
        found = self.redis.hmget(self._usage_key(owner), ["keys", "size"])
        keys, size = found  # type: ignore[misc]
        return Usage(int(keys or 0), int(size or 0))

    def purge(self, batch: int = 1000) -> int:  # noqa: ARG002 - the interface's
        return 0  # Redis drops each key when its TTL runs out.
