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

import itertools
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from functools import partial
from urllib.parse import quote

import pytest
import redis
from sqlalchemy import create_engine, text

from helpers import PASSWORD, PG_URL, REDIS_URL, assert_error
from servers import REQUEST_TIMEOUT, Response, Server, gunicorns, migrate, postgres_database
from servers import server_env as base_env

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

WORKERS = 2  # per instance
PER_WORKER = 10  # requests aimed at each worker: 20 per instance
TIME_LIMIT = 60  # seconds per test; a normal run takes a few
RACES = 6  # repetitions of each race: every ordered pair of three instances once
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


def race(*sends: Callable[[], Response]) -> list[Response]:
    """Run ``sends`` at the same moment, each on its own thread; their answers."""
    barrier = threading.Barrier(len(sends))

    def go(send):
        barrier.wait(timeout=REQUEST_TIMEOUT)
        return send()

    with ThreadPoolExecutor(len(sends)) as pool:
        futures = [pool.submit(go, send) for send in sends]
        return [future.result(timeout=2 * REQUEST_TIMEOUT) for future in futures]


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


# --- issue 5: three instances, one dataset ------------------------------------------------

SHOPPERS = 6  # concurrent sessions in the workload, each on its own thread
ITEMS = 5  # per shopper


class Dataset:
    """The three instances as one service: every acknowledged write is read back
    through each of them and must be there, identical (body and ETag)."""

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers
        self.writes = self.reads = 0
        self._lock = threading.Lock()

    def rotation(self, start: int) -> Iterator[Server]:
        """The instances in turn, from the ``start``-th: no request sticks to one."""
        return itertools.islice(itertools.cycle(self.servers), start, None)

    def send(
        self,
        server: Server,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """A write that must be acknowledged (2xx); counted."""
        answer = server.request(method, path, body, token=token, headers=headers)
        assert answer.status_code in (200, 201), f"{method} {path} through {server}: {answer}"
        with self._lock:
            self.writes += 1
        return answer

    def write(
        self,
        server: Server,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        token: str,
        headers: dict[str, str] | None = None,
        read: str | None = None,
    ) -> dict:
        """``send``, then ``check`` at ``read`` (default: its ``Location``, else ``path``)."""
        answer = self.send(server, method, path, body, token=token, headers=headers)
        etag = self.check(read or answer.headers["Location"] or path, answer.json, token=token)
        assert answer.headers["ETag"] in (None, etag), f"{method} {path}: ETag {etag} on reads"
        return answer.json

    def read(self, server: Server, path: str, *, token: str | None = None) -> Response:
        with self._lock:
            self.reads += 1
        return server.request("GET", path, token=token)

    def check(self, path: str, expected: dict, *, token: str | None = None) -> str | None:
        """``path`` through every instance: 200, ``expected``, one ETag (returned)."""
        answers = [(server, self.read(server, path, token=token)) for server in self.servers]
        for server, answer in answers:
            assert answer.status_code == 200, f"GET {path} through {server}: {answer}"
            assert answer.json == expected, f"GET {path} through {server}: {answer.json}"
        etags = {answer.headers["ETag"] for _, answer in answers}
        assert len(etags) == 1, f"GET {path}: the instances disagree on the ETag: {etags}"
        return etags.pop()


def shop(dataset: Dataset, n: int) -> dict[int, dict]:
    """One user's session, each request through the next instance: sign up, open a
    store, tag and stock it, reprice. Returns the items as last acknowledged."""
    turn = dataset.rotation(n)
    username = unique(f"shopper{n}")
    body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    user = dataset.send(next(turn), "POST", "/register", body)
    tokens = login(next(turn), username)
    assert tokens.status_code == 200, tokens
    token = tokens.json["access_token"]  # from one instance, used on the others
    dataset.check(user.headers["Location"], user.json, token=token)

    def write(method: str, path: str, body: dict | None = None, **options) -> dict:
        return dataset.write(next(turn), method, path, body, token=token, **options)

    store = write("POST", "/stores", {"name": unique(f"Store {n}"), "address": "1 Main St"})
    tags = [write("POST", f"/stores/{store['id']}/tags", {"name": name}) for name in ("a", "b")]
    items = {}
    for k in range(ITEMS):
        item = write(
            "POST", "/items", {"name": f"Item {k}", "price": "1.05", "store_id": store["id"]}
        )
        path = f"/items/{item['id']}"
        for tag in tags[: k % 3]:
            item = write("POST", f"{path}/tags/{tag['id']}", read=path)
        # Repriced with an ETag read through another instance than the one that writes.
        etag = dataset.read(next(turn), path).headers["ETag"]
        item = write("PATCH", path, {"price": f"{k}.{n}9"}, headers={"If-Match": etag})
        items[item["id"]] = item
    write("PATCH", f"/stores/{store['id']}", {"contact_phone": f"+1 555 01{n:02}"})
    return items


def every_page(server: Server, path: str) -> list[dict]:
    """A whole list, page by page, through one instance."""
    rows: list[dict] = []
    page, total = 1, None
    while total is None or len(rows) < total:
        answer = server.request("GET", f"{path}?page_size=100&page={page}")
        assert answer.status_code == 200, answer
        rows += answer.json
        page, total = page + 1, int(answer.headers["X-Total-Count"])
    return rows


def test_a_round_robin_workload_reads_the_same_everywhere(three):
    dataset = Dataset(three)
    began = time.monotonic()
    with ThreadPoolExecutor(SHOPPERS) as pool:
        sessions = [pool.submit(shop, dataset, n) for n in range(SHOPPERS)]
        made = {}
        for session in sessions:
            made |= session.result(timeout=TIME_LIMIT)
    seconds = time.monotonic() - began

    for path in ("/stores", "/items"):
        lists = [every_page(server, path) for server in three]
        assert lists[1] == lists[0] and lists[2] == lists[0], (
            f"GET {path} differs between instances"
        )
    listed = {item["id"]: item for item in lists[0]}
    assert {id_: listed.get(id_) for id_ in made} == made
    print(
        f"\nworkload: {SHOPPERS} sessions over {len(three)} instances x {WORKERS} workers, "
        f"{dataset.writes} writes, {dataset.reads} reads, {len(made)} items, {seconds:.1f} s"
    )


# --- issue 5: races through different instances -----------------------------------------


def pairs(servers: list[Server]) -> list[tuple[Server, Server]]:
    """``RACES`` ordered pairs of distinct instances, each pair once."""
    chosen = list(itertools.permutations(servers, 2))[:RACES]
    assert len(chosen) == RACES
    return chosen


def outcome(answers: list[Response]) -> tuple:
    """The race's result: its answers' (status, error code), sorted."""
    return tuple(sorted((r.status_code, (r.json or {}).get("error")) for r in answers))


def server_logs(servers: list[Server]) -> str:
    """What the servers logged: the traceback of any 500, for a failure's message."""
    return "\n".join(f"--- {server}\n{server.log()}" for server in servers)


def test_racing_registrations_of_one_username_make_one_user(three):
    outcomes = Counter()
    for x, y in pairs(three):
        username = unique("racer")  # with two different emails: the username decides
        first, second = race(partial(register, x, username), partial(register, y, username))
        outcomes[outcome([first, second])] += 1
        winner = first if first.status_code == 201 else second
        if winner.status_code == 201:
            # One account, whichever instance is asked.
            token = login(y, username).json["access_token"]
            for server in three:
                me = server.request("GET", "/users/me", token=token)
                assert me.json == winner.json, (server, me)
    assert outcomes == {((201, None), (409, None)): RACES}, server_logs(three)
    print(f"\nregistration races: {dict(outcomes)}")


def test_racing_stores_of_one_name_make_one_store(three):
    _, tokens = new_session(three[0])
    token, outcomes = tokens["access_token"], Counter()
    for x, y in pairs(three):
        name = unique("Corner Shop")
        send = [partial(s.request, "POST", "/stores", {"name": name}, token=token) for s in (x, y)]
        answers = race(*send)
        outcomes[outcome(answers)] += 1
        created = [answer.json for answer in answers if answer.status_code == 201]
        for server in three:
            found = server.request("GET", f"/stores?q={quote(name)}").json
            assert found == created, (server, found)
    assert outcomes == {((201, None), (409, None)): RACES}, server_logs(three)
    print(f"\nstore races: {dict(outcomes)}")


def test_racing_links_of_one_tag_link_it_once(three):
    _, tokens = new_session(three[0])
    token, outcomes, torn = tokens["access_token"], Counter(), 0
    store = three[1].request("POST", "/stores", {"name": unique("Shop")}, token=token).json
    tags = f"/stores/{store['id']}/tags"
    tag = three[2].request("POST", tags, {"name": "dairy"}, token=token).json
    for n, (x, y) in enumerate(pairs(three)):
        body = {"name": f"Milk {n}", "price": "1.50", "store_id": store["id"]}
        item = x.request("POST", "/items", body, token=token).json
        path = f"/items/{item['id']}/tags/{tag['id']}"
        answers = race(*(partial(s.request, "POST", path, token=token) for s in (x, y)))
        outcomes[outcome(answers)] += 1
        stored = [s.request("GET", f"/items/{item['id']}").json for s in three]
        assert stored[0]["tags"] == [{"id": tag["id"], "name": "dairy"}], stored[0]
        assert stored[1] == stored[0] and stored[2] == stored[0]
        for answer in answers:  # both bodies are the item, now linked
            if answer.status_code == 201:
                assert answer.json == stored[0], answer
            elif answer.status_code == 200:  # not always as stored: see the next test
                assert answer.json["tags"] == stored[0]["tags"], answer
                torn += answer.json != stored[0]
    assert outcomes == {((200, None), (201, None)): RACES}, server_logs(three)
    print(f"\nlink races: {dict(outcomes)}; 200 answers not as stored: {torn}")


@pytest.mark.parametrize("method", ["POST", "GET"], ids=["link-found-already", "get"])
def test_an_item_read_while_a_link_commits_is_answered_as_stored(three, database_url, method):
    """What the link race above could show: a read while another instance links a tag.

    An item is read with two SELECTs: its row, then its tags. The database plays the
    other instance, committing a link (and the item's new ``updated_at``) between the
    two. Each answer must be a state that was stored, never a mix of the two:
    - ``GET /items/{id}`` reads one snapshot: the item as it was before the link;
    - ``POST /items/{id}/tags/{tag_id}`` locks the item, as every change of it does,
      so it waits for the link and answers 200 "already linked" with the item after.
    """
    a, b, _ = three
    _, tokens = new_session(a)
    token = tokens["access_token"]
    store = a.request("POST", "/stores", {"name": unique("Shop")}, token=token).json
    tag = a.request("POST", f"/stores/{store['id']}/tags", {"name": "dairy"}, token=token).json
    body = {"name": "Milk", "price": "1.50", "store_id": store["id"]}
    item = a.request("POST", "/items", body, token=token).json
    path = f"/items/{item['id']}" + (f"/tags/{tag['id']}" if method == "POST" else "")
    before = a.request("GET", f"/items/{item['id']}")

    engine = create_engine(database_url)
    link = {"item": item["id"], "tag": tag["id"]}
    try:
        with engine.connect() as other, ThreadPoolExecutor(1) as pool:
            if method == "GET":  # the request gets the item row; its tags must wait
                other.execute(text("LOCK TABLE item_tags IN ACCESS EXCLUSIVE MODE"))
            else:  # another link of this item holds it, as the application's would
                other.execute(text("SELECT 1 FROM items WHERE id = :item FOR UPDATE"), link)
            pending = pool.submit(b.request, method, path, token=token)
            wait_for_a_lock_wait(engine)
            other.execute(text("INSERT INTO item_tags VALUES (:item, :tag)"), link)
            other.execute(text("UPDATE items SET updated_at = now() WHERE id = :item"), link)
            other.commit()
            answer = pending.result(timeout=REQUEST_TIMEOUT)
    finally:
        engine.dispose()

    after = a.request("GET", f"/items/{item['id']}")
    expected = before if method == "GET" else after
    assert answer.status_code == 200, answer
    assert answer.json == expected.json, "the answer is not the item as stored"
    assert answer.headers["ETag"] in (None, expected.headers["ETag"])  # a POST has none


def wait_for_a_lock_wait(engine) -> None:
    """Until some session of the test database waits for a lock (10 s at most)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + REQUEST_TIMEOUT
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.scalar(query):
                return
        time.sleep(0.02)
    raise TimeoutError("no request waited for the lock")


def test_racing_refreshes_of_one_token_end_the_session(three):
    outcomes = Counter()
    for x, y in pairs(three):
        _, tokens = new_session(x)
        refresh = tokens["refresh_token"]
        answers = race(*(partial(s.request, "POST", "/refresh", token=refresh) for s in (x, y)))
        outcomes[outcome(answers)] += 1
        # Whatever the race handed out, the session is over: every token, every instance.
        for issued in [tokens] + [r.json for r in answers if r.status_code == 200]:
            for server in three:
                me = server.request("GET", "/users/me", token=issued["access_token"])
                assert_error(me, 401, error="token_revoked")
                again = server.request("POST", "/refresh", token=issued["refresh_token"])
                assert_error(again, 401, error="token_revoked")
    # At most one of the two may have been given new tokens.
    allowed = {((200, None), (401, "token_revoked")), ((401, "token_revoked"),) * 2}
    assert set(outcomes) <= allowed, (outcomes, server_logs(three))
    print(f"\nrefresh races: {dict(outcomes)}")


def set_admins(database_url: str, usernames: list[str]) -> None:
    """Make exactly these users the admins (what `flask create-admin` would do)."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE users SET role = 'user'"))
            for username in usernames:
                query = text("UPDATE users SET role = 'admin' WHERE username = :u")
                conn.execute(query, {"u": username})
    finally:
        engine.dispose()


