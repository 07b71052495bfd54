"""Items: exact money, validation, uniqueness per store, replace/patch/delete, tagging."""

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from helpers import CatalogFactory, Client, assert_error, bearer, query, snapshot
from models import Item, User, item_tags
from schemas import ItemCreateSchema


@pytest.fixture
def store(as_alice: dict[str, str], api: CatalogFactory) -> Any:
    return api.store(as_alice)


def post_item(client: Client, headers: Any, store: Any, **fields: Any) -> Any:
    body = {"name": "Milk", "price": "1.50", "store_id": store["id"]} | fields
    return client.post("/items", json=body, headers=headers)


class TestCreate:
    def test_creates_an_item(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any
    ) -> None:
        response = post_item(client, as_alice, store, description="  Whole, 1 l\nFresh  ")
        assert response.status_code == 201
        item = response.json
        assert set(item) == {
            "id",
            "name",
            "description",
            "price",
            "stock",
            "store_id",
            "store",
            "tags",
            "sku",
            "status",
            "low_stock_threshold",
            "metadata",
            "created_at",
            "updated_at",
            "links",
        }
        assert item["store"] == {"id": store["id"], "name": store["name"]}
        assert item["links"] == {
            "self": f"/items/{item['id']}",
            "store": f"/stores/{store['id']}",
            "stock": f"/items/{item['id']}/stock",
        }
        assert item["tags"] == []
        assert item["stock"] == 0
        assert item["description"] == "Whole, 1 l\nFresh"
        assert response.headers["Location"] == f"/items/{item['id']}"

    @pytest.mark.parametrize(
        ("sent", "stored", "returned"),
        [
            (19.99, Decimal("19.99"), 19.99),
            ("19.99", Decimal("19.99"), 19.99),
            (0.1, Decimal("0.10"), 0.1),
            (0, Decimal("0.00"), 0),
            ("9999999999.99", Decimal("9999999999.99"), 9999999999.99),
            (100, Decimal("100.00"), 100),
            (" 7.5 ", Decimal("7.50"), 7.5),
            ("-0", Decimal("0.00"), 0),
            (12345678.9, Decimal("12345678.90"), 12345678.9),
        ],
    )
    def test_money_round_trips_exactly(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        sent: Any,
        stored: Any,
        returned: Any,
    ) -> None:
        response = post_item(client, as_alice, store, price=sent)
        assert response.status_code == 201, response.json
        assert response.json["price"] == returned
        # The JSON text itself carries exactly the stored digits.
        exact = json.loads(response.get_data(as_text=True), parse_float=Decimal)["price"]
        assert Decimal(exact) == stored
        assert query(app, select(Item.price)) == [(stored,)]

    def test_prices_add_up_without_drift(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any
    ) -> None:
        post_item(client, as_alice, store, name="a", price=0.1)
        post_item(client, as_alice, store, name="b", price=0.2)
        [(total,)] = query(app, select(func.sum(Item.price)))
        assert total == Decimal("0.30")

    @pytest.mark.parametrize(
        "price",
        [
            -0.01,
            "-1",
            1.005,
            "0.001",
            10_000_000_000,
            "1e10",
            "NaN",
            "Infinity",
            "abc",
            "",
            True,
            None,
            [],
            {},
        ],
    )
    def test_invalid_prices(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any, price: Any
    ) -> None:
        body = assert_error(post_item(client, as_alice, store, price=price), 422)
        assert "price" in body["errors"]["json"]
        assert query(app, select(Item.id)) == []

    @pytest.mark.parametrize(
        "number", ["1.0000000000000001", "19.990000000000001", "0.30000000000000004", "1e-3"]
    )
    def test_a_json_number_is_read_exactly(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any, number: Any
    ) -> None:
        """17 significant digits: a float would round them to 2 decimals and accept."""
        text = f'{{"name": "Milk", "price": {number}, "store_id": {store["id"]}}}'
        response = client.post(
            "/items", data=text, content_type="application/json", headers=as_alice
        )
        body = assert_error(response, 422)
        assert body["errors"] == {"json": {"price": ["Must have at most 2 decimal places."]}}
        assert query(app, select(Item.id)) == []

    def test_message_for_too_many_decimals(
        self, client: Client, as_alice: dict[str, str], store: Any
    ) -> None:
        body = assert_error(post_item(client, as_alice, store, price="1.999"), 422)
        assert body["errors"]["json"]["price"] == ["Must have at most 2 decimal places."]

    def test_unknown_store_is_a_validation_error(
        self, app: Flask, client: Client, as_alice: dict[str, str]
    ) -> None:
        response = client.post(
            "/items", json={"name": "x", "price": 1, "store_id": 77}, headers=as_alice
        )
        body = assert_error(response, 422)
        assert body["errors"]["json"]["store_id"] == ["Store 77 does not exist."]

    def test_a_store_gone_after_the_check_is_the_same_422(
        self, app: Flask, client: Client, as_alice: dict[str, str], monkeypatch: Any
    ) -> None:
        """Its deletion may commit between the body's check and the view (a 500)."""
        monkeypatch.setattr(ItemCreateSchema, "_store_exists", lambda *_a, **_k: None)
        before = snapshot(app)
        response = client.post(
            "/items", json={"name": "x", "price": 1, "store_id": 77}, headers=as_alice
        )
        body = assert_error(response, 422)
        assert body["errors"]["json"]["store_id"] == ["Store 77 does not exist."]
        assert snapshot(app) == before

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"store_id": "1"}, "store_id"),
            ({"store_id": 0}, "store_id"),
            ({"store_id": 2**31}, "store_id"),
            ({"name": " "}, "name"),
            ({"description": "d" * 2001}, "description"),
            ({"description": "bell\x07"}, "description"),
            ({"description": "a\u202eb"}, "description"),
            ({"description": "line\u2028separator"}, "description"),
            ({"tags": []}, "tags"),
            ({"id": 3}, "id"),
        ],
    )
    def test_invalid_fields(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        fields: Any,
        field: Any,
    ) -> None:
        body = assert_error(post_item(client, as_alice, store, **fields), 422)
        assert field in body["errors"]["json"]
        assert query(app, select(Item.id)) == []

    def test_missing_fields(self, client: Client, as_alice: dict[str, str]) -> None:
        body = assert_error(client.post("/items", json={}, headers=as_alice), 422)
        assert set(body["errors"]["json"]) == {"name", "price", "store_id"}

    def test_names_are_unique_within_a_store_ignoring_case(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        api: CatalogFactory,
    ) -> None:
        post_item(client, as_alice, store, name="Milk")
        before = snapshot(app)
        body = assert_error(post_item(client, as_alice, store, name="MILK"), 409)
        assert "already has an item named" in body["message"]
        assert snapshot(app) == before
        other = api.store(as_alice, "Other")
        assert post_item(client, as_alice, other, name="Milk").status_code == 201


