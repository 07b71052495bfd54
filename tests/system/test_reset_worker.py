"""Password reset as deployed: the request enqueues on Redis, a real Celery worker
(`celery -A app worker`) mails through a real SMTP server, the link resets."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from helpers import PG_URL, REDIS_URL, create_user, query
from mailserver import follow, smtp_server
from models import PasswordReset
from servers import BIN, ROOT, server_env, stop

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
KEY = "w" * 40  # the worker derives the token with the key the app checks it with


@pytest.fixture
def queued_app(make_app: Callable[..., Flask], app: Flask) -> Flask:  # app: a fresh database
    return make_app(CELERY_TASK_ALWAYS_EAGER=False, CELERY_BROKER_URL=REDIS_URL, JWT_SECRET_KEY=KEY)


def test_a_worker_mails_the_link(queued_app: Flask) -> None:
    create_user(queued_app, "alice")
    celery = queued_app.extensions["celery"]
    celery.control.purge()  # nothing left over from another test
    with smtp_server() as mailbox:
        env = server_env(
            APP_ENV="development",
            DATABASE_URL=PG_URL,
            REDIS_URL=REDIS_URL,
            JWT_SECRET_KEY=KEY,
            MAIL_SERVER=mailbox.host,
            MAIL_PORT=str(mailbox.port),
        )
        command: list[str | Path] = [
            BIN / "celery",
            "-A",
            "app",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
        ]
        worker = subprocess.Popen(command, cwd=ROOT, env=env)
        try:
            client = queued_app.test_client()
            response = client.post("/password-reset", json={"email": "alice@example.com"})
            assert response.status_code == 202
            (received,) = mailbox.wait_for(1, timeout=60)  # the worker's start included
        finally:
            stop(worker)
    token = follow(received)
    assert received.rcpt_tos == ["alice@example.com"]
    body = {"token": token, "new_password": "lantern orchard violet"}
    assert client.post("/password-reset/confirm", json=body).status_code == 204
    assert query(queued_app, select(PasswordReset.used_at.is_not(None))) == [(True,)]
