"""Catalog identity and sync (§13): SKUs, status, low_stock_threshold, metadata,
updated_after and sort=updated_at, and the import's upsert by SKU."""

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import Result
from flask import Flask
from flask_jwt_extended import create_access_token
from sqlalchemy import select, text
from werkzeug.test import TestResponse

from db import db
from helpers import CatalogFactory, Client, Response, assert_error, query, snapshot
from models import Item, StockMovement, Store, Tag, User


@pytest.fixture
def store(api: CatalogFactory, as_alice: dict[str, str]) -> Any:
    return api.store(as_alice)


def ids(response: Response) -> list[int]:
    assert response.status_code == 200, response.json
    return [row["id"] for row in response.json]


def next_link(response: Response) -> str | None:
    link = response.headers.get("Link", "")
    for part in link.split(","):
        if 'rel="next"' in part:
            return part.split(">")[0].split("<", 1)[1]
    return None


# --- the new fields --------------------------------------------------------------


def test_a_new_item_has_the_defaults(
    api: CatalogFactory, as_alice: dict[str, str], store: Any
) -> None:
    item = api.item(as_alice, store)
    assert item["sku"] is None
    assert item["status"] == "active"
    assert item["low_stock_threshold"] is None
    assert item["metadata"] == {}


def test_fields_are_stored_and_shown(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any
) -> None:
    item = api.item(
        as_alice,
        store,
        sku=" MILK-1L ",
        status="draft",
        low_stock_threshold=3,
        metadata={"erp": "A-1", "gone": None},
    )
    assert item["sku"] == "MILK-1L"  # trimmed
    assert (item["status"], item["low_stock_threshold"]) == ("draft", 3)
    assert item["metadata"] == {"erp": "A-1"}
    got = client.get(f"/items/{item['id']}", headers=as_alice).json
    assert got == item
    assert query(app, select(Item.sku, Item.status, Item.metadata_)) == [
        ("MILK-1L", "draft", {"erp": "A-1"})
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sku", "has space"),
        ("sku", "x" * 65),
        ("sku", "ümlaut"),
        ("sku", 12),
        ("status", "deleted"),
        ("low_stock_threshold", -1),
        ("low_stock_threshold", 1.5),
        ("metadata", {"k" * 41: "v"}),
        ("metadata", {"": "v"}),
        ("metadata", {"k": "v" * 501}),
        ("metadata", {"k": "v" * 500 + "\n"}),  # "$" would let a final newline by
        ("metadata", {"k" * 40 + "\n": "v"}),
        ("metadata", {"k": 1}),
        ("metadata", {f"k{i}": "v" for i in range(51)}),
        ("metadata", ["not", "an", "object"]),
    ],
)
def test_bad_values_are_422_and_change_nothing(
    app: Flask, client: Client, as_alice: dict[str, str], store: Any, field: str, value: Any
) -> None:
    before = snapshot(app)
    body = {"name": "Milk", "price": 1, "store_id": store["id"], field: value}
    response = client.post("/items", json=body, headers=as_alice)
    assert field in assert_error(response, 422)["errors"]["json"]
    assert snapshot(app) == before


# --- SKU --------------------------------------------------------------------------


def test_a_sku_is_unique_within_a_store_case_sensitively(
    client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any
) -> None:
    api.item(as_alice, store, name="Milk", sku="AB-1")
    body = {"name": "Other", "price": 1, "store_id": store["id"], "sku": "AB-1"}
    response = client.post("/items", json=body, headers=as_alice)
    assert "'AB-1'" in assert_error(response, 409)["message"]
    assert "SKU" in response.json["message"]
    api.item(as_alice, store, name="Lower", sku="ab-1")  # another SKU: case counts
    other = api.store(as_alice, "Other Shop")
    api.item(as_alice, other, name="Milk", sku="AB-1")  # another store


def test_changing_to_a_taken_sku_is_409(
    client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any
) -> None:
    api.item(as_alice, store, name="Milk", sku="A")
    bread = api.item(as_alice, store, name="Bread", sku="B")
    response = client.patch(f"/items/{bread['id']}", json={"sku": "A"}, headers=as_alice)
    assert "SKU 'A'" in assert_error(response, 409)["message"]
    # PUT replaces: a SKU left out is cleared (and may then be given to another).
    response = client.put(
        f"/items/{bread['id']}", json={"name": "Bread", "price": 2}, headers=as_alice
    )
    assert response.status_code == 200 and response.json["sku"] is None


