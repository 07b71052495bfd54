"""Password quality (§15): zxcvbn score 3 or more, not the username or email, 8-128
characters, no composition rules; on /register and a password change (a reset:
test_password_reset.py); ``flask create-admin`` only warns."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import select
from zxcvbn import matching

from core.auth.passwords import CONTAINS_NAME, JUDGE_BUDGET, MAX_PIECES, TOO_SHORT, TOO_WEAK
from helpers import PASSWORD, Client, Response, assert_error, create_user, query, snapshot
from models import User


def WIDE(text: str) -> str:  # noqa: N802 - reads as a constant's transformation
    """``text`` in full-width forms (as an IME types them): NFKC makes it ASCII again."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def register(
    client: Client, password: str, username: str = "alice", email: str = "alice.smith@example.com"
) -> Response:
    body = {"username": username, "email": email, "password": password}
    return client.post("/register", json=body)


class TestRegister:
    @pytest.mark.parametrize(
        "password", ["password123", "12345678910", "qwertyuiop", "aaaaaaaaaaaa", "Summer2026!"]
    )
    def test_a_guessable_password_is_a_422_with_feedback(
        self, app: Flask, client: Client, password: str
    ) -> None:
        before = snapshot(app)
        body = assert_error(register(client, password), 422)
        messages = body["errors"]["json"]["password"]
        assert messages[0] == TOO_WEAK
        assert len(messages) >= 2  # zxcvbn's warning and/or suggestions follow
        assert all(isinstance(m, str) and m for m in messages)
        assert snapshot(app) == before

    @pytest.mark.parametrize(
        "password",
        [
            "Alice is my whole world",  # the username, another case
            "my ALICE.SMITH key ring",  # the email's local part, another case
            "zebra-alice.smith-violin",
        ],
    )
    def test_a_password_holding_the_username_or_email_is_refused(
        self, app: Flask, client: Client, password: str
    ) -> None:
        before = snapshot(app)
        body = assert_error(register(client, password), 422)
        assert body["errors"]["json"]["password"] == [CONTAINS_NAME]
        assert snapshot(app) == before

    @pytest.mark.parametrize(
        ("password", "first"),
        [
            (WIDE("password123"), TOO_WEAK),
            (WIDE("alice") + " Quixotic-Zebra-Lamp", CONTAINS_NAME),
            (unicodedata.normalize("NFD", "한국어사"), TOO_SHORT),  # 10 sent, 4 composed
        ],
        ids=["weak", "username", "short"],
    )
    def test_a_password_is_judged_as_it_is_stored_normalized(
        self, app: Flask, client: Client, password: str, first: str
    ) -> None:
        """Full-width letters or decomposed syllables are hashed normalized (NFKC), so
        they are judged so: "password123" typed full-width is "password123" (before, it
        passed, and then "password123" signed in)."""
        assert unicodedata.normalize("NFKC", password) != password and len(password) >= 8
        before = snapshot(app)
        body = assert_error(register(client, password), 422)
        assert body["errors"]["json"]["password"][0] == first
        assert snapshot(app) == before

    def test_the_domain_of_the_email_is_not_personal(self, client: Client) -> None:
        # Only the local part counts: "example" may appear.
        response = register(client, "an example of a passphrase")
        assert response.status_code == 201, response.json

    @pytest.mark.parametrize(
        "password",
        [
            "correct horse battery",  # lowercase words and spaces only
            "zq8#vmT!x",  # short and random
            "x7" + "ŧħë ŋøřŧħ ŵïŋđ" * 9,  # 128 characters, not ASCII
        ],
    )
    def test_no_composition_rules_within_8_to_128(
        self, app: Flask, client: Client, password: str
    ) -> None:
        assert len(password) <= 128
        response = register(client, password)
        assert response.status_code == 201, response.json
        assert query(app, select(User.username)) == [("alice",)]

    @pytest.mark.parametrize("password", ["Xq9#vz!", "ŧħë ŋøřŧħ ŵïŋđ" * 10])
    def test_length_outside_8_to_128_is_still_a_422(
        self, app: Flask, client: Client, password: str
    ) -> None:
        body = assert_error(register(client, password), 422)
        assert "password" in body["errors"]["json"]
        assert query(app, select(User.id)) == []

    @pytest.mark.parametrize(
        ("password", "status", "pieces"),
        [
            # Every look-alike symbol zxcvbn knows; printable characters, scrambled.
            (("4@8({[<369!|170$5+%2" * 7)[:128], 201, 1),
            ("".join(chr(0x21 + (i * 37) % 94) for i in range(128)), 201, 1),
            # Its symbols make the judged prefix "12345678901234"; the rest is strong.
            ("1234567890123456789 Quixotic-Zebra-Harmonica-Vortex 8({[<369|7%2$+@!", 201, 3),
            ("p@ssw0rd" * 16, 422, 3),  # weak however many pieces are judged
        ],
        ids=["look-alikes", "printable", "strong-after-a-weak-prefix", "weak-throughout"],
    )
    def test_judging_a_long_password_is_bounded_work_beyond_its_prefix(
        self,
        monkeypatch: pytest.MonkeyPatch,
        app: Flask,
        client: Client,
        password: str,
        status: int,
        pieces: int,
    ) -> None:
        # zxcvbn ran its dictionaries over every substring once per reading of the
        # symbols as letters: 13 s (and 7 s) for one request. Counted, not timed: the
        # characters² its dictionary matcher scanned, at most a budget per piece judged.
        scanned: list[int] = []
        scan = matching.dictionary_match

        def counted(text: str, *args: Any, **kwargs: Any) -> Any:
            scanned.append(len(text) ** 2)
            return scan(text, *args, **kwargs)

        monkeypatch.setattr(matching, "dictionary_match", counted)
        response = register(client, password)
        assert response.status_code == status, response.json
        assert len(query(app, select(User.username))) == (status == 201)
        assert 0 < sum(scanned) <= min(pieces, MAX_PIECES) * 2 * JUDGE_BUDGET

    def test_other_field_errors_are_reported_with_the_password(self, client: Client) -> None:
        body = assert_error(register(client, "password123", username="a"), 422)
        assert set(body["errors"]["json"]) == {"username", "password"}


