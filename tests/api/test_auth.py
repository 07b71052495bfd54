"""Register, login, refresh, logout: tokens, sessions, and every way a token fails."""

import logging
import time
import unicodedata
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

import jwt
import pytest
from flask import Flask
from flask_jwt_extended import create_access_token, decode_token
from passlib.hash import pbkdf2_sha256
from sqlalchemy import select

from blocklist import RedisBlocklist
from core.auth.security import start_session
from db import db
from helpers import PASSWORD, CatalogFactory, Client, assert_error, bearer, query, snapshot
from models import RevokedToken, User
from models.types import utcnow


def register(client: Client, **overrides: Any) -> Any:
    body = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
    return client.post("/register", json=body | overrides)


class TestRegister:
    def test_creates_a_user_with_an_argon2id_hash(self, app: Flask, client: Client) -> None:
        response = register(client, username="  alice ", email=" alice@example.com ")
        assert response.status_code == 201
        body = response.json
        assert set(body) == {"id", "username", "email", "role", "created_at"}
        assert body["username"] == "alice"
        assert body["email"] == "alice@example.com"
        assert body["role"] == "user"
        assert response.headers["Location"] == f"/users/{body['id']}"
        assert response.headers["Cache-Control"] == "no-store"
        [(stored_hash,)] = query(app, select(User.password_hash))
        assert stored_hash.startswith("$argon2id$")
        assert PASSWORD not in response.get_data(as_text=True)

    @pytest.mark.parametrize(
        "duplicate",
        [
            {"username": "ALICE", "email": "other@example.com"},
            {"username": "other", "email": "Alice@Example.COM"},
        ],
    )
    def test_username_and_email_are_unique_ignoring_case(
        self, app: Flask, client: Client, duplicate: Any
    ) -> None:
        assert register(client).status_code == 201
        before = snapshot(app)
        body = assert_error(register(client, **duplicate), 409)
        assert "already registered" in body["message"]
        assert snapshot(app) == before

    def test_an_accent_typed_apart_is_the_same_address(self, app: Flask, client: Client) -> None:
        """An address is kept composed (NFC): "é" typed as "e" and a combining accent
        (as some keyboards and macOS file names send it) reaches the same account."""
        decomposed = "jose\u0301@example.com"
        response = register(client, email=decomposed)
        assert response.status_code == 201
        assert response.json["email"] == "jos\u00e9@example.com"
        before = snapshot(app)
        for spelling in (decomposed, "JOS\u00c9@example.com", "JOSE\u0301@example.com"):
            body = assert_error(register(client, username="other", email=spelling), 409)
            assert "already registered" in body["message"]
        assert snapshot(app) == before
        assert query(app, select(User.email)) == [("jos\u00e9@example.com",)]

    def test_an_address_is_measured_composed(self, app: Flask, client: Client) -> None:
        """Composing lengthens a few characters (U+0958 is two once composed): the
        254-character bound holds for what is stored, a clear 422, nothing written."""
        lengthened = "\u0958" * 126 + "@x.io"  # 131 characters sent, 257 composed
        body = assert_error(register(client, email=lengthened), 422)
        assert "email" in body["errors"]["json"]
        assert query(app, select(User.id)) == []

    @pytest.mark.parametrize(
        ("overrides", "field"),
        [
            ({"username": "al"}, "username"),
            ({"username": "a" * 81}, "username"),
            ({"username": "al ice"}, "username"),
            ({"username": "álice"}, "username"),
            ({"email": "not-an-email"}, "email"),
            ({"email": "a\u202eb@example.com"}, "email"),
            ({"email": "\u200balice@example.com"}, "email"),
            ({"email": "a" * 250 + "@x.io"}, "email"),
            # What a mail header reads as syntax: mailed elsewhere (x@example.com), or
            # to no one.
            ({"email": "d<x@example.com"}, "email"),
            ({"email": "a,b@example.com"}, "email"),
            ({"email": "e;f@example.com"}, "email"),
            ({"email": "c(x)y@example.com"}, "email"),
            ({"email": '"q r"@example.com'}, "email"),
            ({"email": "a@[192.0.2.1]"}, "email"),
            ({"email": "a\\b@example.com"}, "email"),
            # RFC 2047 encoded words, which the mailer decodes: mailed elsewhere.
            ({"email": "=?utf-8?q?victim?=@example.com"}, "email"),
            ({"email": "x@=?us-ascii?q?evil?=.=?us-ascii?q?com?="}, "email"),
            ({"password": "short"}, "password"),
            ({"password": "p" * 129}, "password"),
            ({"password": 12345678}, "password"),
            ({"role": "admin"}, "role"),
            ({"is_admin": True}, "is_admin"),
            ({"id": 7}, "id"),
        ],
    )
    def test_invalid_or_unknown_fields_are_refused(
        self, app: Flask, client: Client, overrides: Any, field: Any
    ) -> None:
        body = assert_error(register(client, **overrides), 422)
        assert field in body["errors"]["json"]
        assert snapshot(app)["users"] == []

    def test_missing_fields_are_named(self, app: Flask, client: Client) -> None:
        body = assert_error(client.post("/register", json={}), 422)
        assert set(body["errors"]["json"]) == {"username", "email", "password"}


