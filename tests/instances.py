"""Several real instances on one PostgreSQL and one Redis: the machinery of the
test_instances_*.py modules (loaded as a plugin by conftest.py).

The service keeps no state of its own: revocations and rate-limit counters live in
Redis, everything else in PostgreSQL. Whatever one worker of one instance did, every
worker of every instance must see at the very next request. The tests start real
gunicorn instances (production config, 2 sync workers each) on a database of their
own, and check that claim request by request. A request is aimed at one worker by
pausing its siblings for a moment (``Server.only_worker``).

Every test is bounded: each request by ``servers.REQUEST_TIMEOUT``, the whole test
by ``TIME_LIMIT`` (then it fails, and still stops its servers). Each test module
gets its own database and its own three shared instances (module-scoped fixtures).
"""

from __future__ import annotations

import signal
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from helpers import PASSWORD, PG_URL, REDIS_URL, drop_redis_keys
from servers import REQUEST_TIMEOUT, Response, Server, gunicorns, migrate, postgres_database
from servers import server_env as base_env

WORKERS = 2  # per instance
PER_WORKER = 10  # requests aimed at each worker: 20 per instance
TIME_LIMIT = 60  # seconds per test; a normal run takes a few
# Every request here comes from 127.0.0.1, one client IP: the shared instances have
# roomy limits (the contract's own are tested on a pair of their own:
# test_instances_sessions.py).
ROOMY_LIMITS = {"AUTH_RATE_LIMIT": "10000 per minute", "RATE_LIMIT_DEFAULT": "100000 per minute"}


# --- servers -------------------------------------------------------------------


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expire(_signum: Any, _frame: Any) -> None:
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
    """The test module's own PostgreSQL database, migrated; dropped at the end, come
    what may."""
    with postgres_database(PG_URL, prefix="stores_inst_") as url:
        migrate(base_env(APP_ENV="production", DATABASE_URL=url))
        yield url


@contextmanager
def instances(database_url: str, count: int, **values: str) -> Iterator[list[Server]]:
    """``count`` production instances on the test database and Redis, with rate-limit
    counters of their own (a fresh ``REDIS_KEY_PREFIX``, deleted afterwards)."""
    prefix = f"stores_inst_{uuid.uuid4().hex[:12]}"
    env = base_env(
        APP_ENV="production",
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        REDIS_KEY_PREFIX=prefix,
        # Short lifetimes: the revocations left in Redis expire within minutes.
        JWT_ACCESS_TOKEN_EXPIRES="300",
        JWT_REFRESH_TOKEN_EXPIRES="600",
    )
    try:
        with gunicorns(env | values, count=count, workers=WORKERS) as servers:
            yield servers
    finally:
        drop_redis_keys(prefix)


@pytest.fixture
def start(database_url: Any) -> Iterator[Callable[..., list[Server]]]:
    """``start(count, **env)``: instances for this test only, stopped after it."""
    with ExitStack() as stack, time_limit(TIME_LIMIT):
        yield lambda count, **values: stack.enter_context(instances(database_url, count, **values))


@pytest.fixture(scope="module")
def _three(database_url: Any) -> Iterator[list[Server]]:
    with instances(database_url, 3, **ROOMY_LIMITS) as servers:
        yield servers


@pytest.fixture
def three(_three: Any) -> Iterator[list[Server]]:
    """Three instances on one dataset, started once for the test module."""
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


def new_session(server: Server) -> tuple[str, dict[str, Any]]:
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
    body: dict[str, Any] | None = None,
    *,
    times: int = PER_WORKER,
    **options: Any,
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


def tally(answers: list[tuple[str, Response]]) -> Counter[tuple[int, Any]]:
    """How many answers had each (status, error code)."""
    return Counter((r.status_code, (r.json or {}).get("error")) for _, r in answers)


def race(*sends: Callable[[], Response]) -> list[Response]:
    """Run ``sends`` at the same moment, each on its own thread; their answers."""
    barrier = threading.Barrier(len(sends))

    def go(send: Any) -> Any:
        barrier.wait(timeout=REQUEST_TIMEOUT)
        return send()

    with ThreadPoolExecutor(len(sends)) as pool:
        futures = [pool.submit(go, send) for send in sends]
        return [future.result(timeout=2 * REQUEST_TIMEOUT) for future in futures]