class TestChange:
    def test_a_weak_new_password_is_a_422_and_nothing_changes(
        self, app: Flask, client: Client, alice: User, as_alice: dict[str, str]
    ) -> None:
        before = snapshot(app)
        body = {"password": "password123", "current_password": PASSWORD}
        response = client.patch(f"/users/{alice.id}", json=body, headers=as_alice)
        assert assert_error(response, 422)["errors"]["json"]["password"][0] == TOO_WEAK
        assert snapshot(app) == before

    @pytest.mark.parametrize(
        ("changes", "password"),
        [
            ({}, "the ALICE family recipe"),  # the username
            ({}, "xx alice yy zz qq"),
            # The email being set counts as well as the one in use.
            ({"email": "marigold@example.com"}, "a Marigold in the garden"),
        ],
    )
    def test_a_new_password_holding_the_account_is_refused(
        self,
        app: Flask,
        client: Client,
        alice: User,
        as_alice: dict[str, str],
        changes: dict[str, Any],
        password: str,
    ) -> None:
        before = snapshot(app)
        body = {"password": password, "current_password": PASSWORD} | changes
        response = client.patch(f"/users/{alice.id}", json=body, headers=as_alice)
        assert assert_error(response, 422)["errors"]["json"]["password"] == [CONTAINS_NAME]
        assert snapshot(app) == before

    def test_a_strong_new_password_is_taken(
        self,
        client: Client,
        alice: User,
        as_alice: dict[str, str],
        login: Callable[..., dict[str, Any]],
    ) -> None:
        body = {"password": "violet anchor midnight", "current_password": PASSWORD}
        response = client.patch(f"/users/{alice.id}", json=body, headers=as_alice)
        assert response.status_code == 200, response.json
        assert login("alice", "violet anchor midnight")["token_type"] == "Bearer"


def test_existing_users_keep_a_weak_password(
    app: Flask, login: Callable[..., dict[str, Any]]
) -> None:
    # Accounts made before the rule: the login is not judged, only a new password.
    create_user(app, "legacy", password="password1")
    assert login("legacy", "password1")["token_type"] == "Bearer"


class TestCreateAdmin:
    def invoke(self, app: Flask, password: str) -> Result:
        args = ["create-admin", "--username", "boss", "--email", "boss@example.com"]
        return app.test_cli_runner().invoke(args=[*args, "--password", password])

    def test_a_weak_password_only_warns(self, app: Flask) -> None:
        result = self.invoke(app, "password123")
        assert result.exit_code == 0, result.output
        assert "Warning: weak password" in result.output
        assert TOO_WEAK in result.output
        assert query(app, select(User.username, User.role)) == [("boss", "admin")]

    def test_a_strong_password_says_nothing_of_it(self, app: Flask) -> None:
        result = self.invoke(app, PASSWORD)
        assert result.exit_code == 0 and "Warning" not in result.output
        assert query(app, select(User.username)) == [("boss",)]
