"""Test helpers: factories, assertions and database inspection shared by the tests.

Fixtures live in conftest.py; everything a test imports lives here.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, text, update
from werkzeug.test import TestResponse

from core.auth.passwords import hash_password
from core.events import tasks
from core.web.config import TestingConfig
from core.web.env import normalize_database_url
from db import db
from models import Delivery, User

PG_URL = normalize_database_url(os.environ.get("TEST_DATABASE_URL", ""))
REDIS_URL = os.environ.get("REDIS_URL", "")
PASSWORD = "correct horse battery"

if TYPE_CHECKING:
    # Werkzeug types a response's ``json`` as ``Any | None``; these tests read bodies
    # they have just asserted are JSON. Only the types differ: the fixture ``client``
    # is Flask's own test client.

    class Response(TestResponse):
        json: Any

    class Client(FlaskClient):
        def open(self, *args: Any, **kwargs: Any) -> Response: ...
        def get(self, *args: Any, **kwargs: Any) -> Response: ...
        def post(self, *args: Any, **kwargs: Any) -> Response: ...
        def put(self, *args: Any, **kwargs: Any) -> Response: ...
        def patch(self, *args: Any, **kwargs: Any) -> Response: ...
        def delete(self, *args: Any, **kwargs: Any) -> Response: ...
        def head(self, *args: Any, **kwargs: Any) -> Response: ...
        def options(self, *args: Any, **kwargs: Any) -> Response: ...
else:
    Client = FlaskClient
    Response = TestResponse


def client_of(app: Flask) -> Client:
    """``app``'s test client, typed as the tests read its responses."""
    return cast(Client, app.test_client())


def make_config(tmp_path: Path, **overrides: Any) -> TestingConfig:
    overrides.setdefault("SQLALCHEMY_DATABASE_URI", PG_URL or f"sqlite:///{tmp_path / 'test.db'}")
    return TestingConfig(**overrides)


def create_user(app: Flask, username: str, *, role: str = "user", password: str = PASSWORD) -> User:
    """A user row, detached, with ``username@example.com``."""
    with app.app_context():
        user = User(
            username=username,
            email=f"{username}@example.com",
            password_hash=hash_password(password),
            role=role,
        )
        db.session.add(user)
        db.session.commit()
        db.session.expunge(user)
    return user


def drop_redis_keys(prefix: str) -> None:
    """Remove what a test left in the shared Redis under its own (random) key prefix,
    wherever the prefix stands: the rate limiter puts its own words before it."""
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"*{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def count_queries(app: Flask) -> Iterator[list[str]]:
    """The SQL statements run while the block runs."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: Any, *_args: Any) -> None:
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


# Logs, not state: a sign-in writes an entry without changing anything. The audit
# tests (tests/api/test_audit.py) look at it themselves.
NOT_STATE = ("audit_log",)


def start_until_blocked(thread: threading.Thread, query: str = "%", timeout: float = 10) -> None:
    """Start ``thread`` (another request) and return once it has ended or a session of
    the test database (PostgreSQL, within an app context) waits for a lock running a
    query LIKE ``query``: the caller, holding its locks, then goes on."""
    thread.start()
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE :query"
    )
    deadline = time.monotonic() + timeout
    while thread.is_alive() and time.monotonic() < deadline:
        with db.engine.connect() as conn:
            if conn.scalar(waiting, {"query": query}):
                return
        time.sleep(0.02)


def meanwhile(
    monkeypatch: Any, owner: Any, name: str, request: Callable[[], None], *, first: bool = False
) -> threading.Thread:
    """Patch ``owner.name`` so that its first call starts ``request`` (another request,
    in a thread) and lets it run until it blocks on a lock or ends (start_until_blocked),
    after the original call, or before it with ``first``. The thread, to join."""
    thread = threading.Thread(target=request)
    original = getattr(owner, name)

    def patched(*args: Any, **kwargs: Any) -> Any:
        if first and thread.ident is None:
            start_until_blocked(thread)
        result = original(*args, **kwargs)
        if thread.ident is None:
            start_until_blocked(thread)
        return result

    monkeypatch.setattr(owner, name, patched)
    return thread


def snapshot(app: Flask) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to show that a refused request changed nothing."""
    with app.app_context():
        return {
            table.name: [
                tuple(row)
                for row in db.session.execute(table.select().order_by(*table.primary_key))
            ]
            for table in db.metadata.sorted_tables
            if table.name not in NOT_STATE
        }


def query(app: Flask, statement: Any) -> Any:
    """Run ``statement`` in a fresh app context; rows as tuples."""
    with app.app_context():
        return [tuple(row) for row in db.session.execute(statement)]


def assert_error(response: Any, status: int, *, error: str | None = None) -> dict[str, Any]:
    """The contract's envelope, with the right status everywhere it shows."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json"
    body = response.json
    assert body["code"] == status
    assert isinstance(body["status"], str) and body["status"]
    assert isinstance(body["message"], str) and body["message"]
    if status in (401, 403, 409):  # §2: a stable code a program can test, always
        assert isinstance(body.get("error"), str) and body["error"], body
    if error is not None:
        assert body["error"] == error
    return dict(body)


class CatalogFactory:
    """Creates catalog rows through the API (so every rule applies) and returns their
    JSON."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def store(self, headers: Any, name: Any = "Corner Shop", **fields: Any) -> Any:
        response = self.client.post("/stores", json={"name": name, **fields}, headers=headers)
        assert response.status_code == 201, response.json
        return response.json

    def item(
        self, headers: Any, store: Any, name: Any = "Milk", price: Any = "1.50", **fields: Any
    ) -> Any:
        body = {"name": name, "price": price, "store_id": store["id"], **fields}
        response = self.client.post("/items", json=body, headers=headers)
        assert response.status_code == 201, response.json
        return response.json

    def tag(self, headers: Any, store: Any, name: Any = "dairy") -> Any:
        response = self.client.post(
            f"/stores/{store['id']}/tags", json={"name": name}, headers=headers
        )
        assert response.status_code == 201, response.json
        return response.json

    def link(self, headers: Any, item: Any, tag: Any) -> Any:
        response = self.client.post(f"/items/{item['id']}/tags/{tag['id']}", headers=headers)
        assert response.status_code in (200, 201), response.json
        return response.json


def without_links(shown: dict[str, Any]) -> dict[str, Any]:
    """A resource as an event records it: as its GET shows it, without its links."""
    return {k: v for k, v in shown.items() if k != "links"}


def quiet_stores(
    app: Flask, client: Client, headers: dict[str, str], names: list[str], monkeypatch: Any
) -> None:
    """Stores created while no delivery is queued (as if their messages were lost):
    their attempts are due, queued to no one; the sweep (or the test) hands them out."""
    with monkeypatch.context() as patched:
        patched.setattr(tasks, "queue_deliveries", lambda _made: None)
        for name in names:
            response = client.post("/stores", json={"name": name}, headers=headers)
            assert response.status_code == 201, response.json
    with app.app_context():
        db.session.execute(update(Delivery).values(queued_until=None))
        db.session.commit()
