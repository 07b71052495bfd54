"""Stock (§7): movements in and out, counts, the ledger, and the refusals."""

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from helpers import CatalogFactory, Client, Response, assert_error, query, snapshot
from models import Item, StockMovement, User

MAX_STOCK = 2**31 - 1


@pytest.fixture
def store(api: CatalogFactory, as_alice: dict[str, str]) -> Any:
    return api.store(as_alice)


@pytest.fixture
def item(api: CatalogFactory, as_alice: dict[str, str], store: Any) -> Any:
    return api.item(as_alice, store)


def move(client: Client, headers: Any, item: Any, **body: Any) -> Any:
    return client.post(f"/items/{item['id']}/stock", json=body, headers=headers)


def ledger(app: Flask, item_id: Any) -> Any:
    """(stock, sum of movements, number of movements) of an item."""
    stock = query(app, select(Item.stock).where(Item.id == item_id))[0][0]
    total, number = query(
        app,
        select(func.coalesce(func.sum(StockMovement.delta), 0), func.count()).where(
            StockMovement.item_id == item_id
        ),
    )[0]
    return stock, total, number


class TestMovements:
    def test_a_delta_is_recorded_and_moves_the_stock(
        self, app: Flask, client: Client, alice: User, as_alice: dict[str, str], item: Any
    ) -> None:
        before = client.get(f"/items/{item['id']}")
        response = move(client, as_alice, item, delta=12, reason="received", reference=" PO 7 ")
        assert response.status_code == 201
        movement = response.json
        assert set(movement) == {
            "id",
            "item_id",
            "delta",
            "stock_after",
            "reason",
            "reference",
            "user_id",
            "created_at",
        }
        assert movement["item_id"] == item["id"]
        assert (movement["delta"], movement["stock_after"]) == (12, 12)
        assert (movement["reason"], movement["reference"]) == ("received", "PO 7")
        assert movement["user_id"] == alice.id
        assert movement["created_at"].endswith("+00:00")
        location = f"/items/{item['id']}/stock/{movement['id']}"
        assert response.headers["Location"] == location
        assert client.get(location).json == movement

        after = client.get(f"/items/{item['id']}")
        assert after.json["stock"] == 12
        assert after.json["updated_at"] > before.json["updated_at"]
        assert after.headers["ETag"] != before.headers["ETag"]
        assert after.json["updated_at"] == movement["created_at"]
        assert ledger(app, item["id"]) == (12, 12, 1)

        sale = move(client, as_alice, item, delta=-5, reason="sale")
        assert sale.status_code == 201
        assert (sale.json["stock_after"], sale.json["reference"]) == (7, None)
        assert ledger(app, item["id"]) == (7, 7, 2)

    def test_the_list_is_newest_first_and_paginated(
        self, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        for delta in (5, -1, 3):
            assert move(client, as_alice, item, delta=delta, reason="correction").status_code == 201
        response = client.get(f"/items/{item['id']}/stock")
        assert response.status_code == 200
        assert [m["delta"] for m in response.json] == [3, -1, 5]
        assert [m["stock_after"] for m in response.json] == [7, 4, 5]
        page = client.get(f"/items/{item['id']}/stock?page_size=2")
        assert [m["delta"] for m in page.json] == [3, -1]
        assert 'rel="next"' in page.headers["Link"]

    def test_following_next_links_walks_the_whole_ledger_once(
        self, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        for n in range(1, 26):
            move(client, as_alice, item, delta=n, reason="received")
        url: str | None = f"/items/{item['id']}/stock?page_size=10"
        seen: list[int] = []
        while url:
            page = client.get(url)
            assert page.status_code == 200
            seen += [m["delta"] for m in page.json]
            link = re.search(r'<([^>]+)>; rel="next"', page.headers.get("Link", ""))
            url = link.group(1) if link else None
        assert seen == list(range(25, 0, -1))

    def test_a_movement_belongs_to_its_item(
        self,
        client: Client,
        api: CatalogFactory,
        as_alice: dict[str, str],
        store: Any,
        item: Any,
    ) -> None:
        other = api.item(as_alice, store, name="Bread")
        movement = move(client, as_alice, item, delta=1, reason="received").json
        assert_error(client.get(f"/items/{other['id']}/stock/{movement['id']}"), 404)
        assert_error(client.get(f"/items/{item['id']}/stock/{movement['id'] + 1}"), 404)
        assert_error(client.get("/items/999/stock"), 404)

    def test_never_below_zero(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        move(client, as_alice, item, delta=3, reason="received")
        before = snapshot(app)
        body = assert_error(
            move(client, as_alice, item, delta=-4, reason="sale"), 409, error="insufficient_stock"
        )
        assert "has 3 in stock" in body["message"]
        assert snapshot(app) == before
        assert move(client, as_alice, item, delta=-3, reason="sale").json["stock_after"] == 0

    def test_never_above_the_column(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        count = {"set": 1_000_000_000, "expected": 0, "reason": "count"}
        assert move(client, as_alice, item, **count).status_code == 201
        assert move(client, as_alice, item, delta=10**9, reason="received").status_code == 201
        before = snapshot(app)
        body = assert_error(
            move(client, as_alice, item, delta=10**9, reason="received"),
            409,
            error="stock_overflow",
        )
        assert "2000000000" in body["message"]
        assert snapshot(app) == before
        last = move(client, as_alice, item, delta=MAX_STOCK - 2 * 10**9, reason="received")
        assert last.json["stock_after"] == MAX_STOCK
        assert ledger(app, item["id"]) == (MAX_STOCK, MAX_STOCK, 3)
        # One more, at the very edge: a 409, never the database's overflow (a 500).
        at_the_edge = snapshot(app)
        body = assert_error(
            move(client, as_alice, item, delta=1, reason="received"), 409, error="stock_overflow"
        )
        assert body["message"] == (
            f"Item {item['id']} has {MAX_STOCK} in stock; 1 more would exceed {MAX_STOCK}."
        )
        assert snapshot(app) == at_the_edge


class TestCounts:
    def test_a_count_records_the_difference(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        move(client, as_alice, item, delta=10, reason="received")
        response = move(client, as_alice, item, set=7, expected=10, reason="count")
        assert response.status_code == 201
        assert (response.json["delta"], response.json["stock_after"]) == (-3, 7)
        assert ledger(app, item["id"]) == (7, 7, 2)

    def test_counted_unchanged_is_a_movement_too(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        before = client.get(f"/items/{item['id']}")
        response = move(client, as_alice, item, set=0, expected=0, reason="count")
        assert (response.status_code, response.json["delta"]) == (201, 0)
        after = client.get(f"/items/{item['id']}")
        assert after.headers["ETag"] != before.headers["ETag"]
        assert ledger(app, item["id"]) == (0, 0, 1)

    def test_a_stale_expected_changes_nothing(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        move(client, as_alice, item, delta=10, reason="received")
        before = snapshot(app)
        body = assert_error(
            move(client, as_alice, item, set=4, expected=9, reason="count"),
            409,
            error="stock_changed",
        )
        assert "has 10 in stock" in body["message"]
        assert snapshot(app) == before

    def test_a_stock_given_at_creation_is_one_count(
        self, app: Flask, client: Client, alice: User, as_alice: dict[str, str], store: Any
    ) -> None:
        body = {"name": "Tea", "price": "2.00", "store_id": store["id"], "stock": 40}
        item = client.post("/items", json=body, headers=as_alice).json
        assert item["stock"] == 40
        movements = client.get(f"/items/{item['id']}/stock").json
        assert [(m["delta"], m["stock_after"], m["reason"], m["user_id"]) for m in movements] == [
            (40, 40, "count", alice.id)
        ]

    @pytest.mark.parametrize("method", ["put", "patch"])
    def test_stock_is_read_only_on_the_item(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any, method: Any
    ) -> None:
        before = snapshot(app)
        body = {"name": "Milk", "price": "1.50", "stock": 5}
        response = getattr(client, method)(f"/items/{item['id']}", json=body, headers=as_alice)
        assert "stock" in assert_error(response, 422)["errors"]["json"]
        assert snapshot(app) == before


BAD = [
    ({"delta": 0, "reason": "sale"}, "delta"),
    ({"delta": 1.5, "reason": "received"}, "delta"),
    ({"delta": 1.0, "reason": "received"}, "delta"),
    ({"delta": "1", "reason": "received"}, "delta"),
    ({"delta": True, "reason": "received"}, "delta"),
    ({"delta": 10**9 + 1, "reason": "received"}, "delta"),
    ({"delta": 1, "reason": "stolen"}, "reason"),
    ({"delta": 1}, "reason"),
    ({"delta": 1, "reason": "count"}, "reason"),
    ({"set": 3, "reason": "count"}, "expected"),
    ({"set": 3, "expected": 0, "reason": "sale"}, "reason"),
    ({"set": -1, "expected": 0, "reason": "count"}, "set"),
    ({"delta": 1, "expected": 0, "reason": "received"}, "expected"),
    ({"delta": 1, "set": 1, "expected": 0, "reason": "count"}, "set"),
    ({"reason": "sale"}, "delta"),
    ({"delta": 1, "reason": "received", "reference": "x" * 101}, "reference"),
    ({"delta": 1, "reason": "received", "stock_after": 9}, "stock_after"),
]


@pytest.mark.parametrize(("body", "field"), BAD)
def test_bad_input_changes_nothing(
    app: Flask, client: Client, as_alice: dict[str, str], item: Any, body: Any, field: Any
) -> None:
    before = snapshot(app)
    response = move(client, as_alice, item, **body)
    assert field in assert_error(response, 422)["errors"]["json"]
    assert snapshot(app) == before


class TestWho:
    def test_only_the_owner_or_an_admin(
        self,
        app: Flask,
        client: Client,
        auth: Callable[[User], dict[str, str]],
        bob: User,
        admin: User,
        item: Any,
    ) -> None:
        before = snapshot(app)
        assert_error(move(client, auth(bob), item, delta=1, reason="received"), 403)
        assert_error(move(client, {}, item, delta=1, reason="received"), 401)
        # 403 before the body is looked at.
        assert_error(move(client, auth(bob), item, delta=0), 403, error="forbidden")
        assert snapshot(app) == before
        response = move(client, auth(admin), item, delta=2, reason="return")
        assert (response.status_code, response.json["user_id"]) == (201, admin.id)

    def test_an_unknown_item_is_404(self, client: Client, as_alice: dict[str, str]) -> None:
        response = client.post(
            "/items/999/stock", json={"delta": 1, "reason": "sale"}, headers=as_alice
        )
        assert_error(response, 404)


class TestCatalog:
    @pytest.fixture
    def stocked(
        self, api: CatalogFactory, client: Client, as_alice: dict[str, str], store: Any
    ) -> Any:
        items = {}
        for name, stock in (("Apple", 5), ("Bread", 0), ("Cheese", 2), ("Dates", 0)):
            items[name] = api.item(as_alice, store, name=name, stock=stock)
        return items

    def test_in_stock(self, client: Client, store: Any, stocked: Any) -> None:
        def names(response: Response) -> list[str]:
            return [i["name"] for i in response.json]

        assert names(client.get("/items?in_stock=true")) == ["Apple", "Cheese"]
        assert names(client.get("/items?in_stock=false")) == ["Bread", "Dates"]
        url = f"/stores/{store['id']}/items?in_stock=true&sort=-stock"
        assert names(client.get(url)) == ["Apple", "Cheese"]
        assert_error(client.get("/items?in_stock=yes"), 422)

    def test_sort_by_stock_breaks_ties_by_id(self, client: Client, stocked: Any) -> None:
        assert [i["name"] for i in client.get("/items?sort=stock").json] == [
            "Bread",
            "Dates",
            "Cheese",
            "Apple",
        ]
        assert [i["name"] for i in client.get("/items?sort=-stock").json] == [
            "Apple",
            "Cheese",
            "Dates",
            "Bread",
        ]

    def test_deleting_an_item_deletes_its_ledger(
        self, app: Flask, client: Client, as_alice: dict[str, str], stocked: Any
    ) -> None:
        apple = stocked["Apple"]
        assert client.delete(f"/items/{apple['id']}", headers=as_alice).status_code == 204
        assert (
            query(app, select(StockMovement.id).where(StockMovement.item_id == apple["id"])) == []
        )
