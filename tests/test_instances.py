"""Several real instances on one PostgreSQL and one Redis (issues 3 and 5).

The service keeps no state of its own: revocations and rate-limit counters live in
Redis, everything else in PostgreSQL. Whatever one worker of one instance did, every
worker of every instance must see at the very next request. These tests start real
gunicorn instances (production config, 2 sync workers each) on a database of their
own, and check that claim request by request. A request is aimed at one worker by
pausing its siblings for a moment (``Server.only_worker``).

Every test is bounded: each request by ``servers.REQUEST_TIMEOUT``, the whole test
by ``TIME_LIMIT`` (then it fails, and still stops its servers).
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest
import redis

from conftest import PASSWORD, PG_URL, REDIS_URL, assert_error
from servers import Response, Server, gunicorns, migrate, postgres_database
from servers import server_env as base_env

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

WORKERS = 2  # per instance
PER_WORKER = 10  # requests aimed at each worker: 20 per instance
TIME_LIMIT = 60  # seconds per test; a normal run takes a few
# Every request here comes from 127.0.0.1, one client IP: the shared instances have
# roomy limits (the contract's own are tested on a pair of their own below).
ROOMY_LIMITS = {"AUTH_RATE_LIMIT": "10000 per minute", "RATE_LIMIT_DEFAULT": "100000 per minute"}


# --- servers -------------------------------------------------------------------


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expire(_signum, _frame):
        raise TimeoutError(f"the test ran over its {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """This file's own PostgreSQL database, migrated; dropped at the end, come what may."""
    with postgres_database(PG_URL, prefix="stores_inst_") as url:
        migrate(base_env(APP_ENV="production", DATABASE_URL=url))
        yield url


@contextmanager
def instances(database_url: str, count: int, **values: str) -> Iterator[list[Server]]:
    """``count`` production instances on the test database and Redis, with rate-limit
    counters of their own (a fresh ``RATE_LIMIT_KEY_PREFIX``, deleted afterwards)."""
    prefix = f"stores_inst_{uuid.uuid4().hex[:12]}"
    env = base_env(
        APP_ENV="production",
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        RATE_LIMIT_KEY_PREFIX=prefix,
        # Short lifetimes: the revocations left in Redis expire within minutes.
        JWT_ACCESS_TOKEN_EXPIRES="300",
        JWT_REFRESH_TOKEN_EXPIRES="600",
    )
    try:
        with gunicorns(env | values, count=count, workers=WORKERS) as servers:
            yield servers
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"*{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def start(database_url) -> Iterator[Callable[..., list[Server]]]:
    """``start(count, **env)``: instances for this test only, stopped after it."""
    with ExitStack() as stack, time_limit(TIME_LIMIT):
        yield lambda count, **values: stack.enter_context(instances(database_url, count, **values))


@pytest.fixture(scope="module")
def _three(database_url) -> Iterator[list[Server]]:
    with instances(database_url, 3, **ROOMY_LIMITS) as servers:
        yield servers


@pytest.fixture
def three(_three) -> Iterator[list[Server]]:
    """Three instances on one dataset, started once for this file."""
    with time_limit(TIME_LIMIT):
        yield _three


# --- clients -----------------------------------------------------------------------


def unique(name: str) -> str:
    """A name no other test (or earlier run) has used: the database is shared."""
    return f"{name}_{uuid.uuid4().hex[:8]}"


def register(server: Server, username: str) -> Response:
    body = {"username": username, "email": f"{unique(username)}@example.com", "password": PASSWORD}
    return server.request("POST", "/register", body)


def login(server: Server, username: str, password: str = PASSWORD) -> Response:
    return server.request("POST", "/login", {"username": username, "password": password})


def new_session(server: Server) -> tuple[str, dict]:
    """A new user signed in through ``server``: their name and the tokens."""
    username = unique("user")
    assert register(server, username).status_code == 201
    tokens = login(server, username)
    assert tokens.status_code == 200, tokens
    return username, tokens.json


def on_every_worker(
    servers: list[Server],
    method: str,
    path: str,
    body: dict | None = None,
    *,
    times: int = PER_WORKER,
    **options,
) -> list[tuple[str, Response]]:
    """The same request ``times`` times through each worker of each server, one worker
    at a time; each answer with where it came from."""
    answers = []
    for n, server in enumerate(servers):
        for pid in server.workers():
            with server.only_worker(pid):
                for _ in range(times):
                    answer = server.request(method, path, body, **options)
                    answers.append((f"instance {n} worker {pid}", answer))
    assert len({where for where, _ in answers}) == len(servers) * WORKERS
    return answers


def tally(answers: list[tuple[str, Response]]) -> Counter:
    """How many answers had each (status, error code)."""
    return Counter((r.status_code, (r.json or {}).get("error")) for _, r in answers)


# --- issue 3: two instances share revocations and rate limits ---------------------------
# The session tests use two of the three shared instances (the third idles); the
# rate-limit tests start a pair of their own, with the contract's limits and counters
# of their own.