class TestLogin:
    def test_returns_a_fresh_access_token_and_a_refresh_token(
        self, app: Flask, client: Client, alice: User
    ) -> None:
        response = client.post("/login", json={"username": "Alice", "password": PASSWORD})
        assert response.status_code == 200
        body = response.json
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 15 * 60
        assert response.headers["Cache-Control"] == "no-store"
        with app.app_context():
            access = decode_token(body["access_token"])
            refresh = decode_token(body["refresh_token"])
        assert access["sub"] == str(alice.id)
        assert access["fresh"] is True
        assert access["type"] == "access"
        assert refresh["type"] == "refresh"
        assert access["sid"] == refresh["sid"]
        assert access["exp"] - access["iat"] == 15 * 60
        assert refresh["exp"] - refresh["iat"] == 30 * 24 * 3600

    @pytest.mark.parametrize(
        "credentials",
        [
            {"username": "alice", "password": "wrong password"},
            {"username": "nobody", "password": PASSWORD},
        ],
    )
    def test_wrong_username_or_password_look_the_same(
        self, client: Client, alice: User, credentials: Any
    ) -> None:
        body = assert_error(client.post("/login", json=credentials), 401)
        assert body["message"] == "Invalid credentials."
        assert body["error"] == "invalid_credentials"

    # A password that normalizing changes is checked twice for a known user: as
    # normalized, then as sent (a hash from before passwords were normalized).
    @pytest.mark.parametrize(
        ("password", "verifications"), [("x" * 8, 1), ("\uff58" * 8, 2)], ids=["plain", "wide"]
    )
    def test_unknown_user_still_costs_a_password_verification(
        self,
        app: Flask,
        client: Client,
        monkeypatch: pytest.MonkeyPatch,
        password: str,
        verifications: int,
    ) -> None:
        context = app.extensions["passwords"]
        calls = []
        real = context.dummy_verify

        def counted() -> Any:
            calls.append(1)
            return real()

        monkeypatch.setattr(context, "dummy_verify", counted)
        assert_error(client.post("/login", json={"username": "ghost", "password": password}), 401)
        assert len(calls) == verifications

    def test_a_password_is_the_same_however_its_characters_are_typed(self, client: Client) -> None:
        """Composed accents (most keyboards) or a letter and a combining mark (macOS),
        ASCII digits or full-width ones (an IME): one password (NFKC, NIST SP 800-63B)."""
        composed = unicodedata.normalize("NFC", "Crème brûlée 42 à la carte")
        user = {"username": "chef", "email": "chef@example.com", "password": composed}
        assert client.post("/register", json=user).status_code == 201
        typed = unicodedata.normalize("NFD", composed).replace("42", "\uff14\uff12")
        assert typed != composed
        for password in (composed, typed):
            login = client.post("/login", json={"username": "chef", "password": password})
            assert login.status_code == 200, login.json
        wrong = client.post("/login", json={"username": "chef", "password": typed + "!"})
        assert_error(wrong, 401)

    def test_a_hash_made_before_passwords_were_normalized_still_verifies(
        self, app: Flask, client: Client, alice: User
    ) -> None:
        """Its password, as it was sent, signs in, and the hash is made again from the
        normalized form: from then on the other spellings sign in too."""
        sent = unicodedata.normalize("NFD", "Crème brûlée à la carte")
        with app.app_context():
            old = app.extensions["passwords"].hash(sent)
            db.session.get_one(User, alice.id).password_hash = old
            db.session.commit()
        login = client.post("/login", json={"username": "alice", "password": sent})
        assert login.status_code == 200, login.json
        [(remade,)] = query(app, select(User.password_hash))
        assert remade != old
        composed = unicodedata.normalize("NFC", sent)
        login = client.post("/login", json={"username": "alice", "password": composed})
        assert login.status_code == 200, login.json

    def test_a_pbkdf2_hash_from_older_data_is_upgraded(
        self, app: Flask, client: Client, alice: User
    ) -> None:
        with app.app_context():
            db.session.get_one(User, alice.id).password_hash = pbkdf2_sha256.hash(PASSWORD)
            db.session.commit()
        assert (
            client.post("/login", json={"username": "alice", "password": PASSWORD}).status_code
            == 200
        )
        [(stored_hash,)] = query(app, select(User.password_hash))
        assert stored_hash.startswith("$argon2id$")
        assert (
            client.post("/login", json={"username": "alice", "password": PASSWORD}).status_code
            == 200
        )

    def test_wrong_password_does_not_upgrade_the_hash(
        self, app: Flask, client: Client, alice: User
    ) -> None:
        old = pbkdf2_sha256.hash(PASSWORD)
        with app.app_context():
            db.session.get_one(User, alice.id).password_hash = old
            db.session.commit()
        assert_error(
            client.post("/login", json={"username": "alice", "password": "nope nope"}), 401
        )
        assert query(app, select(User.password_hash)) == [(old,)]


