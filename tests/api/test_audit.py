"""The audit log (§15, §16): an entry per change, sign-in and failed sign-in, written
with its change; GET /audit for admins (all) and store owners (their stores')."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, insert, select, update

from core.auth import audit
from db import db
from helpers import PASSWORD, CatalogFactory, Client, assert_error, bearer, query
from models import ApiKey, AuditEntry, User
from models.types import utcnow

FIELDS = {"id", "actor", "action", "target", "changes", "request_id", "ip", "created_at"}


def entries(
    client: Client, headers: dict[str, str], query_string: str = "", page_size: int = 100
) -> list[dict[str, Any]]:
    response = client.get(f"/audit?page_size={page_size}&{query_string}", headers=headers)
    assert response.status_code == 200, response.json
    for entry in response.json:
        assert set(entry) == FIELDS
    listed: list[dict[str, Any]] = response.json
    return listed


def actions(rows: list[dict[str, Any]]) -> list[str]:
    return [row["action"] for row in rows]


def stored(app: Flask) -> list[tuple[str]]:
    rows: list[tuple[str]] = query(app, select(AuditEntry.action).order_by(AuditEntry.id))
    return rows


@pytest.fixture
def as_admin(auth: Callable[[User], dict[str, str]], admin: User) -> dict[str, str]:
    return auth(admin)


class TestSignIns:
    def test_a_sign_in(self, client: Client, alice: User, as_admin: dict[str, str]) -> None:
        response = client.post(
            "/login",
            json={"username": "alice", "password": PASSWORD},
            headers={"X-Request-ID": "req-login-1"},
            environ_base={"REMOTE_ADDR": "203.0.113.9"},
        )
        assert response.status_code == 200
        (entry,) = entries(client, as_admin, f"target_id={alice.id}&action=user.signed_in")
        assert entry["actor"] == {"type": "user", "id": alice.id}
        assert entry["target"] == {"type": "user", "id": alice.id}
        assert entry["changes"] == {}
        assert entry["request_id"] == "req-login-1"
        assert entry["ip"] == "203.0.113.9"
        created = datetime.fromisoformat(entry["created_at"])
        assert entry["created_at"].endswith("+00:00")
        assert abs(created - datetime.now(UTC)) < timedelta(minutes=1)

    def test_failed_sign_ins_are_recorded_although_the_request_fails(
        self, app: Flask, client: Client, alice: User, as_admin: dict[str, str]
    ) -> None:
        wrong = client.post("/login", json={"username": "alice", "password": "not it at all"})
        assert_error(wrong, 401, error="invalid_credentials")
        ghost = client.post("/login", json={"username": "ghost", "password": PASSWORD})
        assert_error(ghost, 401, error="invalid_credentials")
        failed = entries(client, as_admin, "action=user.sign_in_failed")
        assert [(e["actor"], e["target"]) for e in failed] == [
            ({"type": "anonymous"}, {"type": "user", "id": alice.id}),
            ({"type": "anonymous"}, {"type": "user", "id": None}),
        ]
        assert all(e["changes"] == {} and e["ip"] == "127.0.0.1" for e in failed)
        assert wrong.headers["X-Request-ID"] == failed[0]["request_id"]

    @pytest.mark.parametrize(("length", "kept"), [(64, True), (65, False), (128, False)])
    def test_a_request_id_is_kept_only_as_long_as_its_columns(
        self, client: Client, alice: User, as_admin: dict[str, str], length: int, kept: bool
    ) -> None:
        # A 65- to 128-character id was kept and overflowed the events' and entries'
        # VARCHAR(64) on PostgreSQL: every write and sign-in a 500, none recorded.
        sent = "r" * length
        wrong = client.post(
            "/login",
            json={"username": "alice", "password": "not it at all"},
            headers={"X-Request-ID": sent},
        )
        assert_error(wrong, 401, error="invalid_credentials")
        made = client.post(
            "/stores", json={"name": "Ids"}, headers=as_admin | {"X-Request-ID": sent}
        )
        assert made.status_code == 201, made.json
        for response in (wrong, made):
            assert (response.headers["X-Request-ID"] == sent) is kept
            assert re.fullmatch(r"[\x21-\x7e]{1,64}", response.headers["X-Request-ID"])
        (failed,) = entries(client, as_admin, "action=user.sign_in_failed")
        (created,) = entries(client, as_admin, "action=store.created")
        assert failed["request_id"] == wrong.headers["X-Request-ID"]
        assert created["request_id"] == made.headers["X-Request-ID"]

    @pytest.mark.config(TRUSTED_PROXIES=1)
    def test_a_forwarded_address_that_is_none_is_recorded_as_unknown(
        self, client: Client, alice: User, as_admin: dict[str, str]
    ) -> None:
        """Behind a proxy the address comes from X-Forwarded-For, which a client that
        reaches the server directly writes itself: 60 characters failed the entry's
        write on PostgreSQL (a 500, and no entry of the failed sign-in)."""
        wrong = {"username": "alice", "password": "not it at all"}
        for forwarded in ("x" * 60, "203.0.113.7"):
            response = client.post("/login", json=wrong, headers={"X-Forwarded-For": forwarded})
            assert_error(response, 401, error="invalid_credentials")
        failed = entries(client, as_admin, "action=user.sign_in_failed")
        assert [e["ip"] for e in failed] == [None, "203.0.113.7"]

    def test_a_token_sent_along_does_not_make_its_user_the_actor(
        self,
        client: Client,
        alice: User,
        bob: User,
        auth: Callable[[User], dict[str, str]],
        as_admin: dict[str, str],
    ) -> None:
        """/login and /register need no token; one sent along (read by the rate
        limiter) named its user as who failed to sign in as alice, or who signed up."""
        as_bob = auth(bob)
        wrong = {"username": "alice", "password": "not it at all"}
        assert_error(client.post("/login", json=wrong, headers=as_bob), 401)
        new = {"username": "carol", "email": "carol@example.com", "password": PASSWORD}
        assert client.post("/register", json=new, headers=as_bob).status_code == 201
        for action in ("user.sign_in_failed", "user.created"):
            [entry] = entries(client, as_admin, f"action={action}")
            assert entry["actor"] == {"type": "anonymous"}, action


class TestAccounts:
    def test_register_role_email_password_delete(
        self,
        app: Flask,
        client: Client,
        admin: User,
        as_admin: dict[str, str],
        login: Callable[..., dict[str, Any]],
    ) -> None:
        body = {"username": "carol", "email": "carol@example.com", "password": PASSWORD}
        user_id = client.post("/register", json=body).json["id"]
        role = client.patch(f"/users/{user_id}", json={"role": "admin"}, headers=as_admin)
        assert role.status_code == 200
        carol = bearer(login("carol")["access_token"])
        change = {
            "email": "carol.new@example.com",
            "password": "lantern orchard violet",
            "current_password": PASSWORD,
        }
        assert client.patch(f"/users/{user_id}", json=change, headers=carol).status_code == 200
        as_admin_again = bearer(login(admin)["access_token"])
        deleted = client.delete(f"/users/{user_id}", headers=as_admin_again)
        assert deleted.status_code == 204

        rows = entries(client, as_admin_again, f"target_type=user&target_id={user_id}")
        assert actions(rows) == [
            "user.created",
            "user.updated",
            "user.signed_in",
            "user.updated",
            "user.deleted",
        ]
        created, role_change, _, credentials, removed = rows
        assert created["actor"] == {"type": "anonymous"}
        assert created["changes"] == {
            "username": [None, "carol"],
            "email": [None, "carol@example.com"],
            "role": [None, "user"],
        }
        assert role_change["actor"] == {"type": "user", "id": admin.id}
        assert role_change["changes"] == {"role": ["user", "admin"]}
        assert credentials["actor"] == {"type": "user", "id": user_id}
        assert credentials["changes"] == {
            "email": ["carol@example.com", "carol.new@example.com"],
            "password": [],  # named, never a value
        }
        assert removed["actor"] == {"type": "user", "id": admin.id}
        assert removed["changes"]["username"] == ["carol", None]

    @pytest.mark.config(WEBHOOK_ALLOW_HTTP=True, WEBHOOK_ALLOW_PRIVATE_NETWORKS=True)
    def test_a_deleted_users_keys_and_webhooks_each_have_their_entry(
        self,
        app: Flask,
        client: Client,
        alice: User,
        as_alice: dict[str, str],
        as_admin: dict[str, str],
    ) -> None:
        # They went with the user's row, silently (a store's keys already had theirs).
        key = client.post(
            "/api-keys", json={"name": "ERP", "scopes": ["catalog:read"]}, headers=as_alice
        )
        revoked = client.post(
            "/api-keys", json={"name": "Old", "scopes": ["catalog:read"]}, headers=as_alice
        )
        assert client.delete(revoked.headers["Location"], headers=as_alice).status_code == 204
        expired = client.post(
            "/api-keys", json={"name": "Gone", "scopes": ["catalog:read"]}, headers=as_alice
        )
        with app.app_context():  # no longer live: its end was its expiry, not the deletion
            db.session.execute(
                update(ApiKey)
                .where(ApiKey.id == expired.json["id"])
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
            db.session.commit()
        hook = client.post(
            "/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["*"]}, headers=as_alice
        )
        assert (key.status_code, hook.status_code) == (201, 201)
        assert client.delete(f"/users/{alice.id}", headers=as_alice).status_code == 204
        ended = entries(client, as_admin, "action=api_key.revoked")
        assert [(e["target"]["id"], e["actor"]) for e in ended] == [
            (revoked.json["id"], {"type": "user", "id": alice.id}),
            (key.json["id"], {"type": "user", "id": alice.id}),
        ]
        assert ended[1]["changes"]["revoked_at"][0] is None
        (gone,) = entries(client, as_admin, "action=webhook.deleted")
        assert gone["target"]["id"] == hook.json["id"]
        assert gone["changes"]["url"] == ["http://127.0.0.1:9/hook", None]

    def test_a_refused_change_writes_nothing(
        self,
        app: Flask,
        client: Client,
        alice: User,
        bob: User,
        as_alice: dict[str, str],
        auth: Callable[[User], dict[str, str]],
    ) -> None:
        before = stored(app)
        wrong = {"email": "x@example.com", "current_password": "not my password"}
        assert_error(client.patch(f"/users/{alice.id}", json=wrong, headers=as_alice), 403)
        taken = {"email": "bob@example.com", "current_password": PASSWORD}
        assert_error(client.patch(f"/users/{alice.id}", json=taken, headers=as_alice), 409)
        assert stored(app) == before


class TestWebhooks:
    @pytest.mark.config(WEBHOOK_ALLOW_HTTP=True, WEBHOOK_ALLOW_PRIVATE_NETWORKS=True)
    def test_a_webhook_saved_changed_and_deleted_never_shows_its_secret(
        self, client: Client, alice: User, as_alice: dict[str, str], as_admin: dict[str, str]
    ) -> None:
        body = {"url": "http://127.0.0.1:9/hook", "events": ["item.created"]}
        made = client.post("/webhooks", json=body, headers=as_alice).json
        hook = f"/webhooks/{made['id']}"
        change = {"url": "http://127.0.0.1:9/other", "enabled": False}
        assert client.patch(hook, json=change, headers=as_alice).status_code == 200
        assert client.patch(hook, json=change, headers=as_alice).status_code == 200  # no change
        assert client.delete(hook, headers=as_alice).status_code == 204
        found = entries(client, as_admin, f"target_type=webhook&target_id={made['id']}")
        assert actions(found) == ["webhook.created", "webhook.updated", "webhook.deleted"]
        assert all(e["actor"] == {"type": "user", "id": alice.id} for e in found)
        created, updated, deleted = (e["changes"] for e in found)
        assert created["url"] == [None, body["url"]]
        assert created["events"] == [None, ["item.created"]]
        assert updated == {"url": [body["url"], change["url"]], "enabled": [True, False]}
        assert deleted["url"] == [change["url"], None]
        assert made["secret"] not in str(found)
        assert entries(client, as_alice, "target_type=webhook") == []  # an account's entries


class TestCatalog:
    def test_every_catalog_change(
        self,
        app: Flask,
        client: Client,
        alice: User,
        as_alice: dict[str, str],
        api: CatalogFactory,
        as_admin: dict[str, str],
    ) -> None:
        store = api.store(as_alice, "Corner Shop")
        patched = client.patch(
            f"/stores/{store['id']}", json={"address": "1 Main St"}, headers=as_alice
        )
        assert patched.status_code == 200
        item = api.item(as_alice, store, "Milk", "1.50", stock=3)
        price = client.patch(f"/items/{item['id']}", json={"price": "2"}, headers=as_alice)
        assert price.status_code == 200
        tag = api.tag(as_alice, store, "dairy")
        api.link(as_alice, item, tag)
        renamed = client.patch(f"/tags/{tag['id']}", json={"name": "milk"}, headers=as_alice)
        assert renamed.status_code == 200
        movement = client.post(
            f"/items/{item['id']}/stock", json={"delta": -2, "reason": "sale"}, headers=as_alice
        )
        assert movement.status_code == 201
        unlinked = client.delete(f"/items/{item['id']}/tags/{tag['id']}", headers=as_alice)
        assert unlinked.status_code == 204
        assert client.delete(f"/tags/{tag['id']}", headers=as_alice).status_code == 204
        assert client.delete(f"/items/{item['id']}", headers=as_alice).status_code == 204
        assert client.delete(f"/stores/{store['id']}", headers=as_alice).status_code == 204

        rows = entries(client, as_admin, "sort=id")
        rows = [r for r in rows if not r["action"].startswith("user.")]
        assert actions(rows) == [
            "store.created",
            "store.updated",
            "item.created",
            "item.updated",
            "tag.created",
            "item.updated",
            "tag.updated",
            "stock_movement.created",
            "item.updated",
            "tag.deleted",
            "item.deleted",
            "store.deleted",
        ]
        by = dict(zip(range(len(rows)), rows, strict=True))
        assert all(r["actor"] == {"type": "user", "id": alice.id} for r in rows)
        assert by[0]["target"] == {"type": "store", "id": store["id"]}
        assert by[0]["changes"]["name"] == [None, "Corner Shop"]
        assert by[1]["changes"] == {"address": [None, "1 Main St"]}
        assert by[2]["changes"]["price"] == [None, 1.5]  # as the item's JSON writes it
        assert by[2]["changes"]["stock"] == [None, 3]
        assert by[3]["changes"] == {"price": [1.5, 2.0]}
        assert by[5]["changes"] == {"tags": [[], [{"id": tag["id"], "name": "dairy"}]]}
        assert by[6]["changes"] == {"name": ["dairy", "milk"]}
        moved = by[7]
        assert moved["target"] == {"type": "stock_movement", "id": movement.json["id"]}
        assert moved["changes"]["delta"] == [None, -2]
        assert moved["changes"]["stock_after"] == [None, 1]
        assert by[8]["changes"] == {"tags": [[{"id": tag["id"], "name": "milk"}], []]}
        assert by[10]["changes"]["name"] == ["Milk", None]
        assert by[11]["changes"]["name"] == ["Corner Shop", None]

    def test_a_batch_writes_an_entry_per_item(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        api: CatalogFactory,
        as_admin: dict[str, str],
    ) -> None:
        store = api.store(as_alice)
        kept, gone = api.item(as_alice, store, "Tea"), api.item(as_alice, store, "Jam")
        body = {
            "create": [{"name": "Bread", "price": 2}],
            "update": [{"id": kept["id"], "price": 3}],
            "delete": [gone["id"]],
        }
        response = client.post(f"/stores/{store['id']}/items/batch", json=body, headers=as_alice)
        assert response.status_code == 200, response.json
        created_id = response.json["created"][0]["id"]
        rows = entries(client, as_admin, "target_type=item&sort=id")[2:]
        assert [(r["action"], r["target"]["id"]) for r in rows] == [
            ("item.deleted", gone["id"]),
            ("item.updated", kept["id"]),
            ("item.created", created_id),
        ]
        assert rows[1]["changes"] == {"price": [1.5, 3.0]}

    def test_an_import_writes_an_entry_per_item_as_the_request_that_asked(
        self,
        client: Client,
        alice: User,
        as_alice: dict[str, str],
        api: CatalogFactory,
        as_admin: dict[str, str],
    ) -> None:
        """The job writes the rows later, in a worker: its entries name the request
        that asked for it (actor, request id, IP), one per item, as a batch's."""
        store = api.store(as_alice)
        tea = api.item(as_alice, store, "Tea")
        body = "name,price,stock,tags\r\nTea,3.00,,\r\nBread,2.00,4,daily\r\n"
        response = client.post(
            f"/stores/{store['id']}/imports",
            data=body,
            headers=as_alice | {"Content-Type": "text/csv", "X-Request-ID": "req-import-1"},
            environ_base={"REMOTE_ADDR": "203.0.113.5"},
        )
        assert response.status_code == 202, response.json
        job = client.get(response.headers["Location"], headers=as_alice).json
        assert job["status"] == "succeeded", job
        (bread,) = client.get(f"/stores/{store['id']}/items?q=Bread").json
        rows = entries(client, as_admin, "target_type=item&sort=id")[1:]
        assert [(r["action"], r["target"]["id"]) for r in rows] == [
            ("item.updated", tea["id"]),
            ("item.created", bread["id"]),
        ]
        for row in rows:
            assert row["actor"] == {"type": "user", "id": alice.id}
            assert (row["request_id"], row["ip"]) == ("req-import-1", "203.0.113.5")
        assert rows[0]["changes"] == {"price": [1.5, 3.0]}
        created = rows[1]["changes"]
        assert created == audit.created(bread)  # as POST /items writes it
        assert created["price"] == [None, 2.0] and created["stock"] == [None, 4]
        assert created["tags"] == [None, [{"id": bread["tags"][0]["id"], "name": "daily"}]]

    def test_an_import_by_a_key_or_the_command_line(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        api: CatalogFactory,
        as_admin: dict[str, str],
        tmp_path: Any,
    ) -> None:
        store = api.store(as_alice)
        made = client.post(
            "/api-keys", json={"name": "erp", "scopes": ["catalog:write", "jobs"]}, headers=as_alice
        )
        assert made.status_code == 201, made.json
        by_key = bearer(made.json["key"]) | {"Content-Type": "text/csv"}
        response = client.post(
            f"/stores/{store['id']}/imports", data="name,price\nJam,4\n", headers=by_key
        )
        assert response.status_code == 202, response.json
        path = tmp_path / "items.csv"
        path.write_text("name,price\nHoney,5\n")
        ran = app.test_cli_runner().invoke(args=["import-items", str(store["id"]), str(path)])
        assert ran.exit_code == 0, ran.output
        rows = entries(client, as_admin, "target_type=item&sort=id")
        assert [(r["action"], r["actor"]) for r in rows] == [
            ("item.created", {"type": "api_key", "id": made.json["id"]}),
            ("item.created", {"type": "system"}),  # an operator on the server
        ]
        assert rows[1]["changes"]["name"] == [None, "Honey"]
        assert (rows[1]["request_id"], rows[1]["ip"]) == (None, None)

    def test_a_change_that_fails_writes_no_entry(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        api: CatalogFactory,
        bob: User,
        auth: Callable[[User], dict[str, str]],
    ) -> None:
        store = api.store(as_alice, "Corner Shop")
        before = stored(app)
        duplicate = client.post("/stores", json={"name": "corner shop"}, headers=as_alice)
        assert_error(duplicate, 409)
        forbidden = client.patch(f"/stores/{store['id']}", json={"name": "X"}, headers=auth(bob))
        assert_error(forbidden, 403)
        after = stored(app)
        # Only bob's sign-in was added.
        assert after == [*before, ("user.signed_in",)]

    def test_an_unchanged_update_writes_no_entry(
        self, app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        store = api.store(as_alice, "Corner Shop")
        before = stored(app)
        same = client.patch(
            f"/stores/{store['id']}", json={"name": "Corner Shop"}, headers=as_alice
        )
        assert same.status_code == 200
        assert stored(app) == before


class TestList:
    @pytest.fixture
    def two_stores(
        self,
        client: Client,
        as_alice: dict[str, str],
        auth: Callable[[User], dict[str, str]],
        bob: User,
        api: CatalogFactory,
    ) -> tuple[Any, Any]:
        as_bob = auth(bob)
        mine, theirs = api.store(as_alice, "Mine"), api.store(as_bob, "Theirs")
        api.item(as_alice, mine, "Milk")
        api.item(as_bob, theirs, "Jam")
        return mine, theirs

    def test_an_owner_sees_their_stores_entries_only(
        self, client: Client, as_alice: dict[str, str], two_stores: tuple[Any, Any]
    ) -> None:
        mine, _ = two_stores
        rows = entries(client, as_alice)
        assert actions(rows) == ["store.created", "item.created"]
        assert rows[0]["target"] == {"type": "store", "id": mine["id"]}

    def test_an_owner_sees_no_api_key_entry_of_their_stores(
        self,
        client: Client,
        as_alice: dict[str, str],
        as_admin: dict[str, str],
        two_stores: tuple[Any, Any],
    ) -> None:
        """A key bound to a store is its maker's account, who may be someone else (an
        admin; the store's owner before a transfer): not shown to the store's owner."""
        mine, _ = two_stores
        body = {"name": "admin tool", "scopes": ["catalog:read"], "store_id": mine["id"]}
        made = client.post("/api-keys", json=body, headers=as_admin)
        assert made.status_code == 201
        assert client.delete(made.headers["Location"], headers=as_admin).status_code == 204
        assert actions(entries(client, as_alice)) == ["store.created", "item.created"]
        assert entries(client, as_alice, "target_type=api_key") == []
        kept = actions(entries(client, as_admin, "target_type=api_key"))
        assert kept == ["api_key.created", "api_key.revoked"]

    def test_an_owner_sees_only_their_own_ip(
        self,
        client: Client,
        as_alice: dict[str, str],
        as_admin: dict[str, str],
        two_stores: tuple[Any, Any],
    ) -> None:
        """Where an admin (or the store's owner before a transfer) worked from is not
        the owner's to see; their own changes' and their keys' addresses are."""
        mine, _ = two_stores
        made = client.post(
            "/api-keys", json={"name": "erp", "scopes": ["catalog:write"]}, headers=as_alice
        )
        assert made.status_code == 201, made.json
        for headers, name, ip in (
            (as_admin, "Admin's", "198.51.100.1"),
            (as_alice, "Alice's", "198.51.100.2"),
            (bearer(made.json["key"]), "Key's", "198.51.100.3"),
        ):
            response = client.post(
                "/items",
                json={"name": name, "price": 1, "store_id": mine["id"]},
                headers=headers,
                environ_base={"REMOTE_ADDR": ip},
            )
            assert response.status_code == 201, response.json
        query_string = "action=item.created&sort=-id"
        shown = [
            (r["changes"]["name"][1], r["ip"]) for r in entries(client, as_alice, query_string)
        ]
        assert shown[:3] == [
            ("Key's", "198.51.100.3"),
            ("Alice's", "198.51.100.2"),
            ("Admin's", None),
        ]
        seen = [r["ip"] for r in entries(client, as_admin, query_string)]
        assert seen[:3] == ["198.51.100.3", "198.51.100.2", "198.51.100.1"]

    def test_an_admin_sees_everything(
        self, client: Client, as_admin: dict[str, str], two_stores: tuple[Any, Any]
    ) -> None:
        rows = entries(client, as_admin)
        assert actions(rows).count("store.created") == 2
        assert "user.signed_in" in actions(rows)

    def test_a_user_without_stores_sees_nothing(
        self,
        client: Client,
        auth: Callable[[User], dict[str, str]],
        make_user: Callable[..., User],
        two_stores: tuple[Any, Any],
    ) -> None:
        assert entries(client, auth(make_user("carol"))) == []

    def test_signing_in_is_needed(self, client: Client) -> None:
        assert_error(client.get("/audit"), 401)

    def test_oldest_first_or_newest_first(
        self, client: Client, as_admin: dict[str, str], two_stores: tuple[Any, Any]
    ) -> None:
        ids = [r["id"] for r in entries(client, as_admin)]
        assert ids == sorted(ids)
        assert [r["id"] for r in entries(client, as_admin, "sort=-id")] == ids[::-1]

    def test_filters(
        self,
        app: Flask,
        client: Client,
        admin: User,
        bob: User,
        as_admin: dict[str, str],
        login: Callable[..., dict[str, Any]],
        two_stores: tuple[Any, Any],
    ) -> None:
        mine, _ = two_stores
        by_bob = entries(client, as_admin, f"actor_id={bob.id}")
        assert by_bob and all(r["actor"]["id"] == bob.id for r in by_bob)
        of_store = entries(client, as_admin, f"target_type=store&target_id={mine['id']}")
        assert actions(of_store) == ["store.created"]
        assert actions(entries(client, as_admin, "action=item.created")) == ["item.created"] * 2
        with app.app_context():
            db.session.execute(update(AuditEntry).values(created_at=utcnow() - timedelta(days=2)))
            db.session.commit()
        login(admin)
        since = (utcnow() - timedelta(days=1)).isoformat()
        recent = entries(client, as_admin, f"created_after={since.replace('+', '%2B')}")
        assert [(r["action"], r["actor"]["id"]) for r in recent] == [("user.signed_in", admin.id)]

    @pytest.mark.parametrize(
        "query_string",
        [
            "target_type=order",
            "actor_id=0",
            "target_id=x",
            "created_after=yesterday",
            "created_after=2026-01-01T00:00:00",  # no offset
            "created_after=9999-12-31T23:59:59-14:00",  # past what UTC can write (was a 500)
            "created_after=0001-01-01T00:00:00%2B14:00",
            "action=" + "a" * 65,
            "sort=created_at",
        ],
    )
    def test_bad_queries(self, client: Client, as_admin: dict[str, str], query_string: str) -> None:
        assert_error(client.get(f"/audit?{query_string}", headers=as_admin), 422)

    def test_cursor_paging_walks_every_entry_once(
        self, client: Client, as_admin: dict[str, str], two_stores: tuple[Any, Any]
    ) -> None:
        every = [r["id"] for r in entries(client, as_admin, "action=store.created")]
        url: str | None = "/audit?page_size=1&action=store.created"
        seen = []
        while url:
            response = client.get(url, headers=as_admin)
            assert response.status_code == 200
            seen += [r["id"] for r in response.json]
            link = response.headers.get("Link", "")
            nxt = [p.split(">")[0].lstrip("<") for p in link.split(", ") if 'rel="next"' in p]
            url = nxt[0] if nxt else None
            assert len(seen) <= len(every)
        assert seen == every and len(every) == 2


class TestNeverASecret:
    def test_record_refuses_a_secret_value(self, app: Flask) -> None:
        with app.test_request_context():
            for field in ("password", "new_password", "token", "key", "password_hash"):
                with pytest.raises(ValueError, match=field):
                    audit.record("user.updated", "user", 1, {field: ["a", "b"]})
            audit.record("user.updated", "user", 1, {"password": []})  # by name: fine

    def test_dumps_lose_secret_fields(self) -> None:
        assert audit.updated({"password": "a", "name": "x"}, {"password": "b", "name": "y"}) == {
            "name": ["x", "y"]
        }


class TestRetention:
    def add_entries(self, app: Flask, *ages_in_days: int) -> None:
        with app.app_context():
            rows = [
                {
                    "actor_type": "anonymous",
                    "action": "user.sign_in_failed",
                    "target_type": "user",
                    "changes": {},
                    "created_at": utcnow() - timedelta(days=age),
                }
                for age in ages_in_days
            ]
            db.session.execute(insert(AuditEntry), rows)
            db.session.commit()

    def count(self, app: Flask) -> int:
        total: int = query(app, select(func.count()).select_from(AuditEntry))[0][0]
        return total

    @pytest.mark.config(AUDIT_RETENTION_DAYS=30)
    def test_entries_past_the_retention_go(self, app: Flask) -> None:
        self.add_entries(app, 31, 40, 29, 0)
        result = app.test_cli_runner().invoke(args=["audit", "purge"])
        assert result.exit_code == 0 and "Purged 2 audit entries." in result.output
        assert self.count(app) == 2

    @pytest.mark.config(AUDIT_RETENTION_DAYS=0)
    def test_zero_keeps_everything(self, app: Flask) -> None:
        self.add_entries(app, 4000)
        with app.app_context():
            assert audit.purge() == 0
        assert self.count(app) == 1

    def test_the_default_is_a_year(self, app: Flask) -> None:
        assert app.config["AUDIT_RETENTION_DAYS"] == 365