def test_a_logout_through_a_is_seen_at_once_by_every_worker_of_a_and_b(three):
    a, b, _ = three
    username, tokens = new_session(a)
    access, refresh = tokens["access_token"], tokens["refresh_token"]

    answers = on_every_worker([a, b], "GET", "/users/me", token=access)
    assert tally(answers) == {(200, None): 2 * WORKERS * PER_WORKER}
    assert {r.json["username"] for _, r in answers} == {username}

    assert a.request("POST", "/logout", token=access).status_code == 200
    next_request = b.request("GET", "/users/me", token=access)  # elsewhere, at once
    assert_error(next_request, 401, error="token_revoked")
    answers = on_every_worker([a, b], "GET", "/users/me", token=access)
    assert tally(answers) == {(401, "token_revoked"): 2 * WORKERS * PER_WORKER}
    # The refresh token of the session went with it.
    answers = on_every_worker([a, b], "POST", "/refresh", token=refresh, times=2)
    assert tally(answers) == {(401, "token_revoked"): 2 * WORKERS * 2}


def test_a_refresh_token_replayed_through_b_ends_the_session_used_through_a(three):
    a, b, _ = three
    _, first = new_session(a)
    second = a.request("POST", "/refresh", token=first["refresh_token"])
    assert second.status_code == 200, second
    second = second.json
    assert a.request("GET", "/users/me", token=second["access_token"]).status_code == 200

    # The rotated token turns up at B: someone else holds a copy.
    replay = b.request("POST", "/refresh", token=first["refresh_token"])
    assert_error(replay, 401, error="token_revoked")

    # So every token of the session is dead, on every worker of both instances.
    for method, path, token in [
        ("GET", "/users/me", second["access_token"]),
        ("POST", "/refresh", second["refresh_token"]),
        ("GET", "/users/me", first["access_token"]),
    ]:
        answers = on_every_worker([a, b], method, path, token=token, times=2)
        assert tally(answers) == {(401, "token_revoked"): 2 * WORKERS * 2}, (method, path)


def test_failed_logins_through_a_and_b_share_one_budget(start):
    a, b = start(2)  # the contract's AUTH_RATE_LIMIT: 5 per minute; 20 per hour
    username = unique("alice")
    assert register(a, username).status_code == 201  # /register has a budget of its own
    a1, a2 = a.workers()
    b1, b2 = b.workers()

    # 3 failures through A and 2 through B, every worker taking part: one count.
    for n, (server, pid) in enumerate([(a, a1), (a, a2), (a, a1), (b, b1), (b, b2)]):
        with server.only_worker(pid):
            failed = login(server, username, "wrong password")
        assert_error(failed, 401)
        where = f"attempt {n + 1}, through worker {pid}"
        assert failed.headers["X-RateLimit-Limit"] == "5", where
        assert failed.headers["X-RateLimit-Remaining"] == str(4 - n), where

    # The sixth, through either instance and any worker, is refused: even the right password.
    right = {"username": username, "password": PASSWORD}
    answers = on_every_worker([b, a], "POST", "/login", right, times=1)
    assert tally(answers) == {(429, None): 2 * WORKERS}
    for where, refused in answers:
        body = assert_error(refused, 429)
        assert "5 per 1 minute" in body["message"], where
        assert 0 < int(refused.headers["Retry-After"]) <= 60, where
        assert refused.headers["X-RateLimit-Limit"] == "5", where
        assert refused.headers["X-RateLimit-Remaining"] == "0", where
        assert 0 < int(refused.headers["X-RateLimit-Reset"]) - time.time() <= 61, where


def test_without_redis_revocations_are_still_shared_but_rate_limits_are_not(start):
    """The negative control: why several instances need REDIS_URL."""
    a, b = start(2, REDIS_URL="")  # revocations in PostgreSQL, rate limits in each process
    username = unique("alice")
    assert register(a, username).status_code == 201
    a1, a2 = a.workers()
    b1, b2 = b.workers()

    # Revocations live in the database: a logout through B is seen by every worker of A.
    with b.only_worker(b1):
        access = login(b, username).json["access_token"]
    assert b.request("POST", "/logout", token=access).status_code == 200
    answers = on_every_worker([a], "GET", "/users/me", token=access, times=2)
    assert tally(answers) == {(401, "token_revoked"): WORKERS * 2}

    # Rate limits are counted by each process alone: A's first worker is out of budget...
    with a.only_worker(a1):
        for _ in range(5):
            assert login(a, username, "wrong password").status_code == 401
        assert_error(login(a, username, "wrong password"), 429)
    # ...while its other worker, and B's, have never heard of those five failures.
    for server, pid in [(a, a2), (b, b2)]:
        with server.only_worker(pid):
            failed = login(server, username, "wrong password")
        assert_error(failed, 401)
        assert failed.headers["X-RateLimit-Remaining"] == "4", pid