class TestTokens:
    def test_no_token(self, client: Client) -> None:
        assert_error(client.get("/users/me"), 401, error="authorization_required")

    def test_not_a_bearer_header(self, client: Client) -> None:
        response = client.get("/users/me", headers={"Authorization": "Token abc"})
        assert_error(response, 401, error="authorization_required")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

    @pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."])
    def test_malformed_token(self, client: Client, token: Any) -> None:
        assert_error(client.get("/users/me", headers=bearer(token)), 401, error="invalid_token")

    def test_token_signed_with_another_key(self, client: Client, alice: User) -> None:
        now = int(time.time())
        claims = {"sub": str(alice.id), "sid": "s", "jti": "j", "type": "access", "fresh": True}
        token = jwt.encode(claims | {"iat": now, "exp": now + 60}, "x" * 32, algorithm="HS256")
        assert_error(client.get("/users/me", headers=bearer(token)), 401, error="invalid_token")

    def test_expired_token(self, app: Flask, client: Client, alice: User) -> None:
        with app.app_context():
            token = create_access_token(
                str(alice.id), expires_delta=timedelta(seconds=-1), additional_claims={"sid": "s"}
            )
        body = assert_error(
            client.get("/users/me", headers=bearer(token)), 401, error="token_expired"
        )
        assert "expired" in body["message"]

    def test_token_without_a_session_is_refused(
        self, app: Flask, client: Client, alice: User
    ) -> None:
        with app.app_context():
            token = create_access_token(str(alice.id))
        assert_error(client.get("/users/me", headers=bearer(token)), 401, error="invalid_token")

    def test_refresh_token_is_not_an_access_token(
        self, client: Client, alice: User, login: Callable[..., dict[str, Any]]
    ) -> None:
        tokens = login(alice)
        response = client.get("/users/me", headers=bearer(tokens["refresh_token"]))
        assert_error(response, 401, error="invalid_token")

    def test_access_token_cannot_refresh(
        self, client: Client, alice: User, login: Callable[..., dict[str, Any]]
    ) -> None:
        tokens = login(alice)
        assert_error(
            client.post("/refresh", headers=bearer(tokens["access_token"])),
            401,
            error="invalid_token",
        )

    def test_token_of_a_deleted_user(
        self, app: Flask, client: Client, alice: User, login: Callable[..., dict[str, Any]]
    ) -> None:
        tokens = login(alice)
        with app.app_context():
            db.session.delete(db.session.get(User, alice.id))
            db.session.commit()
        response = client.get("/users/me", headers=bearer(tokens["access_token"]))
        assert_error(response, 401, error="user_not_found")

    def test_me(self, client: Client, alice: User, as_alice: dict[str, str]) -> None:
        response = client.get("/users/me", headers=as_alice)
        assert response.status_code == 200
        assert response.json["id"] == alice.id
        assert response.json["username"] == "alice"
        assert "password" not in response.json and "password_hash" not in response.json


