"""Users: the admin's list, self-service changes, roles, and deletion."""

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from helpers import PASSWORD, Client, assert_error, bearer, query, snapshot
from models import Store, User

CONFIRM = {"current_password": PASSWORD}


class TestList:
    def test_admin_lists_users_with_a_filter(
        self,
        client: Client,
        admin: User,
        alice: User,
        bob: User,
        auth: Callable[[User], dict[str, str]],
    ) -> None:
        headers = auth(admin)
        response = client.get("/users", headers=headers)
        assert response.status_code == 200
        assert [u["username"] for u in response.json] == ["root", "alice", "bob"]
        assert response.headers["X-Total-Count"] == "3"
        assert response.headers["Cache-Control"] == "no-store"
        by_name = client.get("/users?q=LIC", headers=headers).json
        assert [u["username"] for u in by_name] == ["alice"]
        by_email = client.get("/users?q=bob@EXAMPLE", headers=headers).json
        assert [u["username"] for u in by_email] == ["bob"]

    def test_an_accent_typed_apart_finds_the_address(
        self, client: Client, admin: User, auth: Callable[[User], dict[str, str]]
    ) -> None:
        """Emails are kept composed (NFC): so is the search for one."""
        body = {"username": "zoe", "email": "zoe\u0308@example.com", "password": PASSWORD}
        assert client.post("/register", json=body).status_code == 201
        for q in ("zo%C3%AB", "zoe%CC%88"):  # composed, and typed apart
            found = client.get(f"/users?q={q}", headers=auth(admin)).json
            assert [u["username"] for u in found] == ["zoe"], q

    def test_a_like_pattern_is_matched_literally(
        self,
        client: Client,
        admin: User,
        make_user: Callable[..., User],
        auth: Callable[[User], dict[str, str]],
    ) -> None:
        make_user("a_b")
        make_user("axb")
        response = client.get("/users?q=a_", headers=auth(admin))
        assert [u["username"] for u in response.json] == ["a_b"]

    def test_users_may_not_list(
        self, client: Client, alice: User, as_alice: dict[str, str]
    ) -> None:
        # Whatever the query: a bad one is not a 422 for someone who may not ask.
        for path in ("/users", "/users?q=", "/users?page_size=0", "/users?q=" + "x" * 300):
            assert_error(client.get(path, headers=as_alice), 403, error="forbidden")


class TestGet:
    def test_self_and_admin_may_read(
        self,
        client: Client,
        alice: User,
        admin: User,
        as_alice: dict[str, str],
        auth: Callable[[User], dict[str, str]],
    ) -> None:
        for headers in (as_alice, auth(admin)):
            response = client.get(f"/users/{alice.id}", headers=headers)
            assert response.status_code == 200
            assert response.json["username"] == "alice"

    def test_others_may_not(
        self, client: Client, alice: User, bob: User, auth: Callable[[User], dict[str, str]]
    ) -> None:
        assert_error(client.get(f"/users/{alice.id}", headers=auth(bob)), 403, error="forbidden")

    def test_unknown(
        self, client: Client, admin: User, auth: Callable[[User], dict[str, str]]
    ) -> None:
        body = assert_error(client.get("/users/999", headers=auth(admin)), 404)
        assert body["message"] == "User 999 not found."