def test_sku_filter_is_exact(
    client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any
) -> None:
    a = api.item(as_alice, store, name="A", sku="X-1")
    api.item(as_alice, store, name="B", sku="x-1")
    api.item(as_alice, store, name="C", sku="X-10")
    assert ids(client.get("/items?sku=X-1")) == [a["id"]]
    assert ids(client.get(f"/stores/{store['id']}/items?sku=X-1")) == [a["id"]]
    assert_error(client.get("/items?sku=has%20space"), 422)
    assert_error(client.get("/items?sku=X-1%0A"), 422)


@pytest.mark.postgres
def test_two_concurrent_creates_of_one_sku_one_wins(
    app: Flask, client: Client, alice: User, auth: Callable[[User], dict[str, str]], store: Any
) -> None:
    headers = auth(alice)
    answers: list[TestResponse]  # app.test_client(): werkzeug's own type
    barrier, answers = threading.Barrier(2), []

    def create(name: str) -> None:
        with app.test_client() as own:
            barrier.wait()
            body = {"name": name, "price": 1, "store_id": store["id"], "sku": "RACE"}
            answers.append(own.post("/items", json=body, headers=headers))

    threads = [threading.Thread(target=create, args=(n,)) for n in ("One", "Two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [201, 409]
    loser = next(a for a in answers if a.status_code == 409)
    assert "SKU 'RACE'" in assert_error(loser, 409)["message"]
    assert query(app, select(Item.sku)) == [("RACE",)]


def test_a_batch_judges_skus_on_its_final_state(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any
) -> None:
    a = api.item(as_alice, store, name="A", sku="S1")
    b = api.item(as_alice, store, name="B", sku="S2")
    url = f"/stores/{store['id']}/items/batch"
    swap = {"update": [{"id": a["id"], "sku": "S2"}, {"id": b["id"], "sku": "S1"}]}
    response = client.post(url, json=swap, headers=as_alice)
    assert response.status_code == 200, response.json
    assert query(app, select(Item.name, Item.sku).order_by(Item.name)) == [
        ("A", "S2"),
        ("B", "S1"),
    ]
    before = snapshot(app)
    taken = {"create": [{"name": "C", "price": 1, "sku": "S1"}]}
    response = client.post(url, json=taken, headers=as_alice)
    assert "SKU 'S1'" in assert_error(response, 409)["message"]
    twice = {
        "create": [{"name": "C", "price": 1, "sku": "N"}, {"name": "D", "price": 1, "sku": "N"}]
    }
    assert "'N'" in assert_error(client.post(url, json=twice, headers=as_alice), 409)["message"]
    assert snapshot(app) == before
    # Freed by a delete in the same batch: allowed.
    fresh = client.post(
        url,
        json={"delete": [a["id"]], "create": [{"name": "C", "price": 1, "sku": "S2"}]},
        headers=as_alice,
    )
    assert fresh.status_code == 200, fresh.json
    assert fresh.json["created"][0]["sku"] == "S2"


# --- status -----------------------------------------------------------------------


@pytest.fixture
def statuses(api: CatalogFactory, as_alice: dict[str, str], store: Any) -> dict[str, Any]:
    return {
        s: api.item(as_alice, store, name=s.title(), status=s)
        for s in ("active", "draft", "archived")
    }


def test_lists_show_active_items_to_everyone(
    client: Client,
    auth: Callable[[User], dict[str, str]],
    bob: User,
    as_alice: dict[str, str],
    store: Any,
    statuses: dict[str, Any],
) -> None:
    active = [statuses["active"]["id"]]
    headers: dict[str, str]
    for headers in ({}, auth(bob), as_alice):
        assert ids(client.get("/items", headers=headers)) == active
        assert ids(client.get(f"/stores/{store['id']}/items", headers=headers)) == active
        assert ids(client.get("/items?status=active", headers=headers)) == active
    response = client.get("/items")
    assert response.headers["Cache-Control"] == "public, no-cache"


def test_the_owner_and_admins_list_other_statuses(
    client: Client,
    auth: Callable[[User], dict[str, str]],
    admin: User,
    as_alice: dict[str, str],
    store: Any,
    statuses: dict[str, Any],
) -> None:
    url = f"/stores/{store['id']}/items"
    for headers in (as_alice, auth(admin)):
        assert ids(client.get(f"{url}?status=draft", headers=headers)) == [statuses["draft"]["id"]]
        response = client.get("/items?status=archived", headers=headers)
        assert ids(response) == [statuses["archived"]["id"]]
        assert response.headers["Cache-Control"] == "private, no-cache"
        assert "Authorization" in response.headers["Vary"]
        assert ids(client.get(f"{url}?status=all", headers=headers)) == sorted(
            item["id"] for item in statuses.values()
        )


def test_others_may_not_list_other_statuses(
    client: Client,
    api: CatalogFactory,
    auth: Callable[[User], dict[str, str]],
    bob: User,
    as_alice: dict[str, str],
    store: Any,
    statuses: dict[str, Any],
) -> None:
    url = f"/stores/{store['id']}/items"
    for status in ("draft", "archived", "all"):
        assert_error(client.get(f"{url}?status={status}"), 403, error="forbidden")
        assert_error(
            client.get(f"{url}?status={status}", headers=auth(bob)), 403, error="forbidden"
        )
    assert_error(client.get("/items?status=draft"), 403, error="forbidden")
    # Bob's own drafts only, across stores: none while he has no store.
    assert ids(client.get("/items?status=all", headers=auth(bob))) == []
    mine = api.store(auth(bob), "Bob's")
    draft = api.item(auth(bob), mine, name="Bob draft", status="draft")
    assert ids(client.get("/items?status=all", headers=auth(bob))) == [draft["id"]]


def test_a_single_item_not_active_is_404_to_others(
    client: Client,
    auth: Callable[[User], dict[str, str]],
    bob: User,
    admin: User,
    as_alice: dict[str, str],
    statuses: dict[str, Any],
) -> None:
    for status in ("draft", "archived"):
        url = f"/items/{statuses[status]['id']}"
        assert_error(client.get(url), 404)
        assert_error(client.get(url, headers=auth(bob)), 404)
        assert_error(client.get(f"{url}/stock"), 404)
        assert_error(client.get(f"{url}/stock", headers=auth(bob)), 404)
        for headers in (as_alice, auth(admin)):
            response = client.get(url, headers=headers)
            assert response.status_code == 200 and response.json["status"] == status
            assert response.headers["Cache-Control"] == "private, no-cache"
            assert client.get(f"{url}/stock", headers=headers).status_code == 200
    assert client.get(f"/items/{statuses['active']['id']}").status_code == 200


def test_a_write_to_a_hidden_item_is_404_to_others_as_a_read(
    app: Flask,
    client: Client,
    api: CatalogFactory,
    auth: Callable[[User], dict[str, str]],
    bob: User,
    as_alice: dict[str, str],
    store: Any,
    statuses: dict[str, Any],
) -> None:
    """A 403 where a read says 404 told anyone signed in which ids are hidden items."""
    tag = api.tag(as_alice, store)
    before = snapshot(app)
    for status in ("draft", "archived"):
        item = statuses[status]["id"]
        writes = [
            ("PATCH", f"/items/{item}", {"price": 1}),
            ("PUT", f"/items/{item}", {"name": "x", "price": 1}),
            ("DELETE", f"/items/{item}", None),
            ("POST", f"/items/{item}/stock", {"set": 1, "expected": 0, "reason": "count"}),
            ("POST", f"/items/{item}/tags/{tag['id']}", None),
            ("DELETE", f"/items/{item}/tags/{tag['id']}", None),
        ]
        for method, path, body in writes:
            response = client.open(path, method=method, json=body, headers=auth(bob))
            assert_error(response, 404)
            assert response.json["message"] == f"Item {item} not found."
    # An active item of another's store is theirs to refuse: 403.
    active = f"/items/{statuses['active']['id']}"
    assert_error(client.patch(active, json={"price": 1}, headers=auth(bob)), 403)
    assert snapshot(app) == before


def test_a_bad_token_does_not_tell_a_hidden_item_from_none(
    app: Flask, client: Client, alice: User, statuses: dict[str, Any]
) -> None:
    """A public read ignores a bad token; a hidden item answered 401 to one, where an
    item that does not exist answers 404: anyone could tell which ids are drafts."""
    with app.app_context():
        expired = create_access_token(
            str(alice.id), expires_delta=timedelta(seconds=-1), additional_claims={"sid": "s"}
        )
    for headers in ({"Authorization": "Bearer junk"}, {"Authorization": f"Bearer {expired}"}):
        for path in ("", "/stock"):
            missing = assert_error(client.get(f"/items/999999{path}", headers=headers), 404)
            hidden = client.get(f"/items/{statuses['draft']['id']}{path}", headers=headers)
            assert assert_error(hidden, 404)["code"] == missing["code"]
        active = client.get(f"/items/{statuses['active']['id']}", headers=headers)
        assert active.status_code == 200


def test_archived_stock_moves_only_by_a_count(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any
) -> None:
    item = api.item(as_alice, store, stock=5)
    url = f"/items/{item['id']}"
    assert client.patch(url, json={"status": "archived"}, headers=as_alice).status_code == 200
    before = snapshot(app)
    response = client.post(f"{url}/stock", json={"delta": -1, "reason": "sale"}, headers=as_alice)
    assert "archived" in assert_error(response, 409, error="item_archived")["message"]
    assert snapshot(app) == before
    count = {"set": 2, "expected": 5, "reason": "count"}
    response = client.post(f"{url}/stock", json=count, headers=as_alice)
    assert response.status_code == 201, response.json
    assert query(app, select(Item.stock)) == [(2,)]
    assert len(query(app, select(StockMovement.id))) == 2  # the ledger is kept


# --- metadata -----------------------------------------------------------------------


def test_patch_merges_metadata_and_null_removes_a_key(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any
) -> None:
    item = api.item(as_alice, store, metadata={"a": "1", "b": "2"})
    url = f"/items/{item['id']}"
    response = client.patch(url, json={"metadata": {"b": None, "c": "3"}}, headers=as_alice)
    assert response.json["metadata"] == {"a": "1", "c": "3"}
    assert response.json["updated_at"] > item["updated_at"]
    full = {f"k{i}": "v" for i in range(48)}
    assert client.patch(url, json={"metadata": full}, headers=as_alice).status_code == 200
    before = snapshot(app)
    response = client.patch(url, json={"metadata": {"one": "more"}}, headers=as_alice)
    assert "50" in assert_error(response, 422)["errors"]["json"]["metadata"][0]
    assert snapshot(app) == before
    # PUT replaces; left out, it is {}.
    response = client.put(
        url, json={"name": "Milk", "price": 1, "metadata": {"x": "y"}}, headers=as_alice
    )
    assert response.json["metadata"] == {"x": "y"}
    response = client.put(url, json={"name": "Milk", "price": 1}, headers=as_alice)
    assert response.json["metadata"] == {}


def test_stores_have_metadata_too(
    client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    store = api.store(as_alice, metadata={"crm": "42"})
    assert store["metadata"] == {"crm": "42"}
    url = f"/stores/{store['id']}"
    response = client.patch(url, json={"metadata": {"crm": None, "x": "1"}}, headers=as_alice)
    assert response.json["metadata"] == {"x": "1"}
    response = client.put(url, json={"name": "Renamed"}, headers=as_alice)
    assert response.json["metadata"] == {}
    assert_error(client.patch(url, json={"metadata": {"k": 5}}, headers=as_alice), 422)


# --- updated_at and updated_after -------------------------------------------------


def test_updated_at_changes_with_stock_tags_and_metadata(
    client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any
) -> None:
    item = api.item(as_alice, store)
    url = f"/items/{item['id']}"
    seen = [item["updated_at"]]
    client.post(f"{url}/stock", json={"delta": 2, "reason": "received"}, headers=as_alice)
    seen.append(client.get(url).json["updated_at"])
    api.link(as_alice, item, api.tag(as_alice, store))
    seen.append(client.get(url).json["updated_at"])
    client.patch(url, json={"metadata": {"a": "b"}}, headers=as_alice)
    seen.append(client.get(url).json["updated_at"])
    assert seen == sorted(set(seen)), seen


@pytest.mark.postgres
def test_plain_sql_changes_touch_updated_at(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any
) -> None:
    item = api.item(as_alice, store)
    tag = api.tag(as_alice, store)
    with app.app_context():
        db.session.execute(text("UPDATE items SET price = 9 WHERE id = :id"), {"id": item["id"]})
        db.session.commit()
    priced = client.get(f"/items/{item['id']}").json["updated_at"]
    assert priced > item["updated_at"]
    with app.app_context():
        db.session.execute(
            text("INSERT INTO item_tags (item_id, tag_id) VALUES (:i, :t)"),
            {"i": item["id"], "t": tag["id"]},
        )
        db.session.commit()
    assert client.get(f"/items/{item['id']}").json["updated_at"] > priced


def test_updated_after_is_strictly_after(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any
) -> None:
    items = [api.item(as_alice, store, name=n) for n in ("A", "B", "C")]
    cut = items[1]["updated_at"]
    response = client.get("/items", query_string={"updated_after": cut, "sort": "updated_at"})
    assert ids(response) == [items[2]["id"]]
    zulu = datetime.fromisoformat(cut).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert ids(client.get(f"/items?updated_after={zulu}")) == [items[2]["id"]]
    shifted = datetime.fromisoformat(cut).astimezone(timezone_plus_two()).isoformat()
    response = client.get("/items", query_string={"updated_after": shifted})
    assert ids(response) == [items[2]["id"]]
    earlier = (datetime.fromisoformat(cut) - timedelta(microseconds=1)).isoformat()
    response = client.get("/items", query_string={"updated_after": earlier, "sort": "-updated_at"})
    assert ids(response) == [items[2]["id"], items[1]["id"]]
    # Without a zone the instant is unknown: 422.
    assert_error(client.get("/items?updated_after=2026-01-01T00:00:00"), 422)
    too_early = {"updated_after": "0001-01-01T00:00:00+05:00"}
    assert_error(client.get("/items", query_string=too_early), 422)
    # Stores and tags too.
    tag = api.tag(as_alice, store)
    response = client.get("/stores", query_string={"updated_after": cut, "sort": "-updated_at"})
    assert ids(response) == []
    response = client.get(
        f"/stores/{store['id']}/tags", query_string={"sort": "updated_at", "updated_after": cut}
    )
    assert ids(response) == [tag["id"]]
    assert set(tag) >= {"created_at", "updated_at"}


def timezone_plus_two() -> timezone:
    return timezone(timedelta(hours=2))


def test_a_cursor_walk_by_updated_at_misses_nothing_changed_meanwhile(
    client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any
) -> None:
    items = [api.item(as_alice, store, name=f"I{i}") for i in range(6)]
    url: str | None
    seen: list[int]
    url, seen, changed = "/items?sort=updated_at&page_size=2", [], False
    while url:
        response = client.get(url)
        seen += ids(response)
        if not changed:
            # A concurrent change to one item already seen and one not yet seen:
            # both move to the end of the walk, and the walk reaches them there.
            for item in (items[0], items[4]):
                patch = {"description": "changed"}
                response_ = client.patch(f"/items/{item['id']}", json=patch, headers=as_alice)
                assert response_.status_code == 200
            changed = True
        url = next_link(response)
    assert seen[:2] == [items[0]["id"], items[1]["id"]]
    assert set(seen) == {item["id"] for item in items}
    assert seen[-2:] == [items[0]["id"], items[4]["id"]]


@pytest.mark.postgres
def test_a_sync_never_misses_a_change_that_commits_late(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any
) -> None:
    """A change stamped before a later one but committed after it: a poller that
    resumes from the last updated_at it saw still gets it. (The list used to show the
    later change at once; the poller went on from its time and never saw the first.)"""
    late, quick = api.item(as_alice, store, name="Late"), api.item(as_alice, store, name="Quick")
    last = quick["updated_at"]
    seen: list[int] = []

    def poll() -> None:
        nonlocal last
        url: str | None = f"/items?sort=updated_at&updated_after={quote(last)}"
        while url:
            response = client.get(url)
            seen.extend(ids(response))
            last = response.json[-1]["updated_at"] if response.json else last
            url = next_link(response)

    with app.app_context():
        engine = db.engine
    with engine.connect() as other:  # a change under way: stamped now, not committed
        other.execute(text("UPDATE items SET description = 'late' WHERE id = :id"), late)
        response = client.patch(f"/items/{quick['id']}", json={"price": 3}, headers=as_alice)
        assert response.status_code == 200
        poll()
        assert seen == []  # the quick change waits for the one under way
        other.commit()
    poll()
    assert seen == [late["id"], quick["id"]]
    # A list in another order is not held back.
    with engine.connect() as other:
        other.execute(text("UPDATE items SET description = 'again' WHERE id = :id"), late)
        assert ids(client.get("/items?sort=-updated_at"))[0] == quick["id"]
        other.rollback()


def test_tags_have_timestamps_and_a_rename_changes_updated_at(
    client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any
) -> None:
    tag = api.tag(as_alice, store)
    response = client.patch(f"/tags/{tag['id']}", json={"name": "milk"}, headers=as_alice)
    assert response.json["updated_at"] > tag["updated_at"]
    assert response.json["created_at"] == tag["created_at"]


# --- import ---------------------------------------------------------------------


@pytest.fixture
def run(app: Flask, tmp_path: Path) -> Callable[..., Result]:
    def invoke(store_id: int, content: str, *options: str) -> Result:
        path = tmp_path / "items.csv"
        path.write_text(content)
        return app.test_cli_runner().invoke(
            args=["import-items", str(store_id), str(path), *options]
        )

    return invoke


def test_an_import_row_with_a_sku_updates_that_item(
    app: Flask,
    run: Callable[..., Result],
    api: CatalogFactory,
    as_alice: dict[str, str],
    store: Any,
) -> None:
    milk = api.item(as_alice, store, name="Milk", sku="M-1", price="1.00")
    bread = api.item(as_alice, store, name="Bread", price="2.00")
    content = (
        "name,price,sku,status,low_stock_threshold\r\n"
        "Whole milk,1.20,M-1,,5\r\n"  # by SKU: renamed
        "Bread,2.50,B-1,draft,\r\n"  # by name: gets the SKU
        "Tea,3.00,T-1,archived,0\r\n"  # new
    )
    result = run(store["id"], content)
    assert result.exit_code == 0, result.output
    assert "1 created, 2 updated, 0 unchanged, 0 invalid" in result.output
    rows = query(
        app,
        select(Item.id, Item.name, Item.sku, Item.status, Item.low_stock_threshold).order_by(
            Item.id
        ),
    )
    assert rows[:2] == [
        (milk["id"], "Whole milk", "M-1", "active", 5),
        (bread["id"], "Bread", "B-1", "draft", None),
    ]
    assert rows[2][1:] == ("Tea", "T-1", "archived", 0)
    again = run(store["id"], content)
    assert "0 created, 0 updated, 3 unchanged" in again.output


def test_import_errors_for_skus_are_by_line_and_nothing_is_written(
    app: Flask,
    run: Callable[..., Result],
    api: CatalogFactory,
    as_alice: dict[str, str],
    store: Any,
) -> None:
    api.item(as_alice, store, name="Milk", sku="M-1")
    api.item(as_alice, store, name="Bread")
    before = snapshot(app)
    content = (
        "name,price,sku,status\r\n"
        "A,1,S,\r\n"
        "B,1,S,\r\n"  # the same SKU twice
        "C,1,bad sku,\r\n"
        "D,1,,gone\r\n"
        "Bread,1,M-1,\r\n"  # M-1 is Milk's: Bread's name would then be held twice
    )
    result = run(store["id"], content)
    assert result.exit_code == 1
    assert "line 3, column sku: 'S' is on line 2 already." in result.output
    assert "line 4, column sku:" in result.output
    assert "line 5, column status:" in result.output
    assert "line 6, column name:" in result.output
    assert snapshot(app) == before


# Issue 19: rows that rename items by SKU, judged as if the file were one chunk of
# the SQLite importer (its chunks: 1 row, 2 rows, the default) and as PostgreSQL's
# COPY import judges the whole file: the same outcome, never an IntegrityError.
RENAMES = {
    "two items swap names": (
        "B,1,x\nP,1,\nA,1,y\n",
        {"created": 1, "updated": 2, "invalid": 0},
        [],
        {"x": "B", "y": "A", "k": "K"},
    ),
    "names move round": (
        "C,1,x\nP,1,\nA,1,y\n",
        {"created": 1, "updated": 2, "invalid": 0},
        [],
        {"x": "C", "y": "A", "k": "K"},
    ),
    "a name nobody frees": (
        "B,1,x\nP,1,\nQ,1,\n",
        {"invalid": 1},
        [(2, "'B' is the name of item {y}, which no valid row renames.")],
        None,
    ),
    "an item renamed, then its old name": (
        "Z,1,x\nP,1,\nA,1,\n",
        {"invalid": 1},
        [(4, "Item {x} is updated by line 2 already.")],
        None,
    ),
    "a SKU let go of, then taken": (
        "A,1,z\nP,1,\nN,1,x\n",
        {"invalid": 1},
        [(4, "Item {x} is updated by line 2 already.")],
        None,
    ),
    "a rename that waits, then its item again": (
        "B,1,x\nP,1,\nA,1,w\n",
        {"invalid": 2},
        [
            (2, "'B' is the name of item {y}, which no valid row renames."),
            (4, "Item {x} is updated by line 2 already."),
        ],
        None,
    ),
    # K keeps its name: line 4 cannot rename B onto it, so B keeps its name too, and
    # line 2 cannot take that (reported by PostgreSQL's loop only under skip_invalid;
    # a crash of SQLite's importer before).
    "a chain held up at its end": (
        "B,1,x\nP,1,\nK,1,y\n",
        {"invalid": 2},
        [
            (2, "'B' is the name of item {y}, which no valid row renames."),
            (4, "'K' is the name of item {k}, which no valid row renames."),
        ],
        None,
    ),
    "a chain whose end moves on": (
        "B,1,x\nP,1,\nK,1,y\nL,1,k\n",
        {"created": 1, "updated": 3, "invalid": 0},
        [],
        {"x": "B", "y": "K", "k": "L"},
    ),
}


@pytest.mark.parametrize("chunk", [1, 2, 1000])
@pytest.mark.parametrize("case", list(RENAMES))
def test_renames_across_chunks_are_judged_on_the_whole_file(
    app: Flask,
    api: CatalogFactory,
    as_alice: dict[str, str],
    store: Any,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    chunk: int,
) -> None:
    import io

    from core.catalog import csv_import

    monkeypatch.setattr(csv_import, "CHUNK", chunk)
    content, counts, errors, final = RENAMES[case]
    ids = {
        "x": api.item(as_alice, store, name="A", sku="x")["id"],
        "y": api.item(as_alice, store, name="B", sku="y" if "y" in content else None)["id"],
        "k": api.item(as_alice, store, name="K", sku="k")["id"],
    }
    before = snapshot(app)
    with app.app_context():
        summary = csv_import.import_items(
            db.session.get_one(Store, store["id"]),
            io.BytesIO(b"name,price,sku\n" + content.encode()),
        )
    got = summary.as_dict()
    assert {key: got[key] for key in counts} == counts
    assert [(e["line"], e["message"]) for e in got["errors"]] == [
        (line, message.format(**ids)) for line, message in errors
    ]
    if final is None:
        assert snapshot(app) == before  # an invalid row: nothing written
        return
    names = dict(query(app, select(Item.sku, Item.name).where(Item.sku.is_not(None))))
    assert names == final


def test_an_export_with_the_new_columns_imports_back_unchanged(
    app: Flask,
    client: Client,
    run: Callable[..., Result],
    api: CatalogFactory,
    as_alice: dict[str, str],
    store: Any,
) -> None:
    api.item(as_alice, store, name="Milk", sku="=M", status="draft", low_stock_threshold=2)
    exported = client.get(f"/stores/{store['id']}/items.csv?status=all", headers=as_alice)
    assert exported.status_code == 200
    text_ = exported.get_data(as_text=True)
    assert text_.splitlines()[0].endswith(",sku,status,low_stock_threshold")
    assert ",'=M,draft,2" in text_
    result = run(store["id"], text_)
    assert "0 created, 0 updated, 1 unchanged, 0 invalid" in result.output, result.output


def test_seeded_items_have_the_new_fields(app: Flask, admin: User) -> None:
    result = app.test_cli_runner().invoke(
        args=["seed", "--stores", "1", "--items", "40", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    rows = query(app, select(Item.sku, Item.status, Item.low_stock_threshold, Item.metadata_))
    assert all(sku for sku, *_ in rows)
    assert {status for _, status, *_ in rows} >= {"active"}
    assert any(threshold is not None for *_, threshold, _ in rows)
    assert query(app, select(Store.metadata_))[0][0]
    assert query(app, select(Tag.created_at))


@pytest.mark.postgres
def test_the_copy_import_takes_any_number_of_names_and_tags(
    app: Flask,
    run: Callable[..., Result],
    api: CatalogFactory,
    as_alice: dict[str, str],
    store: Any,
) -> None:
    """No statement grows with the file: 3,000 rows with 3,000 distinct tags (one
    statement per name once failed: "target lists can have at most 1664 entries")."""
    lines = [f"Item {i},1.00,{i % 7},t{i}|shared" for i in range(3000)]
    result = run(store["id"], "name,price,stock,tags\r\n" + "\r\n".join(lines) + "\r\n")
    assert result.exit_code == 0, result.output
    assert "3000 created, 0 updated, 0 unchanged, 0 invalid" in result.output
    with app.app_context():
        counts = db.session.execute(
            text(
                "SELECT (SELECT count(*) FROM tags), (SELECT count(*) FROM item_tags), "
                "(SELECT count(*) FROM stock_movements), (SELECT sum(stock) FROM items)"
            )
        ).one()
    assert tuple(counts) == (3001, 6000, 3000, sum(i % 7 for i in range(3000)))
    # New tags got their ids in the order the file names them.
    first = query(app, select(Tag.name).order_by(Tag.id).limit(3))
    assert first == [("t0",), ("shared",), ("t1",)]


@pytest.mark.parametrize(
    "cells",
    [
        {"name": "Milk", "price": "1.5", "tags": "a|b", "stock": "3", "sku": "X"},
        {"name": " 'Milk ", "price": "1.50", "tags": "  ", "stock": "\ufeff5"},
        {"name": "'=Sum", "price": "0", "tags": "a||b", "sku": "has space"},
        {"name": "Ok", "price": "1.555", "status": "Draft", "low_stock_threshold": "-1"},
        {"name": "Ok", "price": "+1", "description": "  two\nlines ", "sku": " S-1 "},
        {"name": "\u200bHidden", "price": "1", "stock": "1000000001"},
        {"name": "Ok", "price": "9999999999.99", "low_stock_threshold": "2147483648"},
    ],
)
def test_the_copy_imports_fast_check_agrees_with_the_row_schema(cells: dict[str, str]) -> None:
    """What the COPY path's fast check accepts, RowSchema accepts with the same values."""
    import marshmallow as ma

    from core.catalog.csv_copy import Positions, _checked, _fast
    from core.catalog.csv_import import RowSchema, _cells

    columns = ("description", "stock", "tags", "sku", "status", "low_stock_threshold")
    row = {name: cells.get(name, "") for name in ("price", *columns, "name")}
    fast = _fast(list(row.values()), Positions.of(list(row)))
    loaded: tuple[Any, ...] | None
    try:
        loaded = _checked(RowSchema().load(_cells(row)))
    except ma.ValidationError:
        loaded = None
    if fast is not None:
        assert loaded is not None
        normalized = [str(v) if isinstance(v, int) else v for v in loaded]
        assert list(fast[2:]) == normalized[2:] and fast[0] == loaded[0]
