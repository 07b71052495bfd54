"""`flask seed`: fake stores, items, tags and stock that keep every rule of the API."""

from typing import cast

import pytest
from flask import Flask
from sqlalchemy import func, select, text

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
    # The public list shows the active items (§13); the seed makes some of other statuses.
    statuses = dict(query(app, select(Item.status, func.count()).group_by(Item.status)))
    assert "active" in statuses and sum(statuses.values()) == 80
    listing = client.get("/items?page_size=100")
    assert listing.status_code == 200
    assert listing.headers["X-Total-Count"] == str(statuses["active"])
    active = select(Item.id, Item.name, Item.stock).where(Item.status == "active")
    by_id = {row[0]: row for row in query(app, active)}
    assert sorted(item["id"] for item in listing.json) == sorted(by_id)
    assert all((i["id"], i["name"], i["stock"]) == by_id[i["id"]] for i in listing.json)


@pytest.mark.postgres
def test_a_seed_leaves_fresh_statistics(app: Flask, admin: User) -> None:
    """17.12: the planner's row estimate (and so an estimated count) is right at once."""
    result = app.test_cli_runner().invoke(args=["seed", "--stores", "1", "--items", "60"])
    assert result.exit_code == 0, result.output
    assert reltuples(app, "items") == 60


def reltuples(app: Flask, table: str) -> float:
    return cast(
        float, query(app, text(f"SELECT reltuples FROM pg_class WHERE relname = '{table}'"))[0][0]
    )


def test_needs_an_owner(app: Flask, alice: User) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["seed"])
    assert result.exit_code == 1 and "flask create-admin" in result.output
    result = runner.invoke(args=["seed", "--owner", "nobody"])
    assert result.exit_code == 1 and "No user 'nobody'" in result.output
    # In any case, as login matches usernames.
    result = runner.invoke(args=["seed", "--owner", "ALICE", "--stores", "1", "--items", "3"])
    assert result.exit_code == 0 and "Seeded 1 stores, 3 items" in result.output
    assert "(owner 'alice')" in result.output


def test_a_production_database_is_seeded_only_when_asked(app: Flask, admin: User) -> None:
    """Demo data writes no events or audit entries: not into production by mistake."""
    runner = app.test_cli_runner()
    app.config["APP_ENV"] = "production"
    refused = runner.invoke(args=["seed", "--stores", "1", "--items", "3"])
    assert refused.exit_code == 1 and "--in-production" in refused.output
    assert query(app, select(func.count()).select_from(Store)) == [(0,)]
    asked = ["seed", "--stores", "1", "--items", "3", "--in-production"]
    result = runner.invoke(args=asked)
    assert result.exit_code == 0 and "Seeded 1 stores, 3 items" in result.output