class TestPatch:
    def test_admin_changes_a_role_and_it_counts_at_once(
        self, client: Client, admin: User, alice: User, auth: Callable[[User], dict[str, str]]
    ) -> None:
        alice_headers = auth(alice)
        assert_error(client.get("/users", headers=alice_headers), 403)
        response = client.patch(f"/users/{alice.id}", json={"role": "admin"}, headers=auth(admin))
        assert response.status_code == 200
        assert response.json["role"] == "admin"
        # The same token, now with the admin role read from the database.
        assert client.get("/users", headers=alice_headers).status_code == 200

    def test_demotion_counts_at_the_next_request(
        self,
        client: Client,
        admin: User,
        make_user: Callable[..., User],
        auth: Callable[[User], dict[str, str]],
    ) -> None:
        other_admin = make_user("boss", role="admin")
        headers = auth(other_admin)
        assert client.get("/users", headers=headers).status_code == 200
        demoted = client.patch(
            f"/users/{other_admin.id}", json={"role": "user"}, headers=auth(admin)
        )
        assert demoted.status_code == 200 and demoted.json["role"] == "user"
        assert_error(client.get("/users", headers=headers), 403, error="forbidden")

    def test_a_user_cannot_change_a_role(
        self, app: Flask, client: Client, alice: User, as_alice: dict[str, str]
    ) -> None:
        before = snapshot(app)
        # Permission comes before validation: the other, invalid field changes nothing.
        for body in ({"role": "admin"}, {"role": "nonsense", "email": "not an address"}):
            response = client.patch(f"/users/{alice.id}", json=body, headers=as_alice)
            message = assert_error(response, 403, error="forbidden")["message"]
            assert message == "Only an admin may change a role."
        assert snapshot(app) == before

    def test_the_last_admin_cannot_be_demoted(
        self, client: Client, admin: User, auth: Callable[[User], dict[str, str]]
    ) -> None:
        response = client.patch(f"/users/{admin.id}", json={"role": "user"}, headers=auth(admin))
        assert_error(response, 409)

    def test_unknown_role(
        self, client: Client, admin: User, alice: User, auth: Callable[[User], dict[str, str]]
    ) -> None:
        response = client.patch(f"/users/{alice.id}", json={"role": "owner"}, headers=auth(admin))
        assert "role" in assert_error(response, 422)["errors"]["json"]

    def test_self_changes_email_and_password(
        self,
        app: Flask,
        client: Client,
        alice: User,
        as_alice: dict[str, str],
        login: Callable[..., dict[str, Any]],
    ) -> None:
        created = client.get("/users/me", headers=as_alice).json["created_at"]
        body = {"email": "alice.fresh@example.com", "password": "a brand new password"} | CONFIRM
        response = client.patch(f"/users/{alice.id}", json=body, headers=as_alice)
        assert response.status_code == 200
        assert response.json == {
            "id": alice.id,
            "username": "alice",
            "email": "alice.fresh@example.com",
            "role": "user",
            "created_at": created,  # unchanged by the change
        }
        assert_error(client.post("/login", json={"username": "alice", "password": PASSWORD}), 401)
        headers = bearer(login("alice", "a brand new password")["access_token"])
        assert client.get(f"/users/{alice.id}", headers=headers).json == response.json
        assert query(app, select(User.email, User.role).where(User.id == alice.id)) == [
            ("alice.fresh@example.com", "user")
        ]

    def test_a_new_password_ends_every_session(
        self, client: Client, alice: User, login: Callable[..., dict[str, Any]]
    ) -> None:
        this, other = login(alice), login(alice)
        body = {"password": "a brand new password"} | CONFIRM
        response = client.patch(
            f"/users/{alice.id}", json=body, headers=bearer(this["access_token"])
        )
        assert response.status_code == 200
        for tokens in (this, other):
            me = client.get("/users/me", headers=bearer(tokens["access_token"]))
            assert_error(me, 401, error="token_revoked")
            refreshed = client.post("/refresh", headers=bearer(tokens["refresh_token"]))
            assert_error(refreshed, 401, error="token_revoked")
        fresh = login("alice", "a brand new password")
        assert client.get("/users/me", headers=bearer(fresh["access_token"])).status_code == 200

    def test_an_email_change_keeps_the_sessions(
        self, client: Client, alice: User, as_alice: dict[str, str]
    ) -> None:
        body = {"email": "new@example.com"} | CONFIRM
        assert client.patch(f"/users/{alice.id}", json=body, headers=as_alice).status_code == 200
        me = client.get("/users/me", headers=as_alice)
        assert me.status_code == 200
        assert me.json["email"] == "new@example.com"

    def test_email_or_password_change_needs_a_fresh_token(
        self, app: Flask, client: Client, alice: User, login: Callable[..., dict[str, Any]]
    ) -> None:
        refreshed = client.post("/refresh", headers=bearer(login(alice)["refresh_token"])).json
        before = snapshot(app)
        for body in (
            {"password": "another password"} | CONFIRM,
            {"email": "x@example.com"} | CONFIRM,
            {"password": "another password"},  # 401 before 422 (no current_password)
            {"email": "not an address", "password": "short"},
        ):
            response = client.patch(
                f"/users/{alice.id}", json=body, headers=bearer(refreshed["access_token"])
            )
            assert_error(response, 401, error="fresh_token_required")
        assert snapshot(app) == before

    def test_admin_cannot_change_someone_elses_credentials(
        self,
        app: Flask,
        client: Client,
        admin: User,
        alice: User,
        auth: Callable[[User], dict[str, str]],
    ) -> None:
        before = snapshot(app)
        for field, value in (("email", "x@example.com"), ("password", "12345678910")):
            response = client.patch(f"/users/{alice.id}", json={field: value}, headers=auth(admin))
            message = assert_error(response, 403, error="forbidden")["message"]
            assert message == f"Only the user themself may change their {field}."
        assert snapshot(app) == before

    def test_others_get_403(
        self,
        app: Flask,
        client: Client,
        alice: User,
        bob: User,
        auth: Callable[[User], dict[str, str]],
    ) -> None:
        before = snapshot(app)
        response = client.patch(
            f"/users/{alice.id}", json={"email": "x@example.com"}, headers=auth(bob)
        )
        assert_error(response, 403, error="forbidden")
        assert snapshot(app) == before

    def test_duplicate_email(
        self, app: Flask, client: Client, alice: User, bob: User, as_alice: dict[str, str]
    ) -> None:
        before = snapshot(app)
        response = client.patch(
            f"/users/{alice.id}", json={"email": "BOB@example.com"} | CONFIRM, headers=as_alice
        )
        assert_error(response, 409)
        assert snapshot(app) == before

    @pytest.mark.parametrize("field", ["id", "username", "password_hash", "is_admin", "created_at"])
    def test_other_fields_are_refused(
        self, client: Client, alice: User, as_alice: dict[str, str], field: Any
    ) -> None:
        response = client.patch(f"/users/{alice.id}", json={field: 1}, headers=as_alice)
        assert field in assert_error(response, 422)["errors"]["json"]