class TestRefresh:
    def test_rotates_both_tokens(
        self, app: Flask, client: Client, alice: User, login: Callable[..., dict[str, Any]]
    ) -> None:
        tokens = login(alice)
        response = client.post("/refresh", headers=bearer(tokens["refresh_token"]))
        assert response.status_code == 200
        new = response.json
        assert new["token_type"] == "Bearer"
        with app.app_context():
            access = decode_token(new["access_token"])
            old_claims = decode_token(tokens["refresh_token"])
            new_claims = decode_token(new["refresh_token"])
        assert access["fresh"] is False
        assert new_claims["jti"] != old_claims["jti"]
        assert new_claims["sid"] == old_claims["sid"]
        assert client.get("/users/me", headers=bearer(new["access_token"])).status_code == 200

    def test_a_used_refresh_token_is_revoked(
        self, client: Client, alice: User, login: Callable[..., dict[str, Any]]
    ) -> None:
        tokens = login(alice)
        assert client.post("/refresh", headers=bearer(tokens["refresh_token"])).status_code == 200
        again = client.post("/refresh", headers=bearer(tokens["refresh_token"]))
        assert_error(again, 401, error="token_revoked")

    def test_reusing_a_rotated_refresh_token_ends_the_session(
        self, client: Client, alice: User, login: Callable[..., dict[str, Any]]
    ) -> None:
        first = login(alice)
        second = client.post("/refresh", headers=bearer(first["refresh_token"])).json
        # The old refresh token shows up again: somebody copied it.
        assert_error(
            client.post("/refresh", headers=bearer(first["refresh_token"])),
            401,
            error="token_revoked",
        )
        for token, path in (
            (second["refresh_token"], "/refresh"),
            (second["access_token"], "/users/me"),
            (first["access_token"], "/users/me"),
        ):
            method = client.post if path == "/refresh" else client.get
            assert_error(method(path, headers=bearer(token)), 401, error="token_revoked")

    def test_other_sessions_survive(
        self, client: Client, alice: User, login: Callable[..., dict[str, Any]]
    ) -> None:
        stolen, other = login(alice), login(alice)
        first = client.post("/refresh", headers=bearer(stolen["refresh_token"]))
        assert first.status_code == 200
        replayed = client.post("/refresh", headers=bearer(stolen["refresh_token"]))
        assert_error(replayed, 401, error="token_revoked")
        assert "access_token" not in replayed.json
        # The stolen session is over, tokens refreshed from it included...
        for token in (stolen["access_token"], first.json["access_token"]):
            assert_error(client.get("/users/me", headers=bearer(token)), 401, error="token_revoked")
        # ...and the other one goes on.
        me = client.get("/users/me", headers=bearer(other["access_token"]))
        assert me.status_code == 200 and me.json["id"] == alice.id
        assert client.post("/refresh", headers=bearer(other["refresh_token"])).status_code == 200


