"""Stores: create, read, replace, change, delete, and who may do which."""

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

import core.auth.api_keys as api_keys_module
import resources.items as items_resource
import resources.stores as stores_resource
from helpers import (
    CatalogFactory,
    Client,
    assert_error,
    bearer,
    client_of,
    count_queries,
    meanwhile,
    query,
    snapshot,
)
from models import ApiKey, Item, Store, Tag, User, item_tags


class TestCreate:
    def test_caller_becomes_the_owner(
        self, app: Flask, client: Client, alice: User, as_alice: dict[str, str]
    ) -> None:
        body = {
            "name": "  Corner Shop ",
            "address": "1 Main St",
            "contact_email": "shop@example.com",
            "contact_phone": "+1 (555) 010-0100",
        }
        response = client.post("/stores", json=body, headers=as_alice)
        assert response.status_code == 201
        store = response.json
        assert set(store) == {
            "id",
            "name",
            "address",
            "contact_email",
            "contact_phone",
            "owner_id",
            "metadata",
            "created_at",
            "updated_at",
            "links",
        }
        assert store["links"] == {
            "self": f"/stores/{store['id']}",
            "items": f"/stores/{store['id']}/items",
            "tags": f"/stores/{store['id']}/tags",
        }
        assert store["name"] == "Corner Shop"
        assert store["owner_id"] == alice.id
        assert store["contact_phone"] == "+1 (555) 010-0100"
        assert store["created_at"].endswith("+00:00")
        assert response.headers["Location"] == f"/stores/{store['id']}"
        assert query(app, select(Store.name, Store.owner_id)) == [("Corner Shop", alice.id)]

    def test_optional_fields_may_be_left_out(
        self, client: Client, as_alice: dict[str, str]
    ) -> None:
        store = client.post("/stores", json={"name": "Bare"}, headers=as_alice).json
        assert store["address"] is None and store["contact_email"] is None

    def test_unicode_blanks_are_trimmed_and_inner_text_kept(
        self, client: Client, as_alice: dict[str, str]
    ) -> None:
        body = {"name": "\u3000Caf\u00e9 \u00a0\U0001f600\u200dX\u00a0", "address": "\ufeff"}
        store = client.post("/stores", json=body, headers=as_alice).json
        assert store["name"] == "Caf\u00e9 \u00a0\U0001f600\u200dX"
        assert store["address"] is None

    def test_needs_a_token(self, app: Flask, client: Client) -> None:
        assert_error(
            client.post("/stores", json={"name": "x"}), 401, error="authorization_required"
        )
        assert query(app, select(Store.id)) == []

    def test_names_are_unique_ignoring_case(
        self,
        app: Flask,
        client: Client,
        alice: User,
        bob: User,
        as_alice: dict[str, str],
        auth: Callable[[User], dict[str, str]],
        api: CatalogFactory,
    ) -> None:
        api.store(as_alice, "Corner Shop")
        before = snapshot(app)
        body = assert_error(
            client.post("/stores", json={"name": "CORNER shop"}, headers=auth(bob)), 409
        )
        assert "already exists" in body["message"]
        assert snapshot(app) == before

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"name": "   "}, "name"),
            ({"name": ""}, "name"),
            ({"name": "x" * 81}, "name"),
            ({"name": 5}, "name"),
            ({"name": None}, "name"),
            ({"name": "tab\there"}, "name"),
            ({"name": "nul\x00"}, "name"),
            ({"name": "\u00a0"}, "name"),
            ({"name": "\u200b"}, "name"),
            ({"name": "\ufeff"}, "name"),
            ({"name": "a\u0085b"}, "name"),
            ({"name": "a\u202eb"}, "name"),
            ({"name": "\ud800"}, "name"),
            ({"name": "ok", "contact_email": "nope"}, "contact_email"),
            ({"name": "ok", "contact_email": "a\u202eb@example.com"}, "contact_email"),
            ({"name": "ok", "contact_email": "\u200ba@example.com"}, "contact_email"),
            ({"name": "ok", "contact_email": "a\u2006b@example.com"}, "contact_email"),
            ({"name": "ok", "address": "1 Main St\n2nd floor"}, "address"),
            ({"name": "ok", "address": "\u00adMain St"}, "address"),
            ({"name": "\u3164"}, "name"),
            ({"name": "Shop\ufe0f"}, "name"),
            ({"name": "ok", "contact_phone": "call me"}, "contact_phone"),
            ({"name": "ok", "address": "a" * 256}, "address"),
            ({"name": "ok", "owner_id": 1}, "owner_id"),
            ({"name": "ok", "id": 9}, "id"),
            ({"name": "ok", "created_at": "2026-01-01T00:00:00Z"}, "created_at"),
        ],
    )
    def test_invalid_input(
        self, app: Flask, client: Client, as_alice: dict[str, str], body: Any, field: Any
    ) -> None:
        response = client.post("/stores", json=body, headers=as_alice)
        assert field in assert_error(response, 422)["errors"]["json"]
        assert query(app, select(Store.id)) == []

    def test_a_phone_may_start_with_a_parenthesis(
        self, client: Client, as_alice: dict[str, str]
    ) -> None:
        body = {"name": "Shop", "contact_phone": "(555) 555-0100"}
        assert (
            client.post("/stores", json=body, headers=as_alice).json["contact_phone"]
            == "(555) 555-0100"
        )

    def test_name_of_exactly_80_characters(
        self, app: Flask, client: Client, as_alice: dict[str, str]
    ) -> None:
        name = "é" + "x" * 78 + "🙂"  # 80 characters, more bytes
        response = client.post("/stores", json={"name": f"  {name}  "}, headers=as_alice)
        assert response.status_code == 201 and response.json["name"] == name
        assert query(app, select(Store.name)) == [(name,)]
        assert client.get(response.headers["Location"]).json["name"] == name