def test_two_admins_stepping_down_at_once_leave_one(three, database_url):
    """The last-admin rule holds under a race: the admins' rows are locked in order."""
    outcomes = Counter()
    for x, y in pairs(three):
        sessions = [new_session(x), new_session(y)]
        set_admins(database_url, [username for username, _ in sessions])
        me = [x.request("GET", "/users/me", token=t["access_token"]).json for _, t in sessions]
        answers = race(
            *(
                partial(
                    server.request,
                    "PATCH",
                    f"/users/{user['id']}",
                    {"role": "user"},
                    token=tokens["access_token"],
                )
                for server, user, (_, tokens) in zip((x, y), me, sessions, strict=True)
            )
        )
        outcomes[tuple(sorted(a.status_code for a in answers))] += 1
        roles = [
            x.request("GET", "/users/me", token=t["access_token"]).json["role"] for _, t in sessions
        ]
        assert sorted(roles) == ["admin", "user"], (answers, server_logs(three))
    assert outcomes == {(200, 409): RACES}, outcomes


def test_two_changes_with_the_same_if_match_let_one_through(three):
    """If-Match is checked on the locked row: the second change sees the first."""
    outcomes = Counter()
    for x, y in pairs(three):
        _, tokens = new_session(x)
        token = tokens["access_token"]
        store = x.request("POST", "/stores", {"name": unique("Shop")}, token=token).json
        etag = y.request("GET", f"/stores/{store['id']}").headers["ETag"]
        answers = race(
            *(
                partial(
                    server.request,
                    "PATCH",
                    f"/stores/{store['id']}",
                    {"name": unique(name)},
                    token=token,
                    headers={"If-Match": etag},
                )
                for server, name in ((x, "Mine"), (y, "Yours"))
            )
        )
        outcomes[tuple(sorted(a.status_code for a in answers))] += 1
        winner = next(a for a in answers if a.status_code == 200)
        assert x.request("GET", f"/stores/{store['id']}").json == winner.json
    assert outcomes == {(200, 412): RACES}, outcomes