class TestDelete:
    def test_self_delete_with_a_fresh_token(
        self, app: Flask, client: Client, alice: User, as_alice: dict[str, str]
    ) -> None:
        response = client.delete(f"/users/{alice.id}", headers=as_alice)
        assert response.status_code == 204
        assert response.get_data() == b""
        assert query(app, select(User.id)) == []
        assert_error(client.get("/users/me", headers=as_alice), 401, error="user_not_found")

    def test_a_deleted_users_tokens_never_pass_for_a_newer_user(
        self,
        client: Client,
        make_user: Callable[..., User],
        login: Callable[..., dict[str, Any]],
    ) -> None:
        doomed = make_user("doomed")
        tokens = login(doomed)
        assert (
            client.delete(f"/users/{doomed.id}", headers=bearer(tokens["access_token"])).status_code
            == 204
        )
        newcomer = client.post(
            "/register",
            json={"username": "newcomer", "email": "n@example.com", "password": PASSWORD},
        ).json
        assert newcomer["id"] != doomed.id  # ids are never reused, on SQLite either
        me = client.get("/users/me", headers=bearer(tokens["access_token"]))
        assert_error(me, 401, error="user_not_found")
        assert_error(
            client.post("/refresh", headers=bearer(tokens["refresh_token"])),
            401,
            error="user_not_found",
        )

    def test_needs_a_fresh_token(
        self, app: Flask, client: Client, alice: User, login: Callable[..., dict[str, Any]]
    ) -> None:
        refreshed = client.post("/refresh", headers=bearer(login(alice)["refresh_token"])).json
        response = client.delete(f"/users/{alice.id}", headers=bearer(refreshed["access_token"]))
        assert_error(response, 401, error="fresh_token_required")
        assert query(app, select(User.id)) == [(alice.id,)]

    def test_admin_deletes_a_user(
        self,
        app: Flask,
        client: Client,
        admin: User,
        alice: User,
        auth: Callable[[User], dict[str, str]],
    ) -> None:
        assert client.delete(f"/users/{alice.id}", headers=auth(admin)).status_code == 204
        assert query(app, select(User.username)) == [("root",)]

    def test_others_get_403(
        self,
        app: Flask,
        client: Client,
        alice: User,
        bob: User,
        auth: Callable[[User], dict[str, str]],
    ) -> None:
        assert_error(client.delete(f"/users/{alice.id}", headers=auth(bob)), 403, error="forbidden")
        assert len(query(app, select(User.id))) == 2

    def test_a_user_who_owns_stores_is_kept(
        self, app: Flask, client: Client, alice: User, as_alice: dict[str, str]
    ) -> None:
        client.post("/stores", json={"name": "Alice's"}, headers=as_alice)
        before = snapshot(app)
        body = assert_error(client.delete(f"/users/{alice.id}", headers=as_alice), 409)
        assert "owns stores" in body["message"]
        assert snapshot(app) == before
        assert query(app, select(Store.owner_id)) == [(alice.id,)]

    def test_the_last_admin_is_kept(
        self, client: Client, admin: User, auth: Callable[[User], dict[str, str]]
    ) -> None:
        assert_error(client.delete(f"/users/{admin.id}", headers=auth(admin)), 409)

    def test_unknown(
        self, client: Client, admin: User, auth: Callable[[User], dict[str, str]]
    ) -> None:
        assert_error(client.delete("/users/4242", headers=auth(admin)), 404)


