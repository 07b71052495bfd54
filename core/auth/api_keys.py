"""API keys (contract §15): made, recognised, revoked.

A key is ``sk_`` + 32 random bytes in url-safe base64 (43 characters). Only its
SHA-256 is stored. A slow hash (Argon2, as for passwords) protects secrets people
choose, which a stolen table lets an attacker guess at; a key has 256 bits of
entropy, so there is nothing to guess, and a fast hash keeps the check per request
to one index probe.

Every request that sends a key reads its row from the database: a revocation (or an
expiry) is seen by the next request on every worker of every instance, with no cache
to wait out. ``last_used_at`` is written at most once a minute per key, by a
conditional UPDATE on a connection of its own (see ``touch``).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from jwt.exceptions import InvalidTokenError
from sqlalchemy import or_, select, update

from db import db
from models import ApiKey, User
from models.types import utcnow

PREFIX = "sk_"
SHOWN_PREFIX = 8  # "sk_" and five characters, enough to tell keys apart in a list
LAST_USED_EVERY = timedelta(seconds=60)


class KeyRefusedError(Exception):
    """A key that exists but may no longer be used (revoked or expired)."""

    def __init__(self, key_id: int) -> None:
        super().__init__(f"API key {key_id} is revoked or expired")
        self.key_id = key_id


def is_api_key(token: str) -> bool:
    return token.startswith(PREFIX)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(owner_id: int, name: str, scopes: list[str], **optional: Any) -> tuple[ApiKey, str]:
    """A new key row (added to the session; the caller commits) and the key itself,
    which is never stored and so can be shown only now."""
    key = PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        owner_id=owner_id,
        name=name,
        scopes=sorted(set(scopes)),
        key_hash=digest(key),
        prefix=key[:SHOWN_PREFIX],
        last_four=key[-4:],
        **optional,
    )
    db.session.add(row)
    return row, key


def claims_for(key: str) -> dict[str, Any]:
    """The claims a key stands for, like an access token's: its owner as ``sub``, fresh
    (§16), the owner's token key, and the key's id, scopes and store. Raises
    ``InvalidTokenError`` for an unknown key and ``KeyRefusedError`` for a revoked or expired
    one."""
    found = db.session.execute(
        select(ApiKey, User.token_key)
        .join(User, User.id == ApiKey.owner_id)
        .where(ApiKey.key_hash == digest(key))
    ).one_or_none()
    if found is None:
        raise InvalidTokenError("unknown API key")
    row, token_key = found
    now = utcnow()
    if not row.live_at(now):
        raise KeyRefusedError(row.id)
    touch(row, now)
    return {
        "type": "access",
        "sub": str(row.owner_id),
        "fresh": True,
        "jti": f"api_key:{row.id}",
        "sid": f"api_key:{row.id}",
        "user_key": token_key,
        "api_key": {"id": row.id, "scopes": list(row.scopes), "store_id": row.store_id},
    }


def touch(row: ApiKey, now: datetime) -> None:
    """Note that the key was used, at most once a minute: a request whose key was
    used less than a minute ago writes nothing; otherwise one UPDATE, made only if no
    other request (on any instance) did it meanwhile. It runs on a connection of its
    own and commits at once: a read-only request has nothing else to commit, and a
    request that fails still used the key."""
    stale = now - LAST_USED_EVERY
    if row.last_used_at is not None and row.last_used_at > stale:
        return
    with db.engine.begin() as connection:
        connection.execute(
            update(ApiKey)
            .where(
                ApiKey.id == row.id,
                or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= stale),
            )
            .values(last_used_at=now)
        )


def revoke(row: ApiKey) -> datetime:
    """Revoked from now on (the caller commits); the row stays, for its audit trail."""
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row.revoked_at
