"""No secret in any audit row, log line or table (§15): a session uses every
credential the service knows — passwords (right, wrong, changed, reset), access and
refresh tokens, a reset token, an API key (made, used, refused, revoked, refused
again) — then everything written is searched for each."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from core.web.request_log import JsonFormatter, TextFormatter
from helpers import PASSWORD, Client, bearer, query, snapshot
from mailserver import Mailbox, follow
from models import AuditEntry

WRONG = "not the password at all"
CHANGED = "lantern orchard violet"
RESET = "copper kettle whistles"


class Lines(logging.Handler):
    """Every record of every logger, written as the service writes it (JSON and text
    lines, formatted while the request is on), plus its raw fields."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("mail.log"):
            return  # aiosmtpd: the test's mail server, the mailbox the link is sent to
        for formatter in (JsonFormatter(), TextFormatter()):
            self.lines.append(formatter.format(record))
        self.lines.append(repr(vars(record)))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    handler, root = Lines(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(level)


def test_no_secret_is_written_anywhere(
    app: Flask, client: Client, mailbox: Mailbox, log_lines: list[str]
) -> None:
    secrets: set[str] = {PASSWORD, WRONG, CHANGED, RESET, app.config["JWT_SECRET_KEY"]}

    def remember(tokens: dict[str, Any]) -> dict[str, Any]:
        for name in ("access_token", "refresh_token"):
            secrets.add(tokens[name])
            secrets.add(tokens[name].rsplit(".", 1)[1])  # the signature alone
        return tokens

    def sign_in(password: str) -> dict[str, Any]:
        response = client.post("/login", json={"username": "dora", "password": password})
        assert response.status_code == 200, response.json
        return remember(response.json)

    body = {"username": "dora", "email": "dora@example.com", "password": PASSWORD}
    user_id = client.post("/register", json=body).json["id"]
    wrong = client.post("/login", json={"username": "dora", "password": WRONG})
    assert wrong.status_code == 401
    tokens = sign_in(PASSWORD)
    headers = bearer(tokens["access_token"])
    assert client.get("/users/me", headers=headers).status_code == 200
    store = client.post("/stores", json={"name": "Dora's"}, headers=headers).json
    scopes = {"name": "ERP", "scopes": ["catalog:read", "catalog:write"]}
    made = client.post("/api-keys", json=scopes, headers=headers)
    assert made.status_code == 201
    key = made.json["key"]
    secrets.update({key, key[len(made.json["prefix"]) : -4]})  # all but what a list shows
    keyed = bearer(key)
    rename = {"name": "Dora's shop"}
    assert client.patch(f"/stores/{store['id']}", json=rename, headers=keyed).status_code == 200
    assert client.get("/users/me", headers=keyed).status_code == 403
    assert client.delete(f"/api-keys/{made.json['id']}", headers=headers).status_code == 204
    assert client.get("/stores", headers=keyed).status_code == 401
    refreshed = client.post("/refresh", headers=bearer(tokens["refresh_token"]))
    assert refreshed.status_code == 200
    remember(refreshed.json)
    change = {"password": CHANGED, "current_password": PASSWORD}
    assert client.patch(f"/users/{user_id}", json=change, headers=headers).status_code == 200
    tokens = sign_in(CHANGED)
    assert client.post("/logout", headers=bearer(tokens["access_token"])).status_code == 200

    assert client.post("/password-reset", json={"email": "dora@example.com"}).status_code == 202
    reset_token = follow(mailbox.wait_for(1)[0])
    secrets.add(reset_token)
    confirm = {"token": reset_token, "new_password": RESET}
    assert client.post("/password-reset/confirm", json=confirm).status_code == 204
    again = client.post("/password-reset/confirm", json=confirm)
    assert again.status_code == 422
    tokens = sign_in(RESET)
    headers = bearer(tokens["access_token"])
    assert client.delete(f"/stores/{store['id']}", headers=headers).status_code == 204

    audit_rows = query(app, select(AuditEntry))
    assert [row.action for (row,) in audit_rows] == [  # the session was recorded ...
        "user.created",
        "user.sign_in_failed",
        "user.signed_in",
        "store.created",
        "api_key.created",
        "store.updated",
        "api_key.revoked",
        "user.updated",
        "user.signed_in",
        "user.password_reset",
        "user.signed_in",
        "store.deleted",
    ]
    written = {
        "audit log": "\n".join(repr(vars(row)) for (row,) in audit_rows),
        "database": repr(snapshot(app)),
        "log": "\n".join(log_lines),
    }
    assert '"message": "POST /login 200"' in written["log"]  # ... and logged
    assert "password reset mailed" in written["log"]
    for where, text in written.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:4]}...) is in the {where}"
