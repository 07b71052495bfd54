"""Two instances share revocations and rate limits (issue 3): a logout, a replayed
refresh token or a failed login counts at once on every worker of every instance;
without Redis, revocations are still shared but rate limits are not.

The machinery (instances, fixtures, clients) is tests/instances.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from helpers import PASSWORD, assert_error
from instances import (
    PER_WORKER,
    WORKERS,
    login,
    new_session,
    on_every_worker,
    register,
    tally,
    unique,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


# --- issue 3: two instances share revocations and rate limits ---------------------------
# The session tests use two of the three shared instances (the third idles); the
# rate-limit tests start a pair of their own, with the contract's limits and counters
# of their own.


def test_a_logout_through_a_is_seen_at_once_by_every_worker_of_a_and_b(three: Any) -> None:
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


def test_a_refresh_token_replayed_through_b_ends_the_session_used_through_a(three: Any) -> None:
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


def test_failed_logins_through_a_and_b_share_one_budget(start: Any) -> None:
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


def test_without_redis_revocations_are_still_shared_but_rate_limits_are_not(start: Any) -> None:
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
