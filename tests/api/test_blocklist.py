"""The revocation list: both stores behave the same, and expired entries go."""

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

import pytest
from flask import Flask
from sqlalchemy import insert, select

from blocklist import DatabaseBlocklist, RedisBlocklist
from db import db
from helpers import REDIS_URL, query
from models import RevokedToken
from models.types import utcnow


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: Any, app: Flask) -> Iterator[Any]:
    with app.app_context():
        yield DatabaseBlocklist() if request.param == "database" else RedisBlocklist(REDIS_URL)


def key() -> str:
    return f"jti:{uuid.uuid4().hex}"


def test_add_is_once_only(store: Any) -> None:
    k = key()
    assert store.contains(k) is False
    assert store.add(k, utcnow() + timedelta(minutes=5)) is True
    assert store.add(k, utcnow() + timedelta(minutes=5)) is False
    assert store.contains(k) is True
    assert store.contains(key(), k) is True
    assert store.contains(key(), key()) is False


def test_concurrent_adds_admit_exactly_one(app: Flask, store: Any) -> None:
    """Two requests rotating the same refresh token at once: one wins."""
    k, results = key(), []
    barrier = threading.Barrier(8)

    def add() -> None:
        with app.app_context():
            barrier.wait()
            results.append(store.add(k, utcnow() + timedelta(minutes=5)))

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_database_entries_expire_and_are_purged(app: Flask) -> None:
    with app.app_context():
        store = DatabaseBlocklist()
        old, live = key(), key()
        store.add(old, utcnow() - timedelta(seconds=1))
        assert store.contains(old) is False  # past its expiry: the token is dead anyway
        store.add(live, utcnow() + timedelta(minutes=5))
        # Adding purged the expired entry without anyone asking.
        assert query(app, select(RevokedToken.key)) == [(live,)]
        store.add(key(), utcnow() - timedelta(seconds=1))
        assert store.purge() == 1
        assert query(app, select(RevokedToken.key)) == [(live,)]


@pytest.mark.config(REDIS_URL=None)  # the database store, with or without Redis
def test_the_purge_command_drops_exactly_the_expired_entries(app: Flask) -> None:
    now = utcnow()
    expiries = {
        "jti:expired-long-ago": now - timedelta(days=1),
        "sid:just-expired": now - timedelta(seconds=1),
        "jti:live": now + timedelta(minutes=5),
        "sid:live": now + timedelta(days=30),
    }
    with app.app_context():
        # Inserted as they are: add() would purge the expired ones itself.
        db.session.execute(
            insert(RevokedToken), [{"key": k, "expires_at": e} for k, e in expiries.items()]
        )
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["blocklist", "purge"])
    assert result.exit_code == 0
    assert "Purged 2 expired entries." in result.output
    assert sorted(query(app, select(RevokedToken.key))) == [("jti:live",), ("sid:live",)]


@pytest.mark.redis
def test_redis_entries_expire_with_the_token(app: Flask) -> None:
    """Redis needs no purge: every entry is written with a TTL that ends when the
    tokens it covers would have expired (at least 1 s, for one expired already)."""
    store = RedisBlocklist(REDIS_URL)
    live, expired = key(), key()
    store.add(live, utcnow() + timedelta(seconds=90))
    store.add(expired, utcnow() - timedelta(seconds=30))
    assert 85 <= cast(int, store.redis.ttl(store.prefix + live)) <= 92
    # A second to live, or gone already; never kept without a TTL (-1).
    left_ms = cast(int, store.redis.pttl(store.prefix + expired))
    assert left_ms == -2 or 0 < left_ms <= 1000