class TestCreateAdmin:
    def run(self, app: Flask, *args: Any) -> Any:
        return app.test_cli_runner().invoke(args=["create-admin", *args])

    def test_creates_an_admin(
        self, app: Flask, client: Client, login: Callable[..., dict[str, Any]]
    ) -> None:
        result = self.run(
            app, "--username", "boss", "--email", "boss@example.com", "--password", PASSWORD
        )
        assert result.exit_code == 0, result.output
        assert "Created admin 'boss'" in result.output
        assert query(app, select(User.username, User.role)) == [("boss", "admin")]
        headers = bearer(login("boss")["access_token"])
        assert client.get("/users", headers=headers).status_code == 200
        # The new admin is in the audit log, made by the system (an operator).
        (boss,) = query(app, select(User.id))
        made = client.get("/audit?action=user.created", headers=headers).json
        assert [(e["actor"], e["target"], e["changes"]) for e in made] == [
            (
                {"type": "system"},
                {"type": "user", "id": boss[0]},
                {
                    "username": [None, "boss"],
                    "email": [None, "boss@example.com"],
                    "role": [None, "admin"],
                },
            )
        ]

    def test_refuses_a_duplicate_clearly(self, app: Flask, alice: User) -> None:
        result = self.run(
            app, "--username", "ALICE", "--email", "x@example.com", "--password", PASSWORD
        )
        assert result.exit_code == 1
        assert "already exists" in result.output
        assert query(app, select(User.role)) == [("user",)]

    def test_refuses_invalid_input(self, app: Flask) -> None:
        result = self.run(app, "--username", "x", "--email", "bad", "--password", "short")
        assert result.exit_code == 1
        assert result.output.splitlines() == [
            "Error: No admin created. Username: Must be 3 to 80 characters of A-Z a-z 0-9 _ . -."
            " Email: Must be an email address (name@example.com) of at most 254 characters."
            " Password: Length must be between 8 and 128."
        ]
        assert query(app, select(User.id)) == []


class TestConditional:
    @pytest.mark.filterwarnings("default")  # as in production (test_http.py)
    def test_users_have_etags_and_a_stale_if_match_changes_nothing(
        self, app: Flask, client: Client, alice: User, as_alice: dict[str, str]
    ) -> None:
        me = client.get("/users/me", headers=as_alice)
        one = client.get(f"/users/{alice.id}", headers=as_alice)
        assert me.headers["ETag"] == one.headers["ETag"]
        assert (
            client.get(
                "/users/me", headers=as_alice | {"If-None-Match": me.headers["ETag"]}
            ).status_code
            == 304
        )
        before = snapshot(app)
        stale = as_alice | {"If-Match": '"stale"'}
        assert_error(
            client.patch(
                f"/users/{alice.id}", json={"email": "x@example.com"} | CONFIRM, headers=stale
            ),
            412,
        )
        assert_error(client.delete(f"/users/{alice.id}", headers=stale), 412)
        assert snapshot(app) == before
        current = as_alice | {"If-Match": me.headers["ETag"]}
        assert (
            client.patch(
                f"/users/{alice.id}", json={"email": "x@example.com"} | CONFIRM, headers=current
            ).status_code
            == 200
        )

    def test_others_cannot_tell_which_ids_exist(
        self, client: Client, alice: User, bob: User, auth: Callable[[User], dict[str, str]]
    ) -> None:
        headers = auth(bob)
        assert_error(client.get(f"/users/{alice.id}", headers=headers), 403, error="forbidden")
        assert_error(client.get("/users/4242", headers=headers), 403, error="forbidden")


