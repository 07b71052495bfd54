"""GET /events: every committed change as one event, in the same transaction
(contract §10, §16), listed in commit order to the stores' owners."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from core.catalog import csv_import
from core.catalog.csv_import import import_items
from core.events import catalog, relay
from core.events.outbox import record, write_pending
from db import db
from helpers import CatalogFactory, Client, Response, assert_error, without_links
from models import Event, EventCounter, Item, Store, User

NEXT = re.compile(r'<([^>]+)>; rel="next"')


def events(client: Client, headers: dict[str, str], query: str = "") -> list[dict[str, Any]]:
    response = client.get(f"/events?page_size=100{query}", headers=headers)
    assert response.status_code == 200, response.json
    listed: list[dict[str, Any]] = response.json
    return listed


def every_event(client: Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every page of GET /events, followed by its next links to the first empty one."""
    listed: list[dict[str, Any]] = []
    url = "/events?page_size=100"
    while True:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.json
        if not response.json:
            return listed
        listed += response.json
        url = next_url(response)


def next_url(response: Response) -> str:
    """The URL of the page after ``response`` (its Link rel="next")."""
    link = NEXT.search(response.headers["Link"])
    assert link, response.headers["Link"]
    return link.group(1)


def types(client: Client, headers: dict[str, str], query: str = "") -> list[str]:
    return [e["type"] for e in events(client, headers, query)]


def event_rows(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Event)) or 0


def test_a_store_created_is_an_event_with_the_store_as_get_returns_it(
    client: Client, api: CatalogFactory, as_alice: dict[str, str], alice: User
) -> None:
    store = api.store(as_alice)
    [event] = events(client, as_alice)
    assert event["type"] == "store.created"
    assert re.fullmatch(r"evt_[0-9]{16}", event["id"])
    assert event["store_id"] == store["id"]
    assert event["actor"] == {"type": "user", "id": alice.id}
    assert event["request_id"]
    # As its GET returns it, but for its links (an event is the same whatever path made it).
    shown = client.get(f"/stores/{store['id']}").json
    assert shown.pop("links") == {
        "self": f"/stores/{store['id']}",
        "items": f"/stores/{store['id']}/items",
        "tags": f"/stores/{store['id']}/tags",
    }
    assert event["data"] == {"object": shown}
    assert client.get(f"/events/{event['id']}", headers=as_alice).json == event