class TestChange:
    @pytest.fixture
    def item(self, as_alice: dict[str, str], store: Any, api: CatalogFactory) -> Any:
        return api.item(as_alice, store, description="old")

    def test_put_replaces_and_clears_the_description(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        response = client.put(
            f"/items/{item['id']}", json={"name": "Oat milk", "price": "2.10"}, headers=as_alice
        )
        assert response.status_code == 200
        assert response.json["name"] == "Oat milk"
        assert response.json["price"] == 2.1
        assert response.json["description"] is None
        assert query(app, select(Item.name, Item.price, Item.description)) == [
            ("Oat milk", Decimal("2.10"), None)
        ]

    def test_put_needs_name_and_price(
        self, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        body = assert_error(
            client.put(f"/items/{item['id']}", json={"name": "x"}, headers=as_alice), 422
        )
        assert set(body["errors"]["json"]) == {"price"}

    def test_put_never_creates(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any
    ) -> None:
        assert_error(client.put("/items/42", json={"name": "x", "price": 1}, headers=as_alice), 404)
        assert query(app, select(Item.id)) == []

    @pytest.mark.parametrize("blank", ["", "  ", None])
    def test_a_blank_or_null_description_clears_it(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any, blank: Any
    ) -> None:
        response = client.patch(
            f"/items/{item['id']}", json={"description": blank}, headers=as_alice
        )
        assert response.status_code == 200
        assert response.json["description"] is None
        assert query(app, select(Item.description)) == [(None,)]

    def test_minus_zero_is_zero_so_etags_stay_stable(
        self, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        response = client.patch(f"/items/{item['id']}", json={"price": "-0"}, headers=as_alice)
        assert response.json["price"] == 0 and '"price":-' not in response.get_data(as_text=True)
        assert response.headers["ETag"] == client.get(f"/items/{item['id']}").headers["ETag"]

    def test_patch_changes_a_subset(
        self, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        response = client.patch(f"/items/{item['id']}", json={"price": 3}, headers=as_alice)
        assert response.status_code == 200
        assert response.json["price"] == 3
        assert response.json["name"] == item["name"]
        assert response.json["description"] == "old"

    @pytest.mark.parametrize("method", ["put", "patch"])
    def test_an_item_cannot_change_store(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        item: Any,
        api: CatalogFactory,
        method: Any,
    ) -> None:
        other = api.store(as_alice, "Other")
        before = snapshot(app)
        body = {"name": "x", "price": 1, "store_id": other["id"]}
        response = getattr(client, method)(f"/items/{item['id']}", json=body, headers=as_alice)
        assert "store_id" in assert_error(response, 422)["errors"]["json"]
        assert snapshot(app) == before

    def test_rename_to_a_taken_name(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        item: Any,
        api: CatalogFactory,
    ) -> None:
        api.item(as_alice, store, "Bread")
        before = snapshot(app)
        assert_error(
            client.patch(f"/items/{item['id']}", json={"name": "bread"}, headers=as_alice), 409
        )
        assert snapshot(app) == before

    def test_delete_needs_a_fresh_token(
        self,
        app: Flask,
        client: Client,
        alice: User,
        login: Callable[..., dict[str, Any]],
        api: CatalogFactory,
    ) -> None:
        tokens = login(alice)
        headers = bearer(tokens["access_token"])
        item = api.item(headers, api.store(headers))
        stale = client.post("/refresh", headers=bearer(tokens["refresh_token"])).json[
            "access_token"
        ]
        assert_error(
            client.delete(f"/items/{item['id']}", headers=bearer(stale)),
            401,
            error="fresh_token_required",
        )
        assert client.delete(f"/items/{item['id']}", headers=headers).status_code == 204
        assert query(app, select(Item.id)) == []
        assert_error(client.get(f"/items/{item['id']}"), 404)


class TestTagging:
    @pytest.fixture
    def item(self, as_alice: dict[str, str], store: Any, api: CatalogFactory) -> Any:
        return api.item(as_alice, store)

    def test_first_link_is_201_then_200(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        item: Any,
        api: CatalogFactory,
    ) -> None:
        organic = api.tag(as_alice, store, "organic")
        dairy = api.tag(as_alice, store, "dairy")
        first = client.post(f"/items/{item['id']}/tags/{dairy['id']}", headers=as_alice)
        assert first.status_code == 201
        assert first.json["tags"] == [{"id": dairy["id"], "name": "dairy"}]
        client.post(f"/items/{item['id']}/tags/{organic['id']}", headers=as_alice)
        again = client.post(f"/items/{item['id']}/tags/{dairy['id']}", headers=as_alice)
        assert again.status_code == 200
        assert [t["name"] for t in again.json["tags"]] == ["organic", "dairy"]  # by tag id
        assert again.json == client.get(f"/items/{item['id']}").json
        assert query(app, select(func.count()).select_from(item_tags)) == [(2,)]

    def test_a_tag_of_another_store(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        item: Any,
        api: CatalogFactory,
    ) -> None:
        foreign = api.tag(as_alice, api.store(as_alice, "Other"), "dairy")
        before = snapshot(app)
        response = client.post(f"/items/{item['id']}/tags/{foreign['id']}", headers=as_alice)
        assert "tag_id" in assert_error(response, 422)["errors"]["path"]
        assert snapshot(app) == before

    def test_unknown_item_or_tag(
        self,
        client: Client,
        as_alice: dict[str, str],
        item: Any,
        store: Any,
        api: CatalogFactory,
    ) -> None:
        tag = api.tag(as_alice, store)
        assert_error(client.post(f"/items/999/tags/{tag['id']}", headers=as_alice), 404)
        assert_error(client.post(f"/items/{item['id']}/tags/999", headers=as_alice), 404)

    def test_unlink(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        item: Any,
        api: CatalogFactory,
    ) -> None:
        tag = api.tag(as_alice, store)
        api.link(as_alice, item, tag)
        response = client.delete(f"/items/{item['id']}/tags/{tag['id']}", headers=as_alice)
        assert response.status_code == 204
        assert client.get(f"/items/{item['id']}").json["tags"] == []
        body = assert_error(
            client.delete(f"/items/{item['id']}/tags/{tag['id']}", headers=as_alice), 404
        )
        assert body["message"] == f"Item {item['id']} does not carry tag {tag['id']}."
        assert query(app, select(func.count()).select_from(item_tags)) == [(0,)]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/items", {"name": "", "price": "bad", "stock": -1, "colour": "red"}),
        ("/webhooks", {"url": "not a url", "events": ["nothing.happened"]}),
        ("/api-keys", {"name": "", "scopes": ["everything"]}),
    ],
)
def test_another_users_store_in_a_body_is_403_whatever_else_it_holds(
    app: Flask,
    client: Client,
    store: Any,
    auth: Callable[[User], dict[str, str]],
    bob: User,
    path: str,
    body: dict[str, Any],
) -> None:
    """Permission is decided before the body's details (§3): a 422 for the rest of
    the body told the caller first what they might never do."""
    before = snapshot(app)
    response = client.post(path, json={**body, "store_id": store["id"]}, headers=auth(bob))
    assert_error(response, 403, error="forbidden")
    # A store that does not exist: the body's errors, that one with them.
    response = client.post(path, json={**body, "store_id": 999}, headers=auth(bob))
    assert "store_id" in assert_error(response, 422)["errors"]["json"]
    assert snapshot(app) == before