class TestLogout:
    def test_revokes_every_token_of_the_session(
        self, client: Client, alice: User, login: Callable[..., dict[str, Any]]
    ) -> None:
        first = login(alice)
        refreshed = client.post("/refresh", headers=bearer(first["refresh_token"])).json
        response = client.post("/logout", headers=bearer(first["access_token"]))
        assert response.status_code == 200
        assert response.json == {"message": "Successfully logged out."}
        for token, method, path in (
            (first["access_token"], "get", "/users/me"),
            (refreshed["access_token"], "get", "/users/me"),
            (refreshed["refresh_token"], "post", "/refresh"),
            (first["access_token"], "post", "/logout"),
        ):
            response = getattr(client, method)(path, headers=bearer(token))
            assert_error(response, 401, error="token_revoked")

    def test_a_revoked_token_is_reported_revoked_even_where_fresh_is_needed(
        self, client: Client, alice: User, login: Callable[..., dict[str, Any]]
    ) -> None:
        tokens = login(alice)
        refreshed = client.post("/refresh", headers=bearer(tokens["refresh_token"])).json
        client.post("/logout", headers=bearer(tokens["access_token"]))
        response = client.delete(f"/users/{alice.id}", headers=bearer(refreshed["access_token"]))
        assert_error(response, 401, error="token_revoked")

    @pytest.mark.config(JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=1))
    def test_a_logged_out_refresh_token_stays_refused_past_the_access_lifetime(
        self,
        app: Flask,
        client: Client,
        alice: User,
        login: Callable[..., dict[str, Any]],
    ) -> None:
        """The revocation lasts the refresh token's life (30 days), not the access
        token's: past the access lifetime the refresh token is still refused."""
        tokens = login(alice)
        client.post("/logout", headers=bearer(tokens["access_token"]))
        logged_out = time.monotonic()
        # Until the access token has expired, and the revocation would have with it
        # (a Redis TTL rounds up to the next second, +1).
        while not (
            client.get("/users/me", headers=bearer(tokens["access_token"])).json.get("error")
            == "token_expired"
            and time.monotonic() - logged_out > 2.2
        ):
            time.sleep(0.05)
        response = client.post("/refresh", headers=bearer(tokens["refresh_token"]))
        assert_error(response, 401, error="token_revoked")
        # And the entry is kept for the refresh token's whole life.
        with app.app_context():
            claims = decode_token(tokens["refresh_token"], allow_expired=True)
        assert revocation_lifetime(app, f"sid:{claims['sid']}") > timedelta(days=29)

    def test_signing_in_again_starts_a_new_session(
        self, client: Client, alice: User, login: Callable[..., dict[str, Any]]
    ) -> None:
        old = login(alice)
        client.post("/logout", headers=bearer(old["access_token"]))
        new = login(alice)
        me = client.get("/users/me", headers=bearer(new["access_token"]))
        assert me.status_code == 200 and me.json["username"] == "alice"
        assert me.json["id"] == alice.id
        assert_error(client.get("/users/me", headers=bearer(old["access_token"])), 401)

    def test_tokens_are_strings_of_the_user_id(self, app: Flask, alice: User) -> None:
        with app.test_request_context():
            tokens = start_session(alice)
            assert decode_token(tokens["access_token"])["sub"] == str(alice.id)