def test_every_kind_of_change_writes_its_event(
    client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    store = api.store(as_alice)
    item = api.item(as_alice, store)
    tag = api.tag(as_alice, store)
    api.link(as_alice, item, tag)
    assert (
        client.patch(f"/items/{item['id']}", json={"price": 2}, headers=as_alice).status_code == 200
    )
    assert (
        client.patch(f"/tags/{tag['id']}", json={"name": "milk"}, headers=as_alice).status_code
        == 200
    )
    assert (
        client.delete(f"/items/{item['id']}/tags/{tag['id']}", headers=as_alice).status_code == 204
    )
    assert client.delete(f"/tags/{tag['id']}", headers=as_alice).status_code == 204
    assert client.delete(f"/items/{item['id']}", headers=as_alice).status_code == 204
    assert types(client, as_alice) == [
        "store.created",
        "item.created",
        "tag.created",
        "item.updated",  # linked
        "item.updated",  # price
        "tag.updated",
        "item.updated",  # unlinked
        "tag.deleted",
        "item.deleted",
    ]
    listed = events(client, as_alice)
    assert listed[3]["data"]["previous"] == {"tags": []}
    assert listed[4]["data"]["previous"] == {"price": 1.5}
    assert listed[4]["data"]["object"]["price"] == 2.0
    assert listed[5]["data"]["previous"] == {"name": "dairy"}
    assert listed[-1]["data"] == {"object": {"id": item["id"]}}
    ids = [e["id"] for e in listed]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_a_change_that_changes_nothing_writes_no_event(
    client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    store = api.store(as_alice)
    item = api.item(as_alice, store)
    before = types(client, as_alice)
    assert (
        client.patch(f"/items/{item['id']}", json={"price": "1.50"}, headers=as_alice).status_code
        == 200
    )
    assert types(client, as_alice) == before


def test_a_refused_change_writes_no_event(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    store = api.store(as_alice)
    item = api.item(as_alice, store)
    count = event_rows(app)
    # A unique violation found at commit (409), a stock rule (409): both roll back.
    assert (
        client.post(
            "/items", json={"name": "milk", "price": 1, "store_id": store["id"]}, headers=as_alice
        ).status_code
        == 409
    )
    response = client.post(
        f"/items/{item['id']}/stock", json={"delta": -1, "reason": "sale"}, headers=as_alice
    )
    assert response.status_code == 409
    assert event_rows(app) == count


def test_a_rolled_back_transaction_takes_its_event_with_it(
    app: Flask, api: CatalogFactory, client: Client, as_alice: dict[str, str]
) -> None:
    store = api.store(as_alice)
    count = event_rows(app)
    with app.test_request_context():
        record("store.updated", store_id=store["id"], obj={"id": store["id"]}, previous={})
        write_pending()
        assert event_rows_in_session() == count + 1
        db.session.rollback()
    assert event_rows(app) == count


def event_rows_in_session() -> int:
    return db.session.scalar(select(func.count()).select_from(Event)) or 0


def test_stock_movements_and_their_crossings(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    store = api.store(as_alice)
    item = api.item(as_alice, store, stock=5)
    with app.app_context():
        db.session.execute(update(Item).where(Item.id == item["id"]).values(low_stock_threshold=2))
        db.session.commit()

    def move(delta: int) -> Any:
        body = {"delta": delta, "reason": "sale" if delta < 0 else "received"}
        response = client.post(f"/items/{item['id']}/stock", json=body, headers=as_alice)
        assert response.status_code == 201, response.json
        return response.json

    first = move(-2)  # 5 -> 3: no crossing
    move(-1)  # 3 -> 2: low
    move(-2)  # 2 -> 0: out (already low)
    move(4)  # 0 -> 4: back in
    listed = events(
        client, as_alice, "&type=stock.moved&type=stock.low&type=stock.out&type=stock.back_in"
    )
    assert [e["type"] for e in listed] == [
        "stock.moved",  # the count it was created with
        "stock.moved",
        "stock.moved",
        "stock.low",
        "stock.moved",
        "stock.out",
        "stock.moved",
        "stock.back_in",
    ]
    assert listed[1]["data"]["object"] == first
    assert listed[5]["data"]["object"] == without_links(client.get(f"/items/{item['id']}").json) | {
        "stock": 0,
        "updated_at": listed[5]["data"]["object"]["updated_at"],
    }
    assert "item.updated" not in types(client, as_alice)


def test_an_item_created_with_stock_writes_its_first_movement(
    client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    store = api.store(as_alice)
    before = len(events(client, as_alice))
    item = api.item(as_alice, store, name="Jam", stock=7)
    api.item(as_alice, store, name="Salt")  # no stock sent: no movement, no event
    body = {"create": [{"name": "Tea", "price": 1, "stock": 3}, {"name": "Rice", "price": 2}]}
    batch = client.post(f"/stores/{store['id']}/items/batch", json=body, headers=as_alice)
    assert batch.status_code == 200, batch.json
    tea = batch.json["created"][0]
    listed = events(client, as_alice)[before:]
    assert [(e["type"], e["data"]["object"].get("name")) for e in listed] == [
        ("item.created", "Jam"),
        ("stock.moved", None),
        ("item.created", "Salt"),
        ("item.created", "Tea"),
        ("item.created", "Rice"),
        ("stock.moved", None),
    ]
    [jam_moved] = client.get(f"/items/{item['id']}/stock", headers=as_alice).json
    assert jam_moved["delta"] == 7 and jam_moved["reason"] == "count"
    assert listed[1]["data"]["object"] == jam_moved
    assert listed[1]["store_id"] == store["id"] and "previous" not in listed[1]["data"]
    [tea_moved] = client.get(f"/items/{tea['id']}/stock", headers=as_alice).json
    assert listed[5]["data"]["object"] == tea_moved and tea_moved["stock_after"] == 3
    # No crossing: a new item had no stock to cross from (its item.created says it).
    assert {e["type"] for e in listed} == {"item.created", "stock.moved"}


def test_a_store_deleted_is_one_event(
    client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    store = api.store(as_alice)
    for n in range(3):
        api.item(as_alice, store, name=f"thing {n}")
    api.tag(as_alice, store)
    before = len(events(client, as_alice))
    assert client.delete(f"/stores/{store['id']}", headers=as_alice).status_code == 204
    [deleted] = events(client, as_alice)[before:]
    assert deleted["type"] == "store.deleted"
    assert deleted["data"] == {"object": {"id": store["id"]}}


def test_a_batch_writes_one_event_per_change(
    client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    store = api.store(as_alice)
    kept = api.item(as_alice, store, name="kept")
    gone = api.item(as_alice, store, name="gone")
    before = len(events(client, as_alice))
    body = {
        "create": [{"name": "new", "price": 1}],
        "update": [{"id": kept["id"], "price": 9}],
        "delete": [gone["id"]],
    }
    response = client.post(f"/stores/{store['id']}/items/batch", json=body, headers=as_alice)
    assert response.status_code == 200, response.json
    listed = events(client, as_alice)[before:]
    assert sorted(e["type"] for e in listed) == ["item.created", "item.deleted", "item.updated"]
    updated = next(e for e in listed if e["type"] == "item.updated")
    assert updated["data"]["previous"] == {"price": 1.5}


@pytest.mark.parametrize("bulk", [1000, 2])
def test_an_imports_counts_write_their_movements_and_crossings(
    app: Flask,
    client: Client,
    api: CatalogFactory,
    as_alice: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    bulk: int,
) -> None:
    # Items read BULK_IDS per statement (PostgreSQL takes at most 65,535 parameters):
    # 2 makes an import of 5 rows take several.
    monkeypatch.setattr(csv_import, "BULK_IDS", bulk)
    monkeypatch.setattr(catalog, "BULK_IDS", bulk)

    store = api.store(as_alice)
    jam = api.item(as_alice, store, name="Jam", stock=4, low_stock_threshold=2)
    salt = api.item(as_alice, store, name="Salt")  # stock 0, never counted: no movement
    tea = api.item(as_alice, store, name="Tea", stock=0)
    before = len(events(client, as_alice))
    raw = b"name,price,stock\nJam,1.50,1\nSalt,1.50,\nTea,1.50,6\nRice,2.00,3\nOats,2.00,\n"
    with app.app_context():
        summary = import_items(db.session.get_one(Store, store["id"]), io.BytesIO(raw))
    assert (summary.created, summary.updated, summary.unchanged) == (2, 2, 1)
    listed = events(client, as_alice)[before:]
    moved = [e for e in listed if e["type"] == "stock.moved"]
    by_item = {e["data"]["object"]["item_id"]: e["data"]["object"] for e in moved}
    rice = next(
        e["data"]["object"]
        for e in listed
        if e["type"] == "item.created" and e["data"]["object"]["name"] == "Rice"
    )
    assert set(by_item) == {jam["id"], tea["id"], rice["id"]}  # Salt and Oats: no count
    assert (by_item[jam["id"]]["delta"], by_item[jam["id"]]["stock_after"]) == (-3, 1)
    assert (by_item[tea["id"]]["delta"], by_item[tea["id"]]["stock_after"]) == (6, 6)
    assert (by_item[rice["id"]]["delta"], by_item[rice["id"]]["stock_after"]) == (3, 3)
    for item_id, movement in by_item.items():
        [latest, *_] = client.get(f"/items/{item_id}/stock", headers=as_alice).json
        assert movement == latest
    crossings = [
        (e["type"], e["data"]["object"]["id"])
        for e in listed
        if e["type"] in ("stock.low", "stock.out", "stock.back_in")
    ]
    # Jam 4 -> 1 falls to its threshold; Tea 0 -> 6 is back in; a new item crosses nothing.
    assert sorted(crossings) == sorted([("stock.low", jam["id"]), ("stock.back_in", tea["id"])])
    low = next(e for e in listed if e["type"] == "stock.low")
    assert low["data"]["object"] == without_links(client.get(f"/items/{jam['id']}").json)
    assert salt["stock"] == 0


def test_events_are_the_owners_and_an_admins(
    client: Client,
    api: CatalogFactory,
    as_alice: dict[str, str],
    auth: Callable[[User], dict[str, str]],
    bob: User,
    admin: User,
) -> None:
    api.store(as_alice)
    as_bob = auth(bob)
    [event] = events(client, as_alice)
    assert events(client, as_bob) == []
    assert client.get(f"/events/{event['id']}", headers=as_bob).status_code == 404
    assert [e["id"] for e in events(client, auth(admin))] == [event["id"]]
    assert client.get("/events").status_code == 401
    for bad in ("evt_x", "42", "evt_0000000000009999"):
        assert client.get(f"/events/{bad}", headers=as_alice).status_code == 404


def test_filters(client: Client, api: CatalogFactory, as_alice: dict[str, str]) -> None:
    one = api.store(as_alice, name="One")
    two = api.store(as_alice, name="Two")
    api.item(as_alice, two)
    assert types(client, as_alice, f"&store_id={two['id']}") == ["store.created", "item.created"]
    assert types(client, as_alice, "&type=item.created") == ["item.created"]
    assert len(events(client, as_alice, f"&store_id={one['id']}")) == 1
    later = events(client, as_alice)[1]["created_at"]
    assert types(client, as_alice, "&created_after=" + later.replace("+", "%2B")) == [
        "item.created"
    ]
    eleven = "".join("&type=store.created" for _ in range(11))
    assert client.get(f"/events?{eleven[1:]}", headers=as_alice).status_code == 422
    assert client.get("/events?type=nope", headers=as_alice).status_code == 422
    assert client.get("/events?created_after=yesterday", headers=as_alice).status_code == 422
    for beyond in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00%2B14:00"):  # was a 500
        assert_error(client.get(f"/events?created_after={beyond}", headers=as_alice), 422)


def test_every_page_links_a_next_one_and_a_poller_sees_each_change_once(
    client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    response = client.get("/events?page_size=2", headers=as_alice)
    assert response.json == []
    cursor_url = next_url(response)
    seen = []
    for round_ in range(3):
        api.store(as_alice, name=f"Store {round_}")
        api.store(as_alice, name=f"Other {round_}")
        api.store(as_alice, name=f"Third {round_}")
        while True:
            response = client.get(cursor_url, headers=as_alice)
            assert response.status_code == 200
            cursor_url = next_url(response)
            if not response.json:
                break
            seen += [e["id"] for e in response.json]
    assert len(seen) == 9 and len(set(seen)) == 9 and seen == sorted(seen)


@pytest.mark.parametrize("days, left", [(30, 1), (0, 0)])
def test_the_purge_drops_events_past_retention(
    app: Flask, api: CatalogFactory, as_alice: dict[str, str], days: int, left: int
) -> None:
    api.store(as_alice)
    with app.app_context():
        db.session.execute(update(Event).values(created_at=func.now()))
        db.session.commit()
        assert relay.purge(batch=1, days=days) == 1 - left
        assert event_rows_in_session() == left


@pytest.mark.parametrize("dry_run", [False, True])
def test_an_import_writes_its_events_with_its_rows(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str], dry_run: bool
) -> None:
    store = api.store(as_alice)
    api.item(as_alice, store, name="Milk")
    api.item(as_alice, store, name="Salt", price="3.00")
    before = len(events(client, as_alice))
    raw = b"name,price,stock,tags\nMilk,2.00,,dairy\nSalt,3.00,,\nTea,1.00,5,\n"
    with app.app_context():
        summary = import_items(
            db.session.get_one(Store, store["id"]), io.BytesIO(raw), dry_run=dry_run
        )
    assert (summary.created, summary.updated, summary.unchanged) == (1, 1, 1)
    listed = events(client, as_alice)[before:]
    if dry_run:
        assert listed == []
        return
    kinds = ["tag.created", "item.updated", "item.created", "stock.moved"]
    assert [e["type"] for e in listed] == kinds
    dairy, milk, tea = listed[0]["data"], listed[1]["data"], listed[2]["data"]
    assert dairy["object"] == without_links(client.get(f"/tags/{dairy['object']['id']}").json)
    [tea_moved] = client.get(f"/items/{tea['object']['id']}/stock", headers=as_alice).json
    assert listed[3]["data"] == {"object": tea_moved} and tea_moved["reference"] == "import"
    assert milk["previous"] == {"price": 1.5, "tags": []}
    assert milk["object"]["tags"][0]["name"] == "dairy"
    assert milk["object"] == without_links(client.get(f"/items/{milk['object']['id']}").json)
    assert tea["object"]["stock"] == 5 and tea["object"]["name"] == "Tea"


def test_more_events_than_one_relay_batch_are_numbered_in_order_without_gaps(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    """One commit of more events than the relay numbers at a time (its BATCH): each
    gets the next position in id order, across the batches, and the counter ends at
    the last one; GET /events lists them all, in that order."""
    store = api.store(as_alice)
    count = relay.BATCH + 37
    raw = "name,price\n" + "".join(f"Item {n},1.00\n" for n in range(count))
    with app.app_context():
        summary = import_items(db.session.get_one(Store, store["id"]), io.BytesIO(raw.encode()))
        assert summary.created == count
        rows = db.session.execute(select(Event.id, Event.seq).order_by(Event.id)).all()
        last = db.session.scalar(select(EventCounter.last).where(EventCounter.id == 1))
    positions = [seq for _id, seq in rows]
    assert len(rows) == count + 1  # store.created, then one item.created per row
    assert positions[0] is not None
    assert positions == list(range(positions[0], positions[0] + count + 1))
    assert last == positions[-1]
    listed = every_event(client, as_alice)
    assert [e["id"] for e in listed] == [f"evt_{seq:016d}" for seq in positions]
    assert [e["type"] for e in listed] == ["store.created"] + ["item.created"] * count