class TestRead:
    def test_list_is_public_paginated_and_filterable(
        self,
        client: Client,
        alice: User,
        bob: User,
        as_alice: dict[str, str],
        auth: Callable[[User], dict[str, str]],
        api: CatalogFactory,
    ) -> None:
        api.store(as_alice, "Alpha Market")
        api.store(auth(bob), "Beta Shop")
        api.store(as_alice, "Gamma MARKET")
        response = client.get("/stores")
        assert response.status_code == 200
        assert [s["name"] for s in response.json] == ["Alpha Market", "Beta Shop", "Gamma MARKET"]
        assert response.headers["X-Total-Count"] == "3"
        assert response.headers["Cache-Control"] == "public, no-cache"
        assert [s["name"] for s in client.get("/stores?q=market").json] == [
            "Alpha Market",
            "Gamma MARKET",
        ]
        assert [s["name"] for s in client.get(f"/stores?owner_id={bob.id}").json] == ["Beta Shop"]
        assert client.get("/stores?q=%25").json == []

    def test_one_store_with_its_etag(
        self, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        store = api.store(as_alice)
        response = client.get(f"/stores/{store['id']}")
        assert response.status_code == 200
        assert response.json == store
        assert response.headers["ETag"]

    @pytest.mark.parametrize("path", ["/stores/99", "/stores/99/items", "/stores/99/tags"])
    def test_unknown_store(self, client: Client, path: Any) -> None:
        body = assert_error(client.get(path), 404)
        assert body["message"] == "Store 99 not found."

    @pytest.mark.parametrize(
        "path", ["/stores/0", "/stores/-1", "/stores/abc", "/stores/99999999999"]
    )
    def test_ids_that_cannot_exist(self, client: Client, path: Any) -> None:
        assert_error(client.get(path), 404)

    @pytest.mark.parametrize(
        "query_string", ["owner_id=0", "owner_id=x", "q=", "page=0", "page_size=101"]
    )
    def test_bad_filters(self, client: Client, query_string: Any) -> None:
        body = assert_error(client.get(f"/stores?{query_string}"), 422)
        assert "query" in body["errors"]


class TestChange:
    def test_owner_replaces_a_store(
        self, app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        store = api.store(as_alice, address="1 Main St", contact_phone="555 0100")
        response = client.put(
            f"/stores/{store['id']}",
            json={"name": "Renamed", "contact_email": "a@b.io"},
            headers=as_alice,
        )
        assert response.status_code == 200
        body = response.json
        assert body["name"] == "Renamed"
        assert body["contact_email"] == "a@b.io"
        assert body["address"] is None and body["contact_phone"] is None
        assert body["updated_at"] > store["updated_at"]
        assert query(app, select(Store.name, Store.address)) == [("Renamed", None)]

    def test_put_needs_the_name(
        self, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        store = api.store(as_alice)
        response = client.put(f"/stores/{store['id']}", json={"address": "x"}, headers=as_alice)
        assert "name" in assert_error(response, 422)["errors"]["json"]

    def test_owner_patches_some_fields(
        self, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        store = api.store(as_alice, address="1 Main St")
        response = client.patch(
            f"/stores/{store['id']}", json={"contact_phone": "555-0100"}, headers=as_alice
        )
        assert response.status_code == 200
        assert response.json["address"] == "1 Main St"
        assert response.json["contact_phone"] == "555-0100"

    @pytest.mark.parametrize("blank", [None, "", "   "])
    def test_patch_may_clear_optional_fields(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        api: CatalogFactory,
        blank: Any,
    ) -> None:
        store = api.store(
            as_alice, address="1 Main St", contact_email="a@b.io", contact_phone="555 0100"
        )
        body = dict.fromkeys(("address", "contact_email", "contact_phone"), blank)
        response = client.patch(f"/stores/{store['id']}", json=body, headers=as_alice)
        assert response.status_code == 200
        assert [response.json[k] for k in body] == [None, None, None]
        assert query(app, select(Store.address, Store.contact_email, Store.contact_phone)) == [
            (None, None, None)
        ]

    def test_rename_to_an_existing_name(
        self, app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        api.store(as_alice, "One")
        two = api.store(as_alice, "Two")
        before = snapshot(app)
        assert_error(
            client.patch(f"/stores/{two['id']}", json={"name": "ONE"}, headers=as_alice), 409
        )
        assert snapshot(app) == before

    def test_only_an_admin_transfers_a_store(
        self,
        app: Flask,
        client: Client,
        alice: User,
        bob: User,
        admin: User,
        as_alice: dict[str, str],
        auth: Callable[[User], dict[str, str]],
        api: CatalogFactory,
    ) -> None:
        store = api.store(as_alice)
        before = snapshot(app)
        # Permission comes before validation: a non-admin is refused even with a body
        # that would also be invalid.
        for body in ({"owner_id": bob.id}, {"owner_id": "x", "name": ""}):
            for method in (client.patch, client.put):
                response = method(f"/stores/{store['id']}", json=body, headers=as_alice)
                message = assert_error(response, 403, error="forbidden")["message"]
                assert message == "Only an admin may transfer a store."
        assert snapshot(app) == before
        response = client.patch(
            f"/stores/{store['id']}", json={"owner_id": bob.id}, headers=auth(admin)
        )
        assert response.status_code == 200
        assert response.json["owner_id"] == bob.id
        # Now bob is the owner, and alice is not.
        assert (
            client.patch(
                f"/stores/{store['id']}", json={"name": "Bob's"}, headers=auth(bob)
            ).status_code
            == 200
        )
        assert_error(
            client.patch(f"/stores/{store['id']}", json={"name": "Mine"}, headers=as_alice), 403
        )

    def test_transfer_to_an_unknown_user(
        self,
        client: Client,
        admin: User,
        as_alice: dict[str, str],
        auth: Callable[[User], dict[str, str]],
        api: CatalogFactory,
    ) -> None:
        store = api.store(as_alice)
        response = client.patch(
            f"/stores/{store['id']}", json={"owner_id": 999}, headers=auth(admin)
        )
        assert assert_error(response, 422)["errors"]["json"]["owner_id"] == [
            "User 999 does not exist."
        ]

    def test_unknown_store(self, client: Client, as_alice: dict[str, str]) -> None:
        assert_error(client.put("/stores/5", json={"name": "x"}, headers=as_alice), 404)
        assert_error(client.patch("/stores/5", json={"name": "x"}, headers=as_alice), 404)


class TestDelete:
    def test_deletes_the_store_with_its_items_tags_and_links(
        self, app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        keep = api.store(as_alice, "Keep")
        kept_item = api.item(as_alice, keep)
        kept_tag = api.tag(as_alice, keep)
        api.link(as_alice, kept_item, kept_tag)
        store = api.store(as_alice, "Gone")
        item = api.item(as_alice, store)
        tag = api.tag(as_alice, store)
        api.link(as_alice, item, tag)
        response = client.delete(f"/stores/{store['id']}", headers=as_alice)
        assert response.status_code == 204
        assert query(app, select(Store.name)) == [("Keep",)]
        assert query(app, select(Item.id)) == [(kept_item["id"],)]
        assert query(app, select(Tag.id)) == [(kept_tag["id"],)]
        assert query(app, select(func.count()).select_from(item_tags)) == [(1,)]
        assert_error(client.get(f"/stores/{store['id']}"), 404)

    @pytest.mark.postgres
    @pytest.mark.parametrize("made", ["item", "tag", "api_key"])
    def test_a_row_made_in_the_store_meanwhile_is_deleted_with_it(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        api: CatalogFactory,
        monkeypatch: pytest.MonkeyPatch,
        made: str,
    ) -> None:
        """The store is deleted while a row is being made in it: the deletion waits for
        that row, then takes it. (It used to commit first, and the new row's foreign
        key then failed: a bare 409 "conflict".)"""
        store = api.store(as_alice, "Gone")
        answers: list[int] = []

        def deletion() -> None:
            answers.append(
                client_of(app).delete(f"/stores/{store['id']}", headers=as_alice).status_code
            )

        in_store = {"store_id": store["id"]}
        owner, name, path, body = {
            "item": (items_resource, "flush", "/items", {"name": "Tea", "price": 2, **in_store}),
            "tag": (stores_resource, "flush", f"/stores/{store['id']}/tags", {"name": "t"}),
            "api_key": (api_keys_module, "new_key", "/api-keys", {"name": "k", **in_store}),
        }[made]
        body |= {"scopes": ["jobs"]} if made == "api_key" else {}
        other = meanwhile(monkeypatch, owner, name, deletion, first=True)
        response = client.post(path, json=body, headers=as_alice)
        other.join(10)
        assert response.status_code == 201, response.json
        assert answers == [204]
        assert query(app, select(Store.id)) == []
        assert query(app, select(func.count()).select_from(Item)) == [(0,)]
        assert query(app, select(func.count()).select_from(Tag)) == [(0,)]
        assert query(app, select(func.count()).select_from(ApiKey)) == [(0,)]

    @pytest.mark.config(STORE_DELETE_BATCH=2)
    def test_a_big_store_goes_in_batches(
        self, app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        """Each batch of items is one statement of its own transaction; the links go
        with their items, the tags with the store."""
        keep = api.store(as_alice, "Keep")
        kept = api.link(as_alice, api.item(as_alice, keep), api.tag(as_alice, keep))
        store = api.store(as_alice, "Big")
        tag = api.tag(as_alice, store)
        for n in range(5):
            api.link(as_alice, api.item(as_alice, store, f"Item {n}"), tag)
        with count_queries(app) as statements:
            response = client.delete(f"/stores/{store['id']}", headers=as_alice)
        assert response.status_code == 204 and response.get_data() == b""
        batches = [s for s in statements if s.startswith("DELETE FROM items")]
        assert len(batches) == 3  # 2 + 2 + 1 items
        assert all("LIMIT" in s for s in batches)
        assert query(app, select(Store.name)) == [("Keep",)]
        assert query(app, select(Item.id)) == [(kept["id"],)]
        assert query(app, select(Tag.name)) == [("dairy",)]
        assert query(app, select(item_tags.c.item_id)) == [(kept["id"],)]

    @pytest.mark.filterwarnings("default")  # as in production (test_http.py)
    def test_a_stale_if_match_deletes_nothing(
        self, app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        store = api.store(as_alice, "Big")
        api.item(as_alice, store)
        before = snapshot(app)
        response = client.delete(
            f"/stores/{store['id']}", headers={**as_alice, "If-Match": '"stale"'}
        )
        assert_error(response, 412)
        assert snapshot(app) == before

    def test_needs_a_fresh_token(
        self,
        app: Flask,
        client: Client,
        alice: User,
        login: Callable[..., dict[str, Any]],
        api: CatalogFactory,
    ) -> None:
        tokens = login(alice)
        store = api.store(bearer(tokens["access_token"]))
        stale = client.post("/refresh", headers=bearer(tokens["refresh_token"])).json[
            "access_token"
        ]
        response = client.delete(f"/stores/{store['id']}", headers=bearer(stale))
        assert_error(response, 401, error="fresh_token_required")
        assert len(query(app, select(Store.id))) == 1


class TestOwnership:
    """User B gets 403 for every write on user A's store; A's data stays byte for byte."""

    def test_every_write_by_another_user_is_forbidden(
        self,
        app: Flask,
        client: Client,
        alice: User,
        bob: User,
        as_alice: dict[str, str],
        auth: Callable[[User], dict[str, str]],
        api: CatalogFactory,
    ) -> None:
        store = api.store(as_alice)
        item = api.item(as_alice, store)
        tag = api.tag(as_alice, store)
        api.link(as_alice, item, tag)
        other_tag = api.tag(as_alice, store, "organic")
        bob_headers = auth(bob)
        before = snapshot(app)
        writes = [
            ("put", f"/stores/{store['id']}", {"name": "Bob's now"}),
            ("patch", f"/stores/{store['id']}", {"name": "Bob's now"}),
            ("delete", f"/stores/{store['id']}", None),
            ("post", f"/stores/{store['id']}/tags", {"name": "bobs"}),
            ("post", "/items", {"name": "Bread", "price": 1, "store_id": store["id"]}),
            ("put", f"/items/{item['id']}", {"name": "Bread", "price": 1}),
            ("patch", f"/items/{item['id']}", {"price": 0}),
            ("delete", f"/items/{item['id']}", None),
            ("post", f"/items/{item['id']}/tags/{other_tag['id']}", None),
            ("delete", f"/items/{item['id']}/tags/{tag['id']}", None),
            ("patch", f"/tags/{tag['id']}", {"name": "bobs"}),
            ("delete", f"/tags/{other_tag['id']}", None),
        ]
        for method, path, body in writes:
            response = getattr(client, method)(path, json=body, headers=bob_headers)
            assert_error(response, 403, error="forbidden")
        assert snapshot(app) == before

    def test_an_admin_may_do_all_of_it(
        self,
        app: Flask,
        client: Client,
        alice: User,
        admin: User,
        as_alice: dict[str, str],
        auth: Callable[[User], dict[str, str]],
        api: CatalogFactory,
    ) -> None:
        store = api.store(as_alice)
        item = api.item(as_alice, store)
        tag = api.tag(as_alice, store)
        headers = auth(admin)

        renamed = client.patch(f"/stores/{store['id']}", json={"name": "Audited"}, headers=headers)
        assert renamed.status_code == 200
        body = dict(renamed.json)
        assert body.pop("updated_at") > store["updated_at"]
        assert body == {k: v for k, v in store.items() if k != "updated_at"} | {"name": "Audited"}
        assert renamed.json["owner_id"] == alice.id  # an admin's change keeps the owner

        linked = client.post(f"/items/{item['id']}/tags/{tag['id']}", headers=headers)
        assert linked.status_code == 201
        assert linked.json["tags"] == [{"id": tag["id"], "name": "dairy"}]
        assert linked.json["store"] == {"id": store["id"], "name": "Audited"}

        priced = client.patch(f"/items/{item['id']}", json={"price": 2}, headers=headers)
        assert priced.status_code == 200
        assert priced.json["price"] == 2.0
        assert client.get(f"/items/{item['id']}").json == priced.json

        tag_renamed = client.patch(f"/tags/{tag['id']}", json={"name": "milk"}, headers=headers)
        assert tag_renamed.status_code == 200
        assert tag_renamed.json == tag | {
            "name": "milk",
            "updated_at": tag_renamed.json["updated_at"],
        }
        assert query(app, select(Store.name, Store.owner_id)) == [("Audited", alice.id)]
        assert query(app, select(Item.price)) == [(Decimal("2.00"),)]
        assert query(app, select(Tag.name)) == [("milk",)]

        deleted = client.delete(f"/items/{item['id']}", headers=headers)
        assert deleted.status_code == 204 and deleted.get_data() == b""
        assert_error(client.get(f"/items/{item['id']}"), 404)
        deleted = client.delete(f"/stores/{store['id']}", headers=headers)
        assert deleted.status_code == 204 and deleted.get_data() == b""
        assert_error(client.get(f"/stores/{store['id']}"), 404)
        after = snapshot(app)
        assert after["stores"] == after["items"] == after["tags"] == after["item_tags"] == []
        assert [row[1] for row in after["users"]] == ["alice", "root"]  # nobody else went


def test_a_stranger_cannot_probe_user_ids_through_owner_id(
    client: Client,
    alice: User,
    bob: User,
    as_alice: dict[str, str],
    auth: Callable[[User], dict[str, str]],
    api: CatalogFactory,
) -> None:
    path, headers = f"/stores/{api.store(as_alice)['id']}", auth(bob)
    for owner in (bob.id, 4242):
        response = client.patch(path, json={"owner_id": owner}, headers=headers)
        assert_error(response, 403, error="forbidden")
