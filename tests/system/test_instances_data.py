"""Three instances, one dataset (issue 5): a round-robin workload reads back every
acknowledged write identically through each instance, and requests racing through
different instances are settled by the database, once.

The machinery (instances, fixtures, clients) is tests/instances.py.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text

from helpers import PASSWORD, assert_error
from instances import TIME_LIMIT, WORKERS, login, new_session, race, register, unique
from servers import REQUEST_TIMEOUT, Response, Server

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

RACES = 6  # repetitions of each race: every ordered pair of three instances once


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
        body: dict[str, Any] | None = None,
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
        body: dict[str, Any] | None = None,
        *,
        token: str,
        headers: dict[str, str] | None = None,
        read: str | None = None,
    ) -> dict[str, Any]:
        """``send``, then ``check`` at ``read`` (default: its ``Location``, else ``path``)."""
        answer = self.send(server, method, path, body, token=token, headers=headers)
        etag = self.check(read or answer.headers["Location"] or path, answer.json, token=token)
        assert answer.headers["ETag"] in (None, etag), f"{method} {path}: ETag {etag} on reads"
        return dict(answer.json)

    def read(self, server: Server, path: str, *, token: str | None = None) -> Response:
        with self._lock:
            self.reads += 1
        return server.request("GET", path, token=token)

    def check(self, path: str, expected: dict[str, Any], *, token: str | None = None) -> str | None:
        """``path`` through every instance: 200, ``expected``, one ETag (returned)."""
        answers = [(server, self.read(server, path, token=token)) for server in self.servers]
        for server, answer in answers:
            assert answer.status_code == 200, f"GET {path} through {server}: {answer}"
            assert answer.json == expected, f"GET {path} through {server}: {answer.json}"
        etags = {answer.headers["ETag"] for _, answer in answers}
        assert len(etags) == 1, f"GET {path}: the instances disagree on the ETag: {etags}"
        return etags.pop()


def shop(dataset: Dataset, n: int) -> dict[int, dict[str, Any]]:
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

    def write(
        method: str, path: str, body: dict[str, Any] | None = None, **options: Any
    ) -> dict[str, Any]:
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


def every_page(server: Server, path: str) -> list[dict[str, Any]]:
    """A whole list, page by page, through one instance."""
    rows: list[dict[str, Any]] = []
    page, total = 1, None
    while total is None or len(rows) < total:
        answer = server.request("GET", f"{path}?page_size=100&page={page}")
        assert answer.status_code == 200, answer
        rows += answer.json
        page, total = page + 1, int(answer.headers["X-Total-Count"])
    return rows


def test_a_round_robin_workload_reads_the_same_everywhere(three: Any) -> None:
    dataset = Dataset(three)
    began = time.monotonic()
    with ThreadPoolExecutor(SHOPPERS) as pool:
        sessions = [pool.submit(shop, dataset, n) for n in range(SHOPPERS)]
        made: dict[int, Any] = {}
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


def outcome(answers: list[Response]) -> tuple[Any, ...]:
    """The race's result: its answers' (status, error code), sorted."""
    return tuple(sorted((r.status_code, (r.json or {}).get("error")) for r in answers))


def server_logs(servers: list[Server]) -> str:
    """What the servers logged: the traceback of any 500, for a failure's message."""
    return "\n".join(f"--- {server}\n{server.log()}" for server in servers)


def test_racing_registrations_of_one_username_make_one_user(three: Any) -> None:
    outcomes: Counter[Any] = Counter()
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
    assert outcomes == {((201, None), (409, "already_exists")): RACES}, server_logs(three)
    print(f"\nregistration races: {dict(outcomes)}")


def test_racing_stores_of_one_name_make_one_store(three: Any) -> None:
    _, tokens = new_session(three[0])
    token, outcomes = tokens["access_token"], Counter[Any]()
    for x, y in pairs(three):
        name = unique("Corner Shop")
        send = [partial(s.request, "POST", "/stores", {"name": name}, token=token) for s in (x, y)]
        answers = race(*send)
        outcomes[outcome(answers)] += 1
        created = [answer.json for answer in answers if answer.status_code == 201]
        for server in three:
            found = server.request("GET", f"/stores?q={quote(name)}").json
            assert found == created, (server, found)
    assert outcomes == {((201, None), (409, "already_exists")): RACES}, server_logs(three)
    print(f"\nstore races: {dict(outcomes)}")


def test_racing_links_of_one_tag_link_it_once(three: Any) -> None:
    _, tokens = new_session(three[0])
    token, outcomes, torn = tokens["access_token"], Counter[Any](), 0
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
        for answer in answers:  # both bodies are the item, now linked, as stored
            torn += answer.json != stored[0]  # the 200 waits for the 201's lock
    assert outcomes == {((200, None), (201, None)): RACES}, server_logs(three)
    assert torn == 0, f"{torn} answers were not the item as stored"


@pytest.mark.parametrize("method", ["POST", "GET"], ids=["link-found-already", "get"])
def test_an_item_read_while_a_link_commits_is_answered_as_stored(
    three: Any, database_url: Any, method: Any
) -> None:
    """What the link race above could show: a read while another instance links a tag.

    The database plays the other instance, committing a link (and the item's new
    ``updated_at``) while the request waits to read the item's tags. Each answer must
    be a state that was stored, never a mix of the two:
    - ``GET /items/{id}`` reads the item, its store and its tags in one statement,
      whose snapshot is taken once its locks are granted: the item after the link;
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
            if method == "GET":  # the request's one SELECT waits for item_tags
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
    assert after.json != before.json
    expected = after
    assert answer.status_code == 200, answer
    assert answer.json == expected.json, "the answer is not the item as stored"
    assert answer.headers["ETag"] in (None, expected.headers["ETag"])  # a POST has none


def wait_for_a_lock_wait(engine: Any) -> None:
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


def test_racing_refreshes_of_one_token_end_the_session(three: Any) -> None:
    outcomes: Counter[Any] = Counter()
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


def test_two_admins_stepping_down_at_once_leave_one(three: Any, database_url: Any) -> None:
    """The last-admin rule holds under a race: the admins' rows are locked in order."""
    outcomes: Counter[Any] = Counter()
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


def test_two_changes_with_the_same_if_match_let_one_through(three: Any) -> None:
    """If-Match is checked on the locked row: the second change sees the first."""
    outcomes: Counter[Any] = Counter()
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