class TestSecurityLog:
    def records(self, caplog: pytest.LogCaptureFixture, event: Any) -> Any:
        return [r for r in caplog.records if getattr(r, "event", None) == event]

    def test_logins_and_failures_are_logged_without_secrets(
        self, client: Client, alice: User, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO, logger="stores.auth"):
            client.post("/login", json={"username": "alice", "password": PASSWORD})
            client.post("/login", json={"username": "alice", "password": "not the password"})
        [login] = self.records(caplog, "login")
        assert login.user_id == alice.id and login.session_id
        [failed] = self.records(caplog, "login_failed")
        assert failed.username == "alice" and failed.levelname == "WARNING"
        assert not [
            r for r in caplog.records if "not the password" in r.getMessage() + str(vars(r))
        ]

    def test_a_replayed_refresh_token_is_a_warning(
        self,
        client: Client,
        alice: User,
        login: Callable[..., dict[str, Any]],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        tokens = login(alice)
        client.post("/refresh", headers=bearer(tokens["refresh_token"]))
        with caplog.at_level(logging.INFO, logger="stores.auth"):
            client.post("/refresh", headers=bearer(tokens["refresh_token"]))
        [revoked] = self.records(caplog, "session_revoked")
        assert revoked.levelname == "WARNING"
        assert revoked.reason == "rotated refresh token presented again"
        assert revoked.user_id == str(alice.id)


# Each with a body that is invalid in its own way: without a valid token, the answer is
# 401 and says nothing about the body (permission before validation).
INVALID_WRITES = [
    ("post", "/stores", {"name": "", "bogus": 1}),
    ("post", "/items", {"price": "1.001", "store_id": "x"}),
    ("put", "/stores/1", {}),
    ("patch", "/stores/1", {"owner_id": "me"}),
    ("patch", "/items/1", {"price": -1}),
    ("post", "/stores/1/tags", {"name": "a|b"}),
    ("patch", "/tags/1", {"name": None}),
    ("patch", "/users/1", {"email": "not an address", "current_password": ""}),
    ("post", "/items/1/tags/1", {"bogus": True}),
    ("delete", "/stores/1", None),
]


@pytest.mark.parametrize("token", ["none", "garbage", "expired", "refresh"])
def test_401_comes_before_422(
    app: Flask,
    client: Client,
    alice: User,
    login: Callable[..., dict[str, Any]],
    api: CatalogFactory,
    token: Any,
) -> None:
    headers = bearer(login(alice)["access_token"])
    store = api.store(headers)
    api.link(headers, api.item(headers, store), api.tag(headers, store))
    if token == "none":
        headers, error = {}, "authorization_required"
    elif token == "garbage":
        headers, error = bearer("a.b.c"), "invalid_token"
    elif token == "refresh":
        headers, error = bearer(login(alice)["refresh_token"]), "invalid_token"
    else:
        with app.app_context():
            expired = create_access_token(
                str(alice.id), expires_delta=timedelta(seconds=-1), additional_claims={"sid": "s"}
            )
        headers, error = bearer(expired), "token_expired"
    before = snapshot(app)
    for method, path, body in INVALID_WRITES:
        response = getattr(client, method)(path, json=body, headers=headers)
        answer = assert_error(response, 401, error=error)
        assert "errors" not in answer, (method, path)
    # Malformed JSON, too, is a 401 for a caller without a valid token.
    malformed = client.post("/stores", data="{", content_type="application/json", headers=headers)
    assert_error(malformed, 401, error=error)
    assert snapshot(app) == before


def revocation_lifetime(app: Flask, key: str) -> timedelta:
    """How much longer the blocklist keeps ``key``."""
    blocklist = app.extensions["blocklist"]
    if isinstance(blocklist, RedisBlocklist):
        return timedelta(seconds=cast(int, blocklist.redis.ttl(blocklist.prefix + key)))
    expires: list[tuple[datetime]] = query(
        app, select(RevokedToken.expires_at).where(RevokedToken.key == key)
    )
    return expires[0][0] - utcnow()
