"""Fixtures: a fresh app and database per test, users, tokens, and a query counter.

The suite runs on SQLite (a new file per test) by default, and on PostgreSQL when
TEST_DATABASE_URL is set (tables created once, emptied before each test). With
REDIS_URL set, revocations and rate limits live in Redis.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event, text

from app import create_app
from core.config import TestingConfig, normalize_database_url
from core.extensions import limiter
from core.security import hash_password
from db import db
from models import User

PG_URL = normalize_database_url(os.environ.get("TEST_DATABASE_URL", ""))
REDIS_URL = os.environ.get("REDIS_URL", "")
PASSWORD = "correct horse battery"


def pytest_configure(config):
    config.addinivalue_line("markers", "config(**values): app config overrides for the test")
    config.addinivalue_line("markers", "postgres: needs TEST_DATABASE_URL (PostgreSQL)")
    config.addinivalue_line("markers", "redis: needs REDIS_URL")


def pytest_collection_modifyitems(config, items):
    missing = {"postgres": not PG_URL, "redis": not REDIS_URL}
    for item in items:
        for marker, absent in missing.items():
            if absent and item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=f"needs {marker} (see README)"))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """In CI nothing may be skipped: a skip fails the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") == "true" and skipped:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped; failing the run.", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def _pg_schema():
    """Create the tables once per session on PostgreSQL."""
    if not PG_URL:
        yield
        return
    app = create_app(TestingConfig(SQLALCHEMY_DATABASE_URI=PG_URL))
    with app.app_context():
        db.drop_all()
        db.create_all()
    yield
    with app.app_context():
        db.drop_all()
        db.engine.dispose()


def make_config(tmp_path, **overrides) -> TestingConfig:
    overrides.setdefault("SQLALCHEMY_DATABASE_URI", PG_URL or f"sqlite:///{tmp_path / 'test.db'}")
    return TestingConfig(**overrides)


@pytest.fixture
def app(request, tmp_path, _pg_schema):
    """A new app on an empty database. No app context stays pushed: each request
    gets its own, as under a real server (a shared one would share ``g``)."""
    marker = request.node.get_closest_marker("config")
    app = create_app(make_config(tmp_path, **(marker.kwargs if marker else {})))
    with app.app_context():
        if PG_URL:
            tables = ", ".join(t.name for t in db.metadata.sorted_tables)
            db.session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            db.session.commit()
        else:
            db.create_all()
        limiter.reset()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def make_app(tmp_path):
    """Another app on the test database, with ``overrides``; its pool is closed after."""
    apps = []

    def make(**overrides):
        apps.append(create_app(make_config(tmp_path, **overrides)))
        return apps[-1]

    yield make
    for app in apps:
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_user(app):
    counter = iter(range(1, 10_000))

    def make(username: str | None = None, *, role: str = "user", password: str = PASSWORD) -> User:
        username = username or f"user{next(counter)}"
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

    return make


@pytest.fixture
def login(client):
    """Sign in through /login; returns the token response body."""

    def do(user: User | str, password: str = PASSWORD) -> dict:
        username = user if isinstance(user, str) else user.username
        response = client.post("/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.json
        return response.json

    return do


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth(login):
    """Headers with a fresh access token for ``user``."""

    def headers(user: User) -> dict[str, str]:
        return bearer(login(user)["access_token"])

    return headers


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def admin(make_user):
    return make_user("root", role="admin")


@pytest.fixture
def as_alice(auth, alice):
    return auth(alice)


@contextmanager
def count_queries(app) -> Iterator[list[str]]:
    """The SQL statements run while the block runs."""
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def snapshot(app) -> dict[str, list[tuple]]:
    """Every row of every table, to show that a refused request changed nothing."""
    with app.app_context():
        return {
            table.name: [
                tuple(row)
                for row in db.session.execute(table.select().order_by(*table.primary_key))
            ]
            for table in db.metadata.sorted_tables
        }


def query(app, statement):
    """Run ``statement`` in a fresh app context; rows as tuples."""
    with app.app_context():
        return [tuple(row) for row in db.session.execute(statement)]


def assert_error(response, status: int, *, error: str | None = None) -> dict:
    """The contract's envelope, with the right status everywhere it shows."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json"
    body = response.json
    assert body["code"] == status
    assert isinstance(body["status"], str) and body["status"]
    assert isinstance(body["message"], str) and body["message"]
    if error is not None:
        assert body["error"] == error
    return body


@pytest.fixture
def api(client):
    """Small helpers that create catalog rows through the API and return their JSON."""

    class Api:
        def store(self, headers, name="Corner Shop", **fields):
            response = client.post("/stores", json={"name": name, **fields}, headers=headers)
            assert response.status_code == 201, response.json
            return response.json

        def item(self, headers, store, name="Milk", price="1.50", **fields):
            body = {"name": name, "price": price, "store_id": store["id"], **fields}
            response = client.post("/items", json=body, headers=headers)
            assert response.status_code == 201, response.json
            return response.json

        def tag(self, headers, store, name="dairy"):
            response = client.post(
                f"/stores/{store['id']}/tags", json={"name": name}, headers=headers
            )
            assert response.status_code == 201, response.json
            return response.json

        def link(self, headers, item, tag):
            response = client.post(f"/items/{item['id']}/tags/{tag['id']}", headers=headers)
            assert response.status_code in (200, 201), response.json
            return response.json

    return Api()
