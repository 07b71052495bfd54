"""Fixtures: a fresh app and database per test, users, tokens (helpers.py has the rest).

The suite runs on SQLite by default (the schema built once per session into a template
file, copied per test), and on PostgreSQL when TEST_DATABASE_URL is set (tables created
once, emptied before each test). With
REDIS_URL set, revocations and rate limits live in Redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from celery._state import _set_task_join_will_block
from flask import Flask
from sqlalchemy import Engine, event, text

# Hypothesis keeps caches (and, unless told otherwise, an example database) in
# .hypothesis/: outside the work tree, and set before Hypothesis is imported.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "stores-hypothesis")
)

from hypothesis import settings

import images
from app import create_app
from core.web.config import TestingConfig
from core.web.extensions import limiter, mail
from db import db
from helpers import (
    PASSWORD,
    PG_URL,
    REDIS_URL,
    CatalogFactory,
    Client,
    bearer,
    create_user,
    make_config,
)
from mailserver import Mailbox, smtp_server
from models import User
from receiver import Receiver, receiving

# A developer's .env must not change what the tests see (core.web.env.load_env_file,
# and the flask command's own loading); the servers the tests start inherit this.
# tests/system/test_env.py turns it off where it tests the file.
os.environ["FLASK_SKIP_DOTENV"] = "1"


@event.listens_for(Engine, "connect")
def _sqlite_without_fsync(dbapi_connection: Any, _record: Any) -> None:
    """A test's SQLite file outlives no crash: commits need not wait for the disk
    (each fsync cost more than the statements it follows)."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute("PRAGMA synchronous=OFF")


# Hypothesis (and schemathesis, built on it): the same examples on every run, and no
# example database (.hypothesis/) in the work tree to replay old failures from.
settings.register_profile("stores", derandomize=True, database=None)
settings.load_profile("stores")

# The fixtures that start real gunicorn instances (tests/system/test_instances_*.py).
pytest_plugins = ["instances"]


def pytest_configure(config: Any) -> None:
    # A shell starts a background job (`make test &`, as .ci/run starts its two passes)
    # with Ctrl-C ignored, and the servers the tests start would inherit that: a test of
    # a terminal's Ctrl-C (tests/system/test_env.py) would find it ignored. As in a
    # terminal's foreground, SIGINT interrupts (and the servers, on exec, get default).
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line("markers", "config(**values): app config overrides for the test")
    config.addinivalue_line("markers", "postgres: needs TEST_DATABASE_URL (PostgreSQL)")
    config.addinivalue_line("markers", "redis: needs REDIS_URL")
    config.addinivalue_line(
        "markers", "image: builds and runs the container image with podman (make test-image)"
    )


def pytest_collection_modifyitems(items: Any) -> None:
    missing = {"postgres": not PG_URL, "redis": not REDIS_URL}
    for item in items:
        for marker, absent in missing.items():
            if absent and item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=f"needs {marker} (see README)"))
    if any(item.get_closest_marker("image") for item in items):
        lacking = images.missing_tools()
        for item in items:
            if lacking and item.get_closest_marker("image"):
                reason = f"needs {', '.join(lacking)} (.ci/run installs them)"
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: Any) -> None:
    """In CI nothing may be skipped: a skip fails the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") == "true" and skipped:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped; failing the run.", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def _pg_schema() -> Iterator[Any]:
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


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An SQLite file holding the empty schema, built once: a test copies the file
    (a millisecond) instead of creating every table and index (most of a second)."""
    if PG_URL:
        return None
    path = tmp_path_factory.mktemp("schema") / "template.db"
    app = create_app(TestingConfig(SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}"))
    with app.app_context():
        db.create_all()
        db.engine.dispose()
    return path


@pytest.fixture(autouse=True)
def _joins_allowed() -> Iterator[None]:
    """Celery runs an eager task inside ``denied_join_result()``, which saves and then
    restores one process-wide flag ("a .get() would block"), not one per thread: two
    requests of a test in threads, each committing and so running its relay eagerly,
    can leave it set (the second saves the first's True, and restores it last). Every
    later .get() of an eager result then raises "Never call result.get() within a
    task!" (CI saw it once, in tests after a threaded one). Each test starts clear."""
    _set_task_join_will_block(False)
    yield


@pytest.fixture
def app(request: Any, tmp_path: Path, _pg_schema: Any, _sqlite_template: Any) -> Iterator[Any]:
    """A new app on an empty database. No app context stays pushed: each request
    gets its own, as under a real server (a shared one would share ``g``)."""
    marker = request.node.get_closest_marker("config")
    if _sqlite_template is not None:
        shutil.copyfile(_sqlite_template, tmp_path / "test.db")  # make_config's file
    app = create_app(make_config(tmp_path, **(marker.kwargs if marker else {})))
    with app.app_context():
        if PG_URL:
            tables = ", ".join(t.name for t in db.metadata.sorted_tables)
            db.session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            db.session.commit()
        limiter.reset()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Any]:
    """Another app on the test database, with ``overrides``; its pool is closed after."""
    apps = []

    def make(**overrides: Any) -> Any:
        apps.append(create_app(make_config(tmp_path, **overrides)))
        return apps[-1]

    yield make
    for app in apps:
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> Client:
    return cast(Client, app.test_client())


@pytest.fixture
def make_user(app: Flask) -> Any:
    counter = iter(range(1, 10_000))

    def make(username: str | None = None, *, role: str = "user", password: str = PASSWORD) -> User:
        return create_user(app, username or f"user{next(counter)}", role=role, password=password)

    return make


@pytest.fixture
def login(client: Client) -> Any:
    """Sign in through /login; returns the token response body."""

    def do(user: User | str, password: str = PASSWORD) -> dict[str, Any]:
        username = user if isinstance(user, str) else user.username
        response = client.post("/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.json
        return dict(response.json)

    return do


@pytest.fixture
def auth(login: Callable[..., dict[str, Any]]) -> Any:
    """Headers with a fresh access token for ``user``."""

    def headers(user: User) -> dict[str, str]:
        return bearer(login(user)["access_token"])

    return headers


@pytest.fixture
def alice(make_user: Callable[..., User]) -> Any:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Callable[..., User]) -> Any:
    return make_user("bob")


@pytest.fixture
def admin(make_user: Callable[..., User]) -> Any:
    return make_user("root", role="admin")


@pytest.fixture
def as_alice(auth: Callable[[User], dict[str, str]], alice: User) -> Any:
    return auth(alice)


@pytest.fixture
def api(client: Client) -> CatalogFactory:
    return CatalogFactory(client)


@pytest.fixture
def mailbox(app: Flask) -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd) that ``app`` sends its mail to."""
    with smtp_server() as box:
        app.config.update(MAIL_SERVER=box.host, MAIL_PORT=box.port)
        mail.init_app(app)  # Flask-Mailman reads its settings when it is set up
        yield box


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1 (tests/receiver.py) for the test's length."""
    with receiving() as r:
        yield r