class TestCurrentPassword:
    """Changing your own email or password needs the password in use (ASVS 2.1.6)."""

    CHANGES = ({"email": "new@example.com"}, {"password": "a brand new password"})

    @pytest.mark.parametrize("change", CHANGES)
    def test_missing_is_a_422_and_changes_nothing(
        self, app: Flask, client: Client, alice: User, as_alice: dict[str, str], change: Any
    ) -> None:
        before = snapshot(app)
        response = client.patch(f"/users/{alice.id}", json=change, headers=as_alice)
        body = assert_error(response, 422)
        assert body["errors"] == {
            "json": {"current_password": ["Required to change the email or the password."]}
        }
        assert snapshot(app) == before

    @pytest.mark.parametrize("change", CHANGES)
    def test_wrong_is_a_403_and_changes_nothing(
        self,
        app: Flask,
        client: Client,
        alice: User,
        login: Callable[..., dict[str, Any]],
        change: Any,
    ) -> None:
        tokens = login(alice)
        headers = bearer(tokens["access_token"])
        before = snapshot(app)
        body = change | {"current_password": "not my password"}
        response = client.patch(f"/users/{alice.id}", json=body, headers=headers)
        assert assert_error(response, 403, error="invalid_credentials")["message"] == (
            "The current password is wrong."
        )
        assert snapshot(app) == before
        # The session goes on, and the password is still the old one.
        assert client.get("/users/me", headers=headers).json["email"] == "alice@example.com"
        assert login(alice)["access_token"]

    @pytest.mark.parametrize("body", [{"current_password": PASSWORD}, {"role": "admin"} | CONFIRM])
    def test_it_is_only_sent_with_a_new_email_or_password(
        self, app: Flask, client: Client, admin: User, body: Any
    ) -> None:
        before = snapshot(app)
        headers = bearer(
            client.post("/login", json={"username": "root", "password": PASSWORD}).json[
                "access_token"
            ]
        )
        response = client.patch(f"/users/{admin.id}", json=body, headers=headers)
        assert assert_error(response, 422)["errors"] == {
            "json": {"current_password": ["Only sent with a new email or password."]}
        }
        assert snapshot(app) == before

    @pytest.mark.config(AUTH_RATE_LIMIT="3 per minute")
    def test_wrong_attempts_count_against_the_login_limit(
        self,
        app: Flask,
        client: Client,
        alice: User,
        admin: User,
        auth: Callable[[User], dict[str, str]],
    ) -> None:
        headers, admin_headers = auth(alice), auth(admin)  # two logins: 1 left
        wrong = {"email": "new@example.com", "current_password": "a guess"}
        assert_error(client.patch(f"/users/{alice.id}", json=wrong, headers=headers), 403)
        before = snapshot(app)
        # The budget is spent: even the right password is not checked now...
        right = {"email": "new@example.com"} | CONFIRM
        refused = client.patch(f"/users/{alice.id}", json=right, headers=headers)
        assert "3 per 1 minute" in assert_error(refused, 429)["message"]
        assert 0 < int(refused.headers["Retry-After"]) <= 60
        # ...nor at /login, which shares it.
        login = {"username": "alice", "password": PASSWORD}
        assert_error(client.post("/login", json=login), 429)
        assert snapshot(app) == before
        # A change that checks no password is not held back.
        promoted = client.patch(f"/users/{alice.id}", json={"role": "admin"}, headers=admin_headers)
        assert promoted.status_code == 200 and promoted.json["role"] == "admin"

    @pytest.mark.config(AUTH_RATE_LIMIT="3 per minute")
    def test_a_right_one_does_not_count(
        self, client: Client, alice: User, as_alice: dict[str, str]
    ) -> None:
        for n in range(3):
            body = {"email": f"new{n}@example.com"} | CONFIRM
            response = client.patch(f"/users/{alice.id}", json=body, headers=as_alice)
            assert response.status_code == 200
            assert response.json["email"] == f"new{n}@example.com"
