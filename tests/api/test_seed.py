"""`flask seed`: fake stores, items, tags and stock that keep every rule of the API."""

from flask import Flask
from sqlalchemy import func, select

from helpers import Client, query
from models import Item, StockMovement, Store, Tag, User, item_tags


def test_seeds_a_consistent_catalog(app: Flask, client: Client, admin: User) -> None:
    result = app.test_cli_runner().invoke(
        args=["seed", "--stores", "2", "--items", "40", "--seed", "7"]
    )
    assert result.exit_code == 0, result.output
    assert "Seeded 2 stores, 80 items and 12 tags (owner 'root')." in result.output
    assert query(app, select(Store.owner_id).distinct()) == [(admin.id,)]
    assert query(app, select(func.count()).select_from(Item)) == [(80,)]
    # The ledger holds: each item's stock is the sum of its movements.
    sums = select(StockMovement.item_id, func.sum(StockMovement.delta)).group_by(
        StockMovement.item_id
    )
    ledger = dict(query(app, sums))
    assert all(
        ledger.get(item_id, 0) == stock
        for item_id, stock in query(app, select(Item.id, Item.stock))
    )
    assert any(stock > 0 for (stock,) in query(app, select(Item.stock)))
    # Links stay within a store, and the API serves what was written.
    mixed = (
        select(func.count())
        .select_from(item_tags)
        .join(Item, Item.id == item_tags.c.item_id)
        .join(Tag, Tag.id == item_tags.c.tag_id)
        .where(Item.store_id != Tag.store_id)
    )
    assert query(app, mixed) == [(0,)]
    assert client.get("/items?page_size=100").status_code == 200


def test_needs_an_owner(app: Flask, alice: User) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["seed"])
    assert result.exit_code == 1 and "flask create-admin" in result.output
    result = runner.invoke(args=["seed", "--owner", "nobody"])
    assert result.exit_code == 1 and "No user 'nobody'" in result.output
    result = runner.invoke(args=["seed", "--owner", "alice", "--stores", "1", "--items", "3"])
    assert result.exit_code == 0 and "Seeded 1 stores, 3 items" in result.output
