"""No N+1: the number of SQL statements per list does not grow with the page."""

from decimal import Decimal

import pytest

from db import db
from helpers import PG_URL, count_queries
from models import Item, Store, Tag

# On PostgreSQL a read first sets its snapshot (SET TRANSACTION ... REPEATABLE READ).
SNAPSHOT = 1 if PG_URL else 0


@pytest.fixture
def big_catalog(app, alice):
    """5 stores x 30 items, every item with 2 of its store's 3 tags."""
    with app.app_context():
        for s in range(5):
            store = Store(name=f"Store {s}", owner_id=alice.id)
            db.session.add(store)
            db.session.flush()
            tags = [Tag(name=f"tag{t}", store_id=store.id) for t in range(3)]
            db.session.add_all(tags)
            for i in range(30):
                item = Item(name=f"item {s}-{i}", price=Decimal("1.25"), store_id=store.id)
                item.tags = [tags[i % 3], tags[(i + 1) % 3]]
                db.session.add(item)
        db.session.commit()


@pytest.mark.parametrize(
    "path", ["/items", "/items?tag=tag1&sort=-price", "/stores/2/items?q=item"]
)
def test_a_page_of_items_costs_the_same_few_statements_at_any_size(app, client, big_catalog, path):
    counts = {}
    for page_size in (10, 100):
        separator = "&" if "?" in path else "?"
        with count_queries(app) as statements:
            response = client.get(f"{path}{separator}page_size={page_size}")
        assert response.status_code == 200
        assert all(len(item["tags"]) == 2 for item in response.json)
        counts[page_size] = len(statements)
    # count + items with their store (one JOIN) + the tags of the page (one IN),
    # and for /stores/{id}/items the store's existence.
    expected = SNAPSHOT + (4 if path.startswith("/stores") else 3)
    assert counts == {10: expected, 100: expected}


def test_a_single_item_costs_two_statements(app, client, big_catalog):
    with count_queries(app) as statements:
        assert client.get("/items/7").status_code == 200
    assert len(statements) == SNAPSHOT + 2


def test_other_lists_cost_two_statements(app, client, big_catalog):
    for path, extra in (("/stores?page_size=100", 0), ("/stores/1/tags?page_size=100", 1)):
        with count_queries(app) as statements:
            assert client.get(path).status_code == 200
        # count + page; a store's tags also check that the store exists.
        assert len(statements) == SNAPSHOT + 2 + extra, (path, statements)


def test_authentication_costs_at_most_two_statements(app, client, big_catalog, admin, auth):
    headers = auth(admin)
    with count_queries(app) as statements:
        assert client.get("/users?page_size=100", headers=headers).status_code == 200
    # The revocation check (unless it is in Redis) and the user, then count + page.
    revocation_check = 0 if app.config["REDIS_URL"] else 1
    assert len(statements) == SNAPSHOT + revocation_check + 1 + 2
