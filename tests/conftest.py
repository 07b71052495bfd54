"""Fixtures: a fresh app and database per test, users, tokens (helpers.py has the rest).

The suite runs on SQLite (a new file per test) by default, and on PostgreSQL when
TEST_DATABASE_URL is set (tables created once, emptied before each test). With
REDIS_URL set, revocations and rate limits live in Redis.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

import images
from app import create_app
from core.web.config import TestingConfig
from core.web.extensions import limiter, mail
from db import db
from helpers import PASSWORD, PG_URL, REDIS_URL, CatalogFactory, bearer, create_user, make_config
from mailserver import smtp_server
from models import User

# A developer's .env must not change what the tests see (core.web.config.load_env_file,
# and the flask command's own loading); the servers the tests start inherit this.
# tests/system/test_env.py turns it off where it tests the file.
os.environ["FLASK_SKIP_DOTENV"] = "1"

# The fixtures that start real gunicorn instances (tests/system/test_instances_*.py).
pytest_plugins = ["instances"]


def pytest_configure(config):
    config.addinivalue_line("markers", "config(**values): app config overrides for the test")
    config.addinivalue_line("markers", "postgres: needs TEST_DATABASE_URL (PostgreSQL)")
    config.addinivalue_line("markers", "redis: needs REDIS_URL")
    config.addinivalue_line(
        "markers", "image: builds and runs the container image with podman (make test-image)"
    )


def pytest_collection_modifyitems(items):
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
def pytest_sessionfinish(session):
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
        return create_user(app, username or f"user{next(counter)}", role=role, password=password)

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


@pytest.fixture
def api(client) -> CatalogFactory:
    return CatalogFactory(client)


@pytest.fixture
def mailbox(app):
    """A real SMTP server (aiosmtpd) that ``app`` sends its mail to."""
    with smtp_server() as box:
        app.config.update(MAIL_SERVER=box.host, MAIL_PORT=box.port)
        mail.init_app(app)  # Flask-Mailman reads its settings when it is set up
        yield box
