"""The revocation list: both stores behave the same, and expired entries go."""

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from blocklist import DatabaseBlocklist, RedisBlocklist
from helpers import REDIS_URL, query
from models import RevokedToken
from models.types import utcnow


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def store(request, app):
    with app.app_context():
        yield DatabaseBlocklist() if request.param == "database" else RedisBlocklist(REDIS_URL)


def key() -> str:
    return f"jti:{uuid.uuid4().hex}"


def test_add_is_once_only(store):
    k = key()
    assert store.contains(k) is False
    assert store.add(k, utcnow() + timedelta(minutes=5)) is True
    assert store.add(k, utcnow() + timedelta(minutes=5)) is False
    assert store.contains(k) is True
    assert store.contains(key(), k) is True
    assert store.contains(key(), key()) is False
    store.ping()


def test_concurrent_adds_admit_exactly_one(app, store):
    """Two requests rotating the same refresh token at once: one wins."""
    k, results = key(), []
    barrier = threading.Barrier(8)

    def add():
        with app.app_context():
            barrier.wait()
            results.append(store.add(k, utcnow() + timedelta(minutes=5)))

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_database_entries_expire_and_are_purged(app):
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


def test_purge_command(app):
    with app.app_context():
        DatabaseBlocklist().add(key(), utcnow() - timedelta(seconds=1))
    result = app.test_cli_runner().invoke(args=["blocklist", "purge"])
    assert result.exit_code == 0
    expected = (
        "Purged 0 expired entries." if app.config["REDIS_URL"] else "Purged 1 expired entries."
    )
    assert expected in result.output


@pytest.mark.redis
def test_redis_entries_expire_with_the_token(app):
    store = RedisBlocklist(REDIS_URL)
    k = key()
    store.add(k, utcnow() + timedelta(seconds=90))
    ttl = store.redis.ttl(store.prefix + k)
    assert 85 <= ttl <= 92
    assert store.purge() == 0
