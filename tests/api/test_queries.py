"""No N+1: the number of SQL statements per list does not grow with the page."""

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask

from core.lists import page as pagination
from db import db
from helpers import PG_URL, Client, count_queries
from models import Item, Store, Tag, User

# On PostgreSQL a list first sets its snapshot (SET TRANSACTION ... REPEATABLE READ),
# and a count is preceded by the planner's estimate (EXPLAIN).
SNAPSHOT = 1 if PG_URL else 0
COUNTING = 2 if PG_URL else 1


@pytest.fixture
def big_catalog(app: Flask, alice: User) -> None:
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


def statements_of(app: Flask, client: Client, url: Any, headers: Any = None) -> list[str]:
    with count_queries(app) as statements:
        response = client.get(url, headers=headers)
    assert response.status_code == 200, response.json
    return statements


@pytest.mark.parametrize(
    "path", ["/items", "/items?tag=tag1&sort=-price", "/stores/2/items?q=item"]
)
def test_a_page_of_items_costs_the_same_few_statements_at_any_size(
    app: Flask, client: Client, big_catalog: Any, path: Any
) -> None:
    counts = {}
    for page_size in (10, 20):
        separator = "&" if "?" in path else "?"
        with count_queries(app) as statements:
            response = client.get(f"{path}{separator}page_size={page_size}")
        assert response.status_code == 200
        assert all(len(item["tags"]) == 2 for item in response.json)
        counts[page_size] = len(statements)
    # The count (the page is full), the items with their store (one JOIN), the tags
    # of the page (one IN); and for /stores/{id}/items the store's existence. With
    # `q` on PostgreSQL, the page counts its matches itself, after the estimate. With
    # `tag`, the tags' ids are looked up first (one statement for any number of tags).
    counting = 1 if "q=" in path else COUNTING
    expected = SNAPSHOT + counting + (3 if path.startswith("/stores") else 2) + ("tag=" in path)
    assert counts == {10: expected, 20: expected}


def test_a_first_page_that_is_not_full_needs_no_count(
    app: Flask, client: Client, big_catalog: Any
) -> None:
    # 100 items carry tag1: the page holds them all, so it knows the total.
    statements = statements_of(app, client, "/items?tag=tag1&page_size=100")
    assert len(statements) == SNAPSHOT + 3  # the tag's ids, the page, its tags
    assert not any("count(" in s.lower() for s in statements)


def test_a_cursor_page_costs_as_much_as_the_first(
    app: Flask, client: Client, big_catalog: Any
) -> None:
    first = client.get("/items?page_size=10&sort=name")
    cursor = first.headers["Link"].split(">")[0].strip("<")
    assert len(statements_of(app, client, cursor)) == SNAPSHOT + COUNTING + 2
    # count=exact: one count of every match, and no estimate.
    statements = statements_of(app, client, "/items?page_size=10&count=exact")
    assert len(statements) == SNAPSHOT + 1 + 2
    assert not any(s.startswith("EXPLAIN") for s in statements)


@pytest.mark.parametrize("query", ["q=item", "search=item"])
def test_a_text_search_counts_its_matches_in_the_page_statement(
    app: Flask, client: Client, big_catalog: Any, query: Any
) -> None:
    """Its matches are all read to be ordered: the page counts them as it goes (on
    PostgreSQL, when the planner expects at most 10,000), instead of a second scan."""
    totals = {}
    for page in ("page_size=20", "page_size=20&page=3", "page_size=20&page=9"):
        with count_queries(app) as statements:
            response = client.get(f"/items?{query}&{page}")
        assert response.status_code == 200
        totals[page] = (response.headers.get("X-Total-Count"), len(response.json))
        if PG_URL and page != "page_size=20&page=9":
            # The page (its matches read first, in a CTE), then the page's tags.
            assert [s.split()[0] for s in statements] == ["SET", "EXPLAIN", "WITH", "SELECT"]
            assert "count(*) OVER ()" in statements[2]
    # 150 matches; page 9 is past the end, and is counted the usual way.
    assert totals == {
        "page_size=20": ("150", 20),
        "page_size=20&page=3": ("150", 20),
        "page_size=20&page=9": ("150", 0),
    }
    cursor = client.get(f"/items?{query}&page_size=20").headers["Link"].split(">")[0].strip("<")
    assert "cursor=" in cursor and client.get(cursor).headers["X-Total-Count"] == "150"


def test_a_page_that_counts_past_the_cap_says_so_as_an_estimate(
    app: Flask, client: Client, big_catalog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planner that guessed low (5 rows) lets the page count its 150 matches; past the
    cap (100 here) the number is sent as the estimate, as a capped count's would be."""
    monkeypatch.setattr(pagination, "estimate_rows", lambda _query: 5)
    monkeypatch.setattr(pagination, "COUNT_CAP", 100)
    response = client.get("/items?q=item&page_size=20")
    assert response.status_code == 200 and len(response.json) == 20
    assert "X-Total-Count" not in response.headers
    assert response.headers["X-Total-Count-Estimate"] == "150"


def test_a_single_item_costs_one_statement(app: Flask, client: Client, big_catalog: Any) -> None:
    """The item, its store and its tags in one SELECT: one snapshot without a
    transaction setting."""
    statements = statements_of(app, client, "/items/7")
    assert len(statements) == 1, statements
    assert client.get("/items/7").json["tags"] == [
        {"id": 1, "name": "tag0"},
        {"id": 2, "name": "tag1"},
    ]


def test_other_lists_cost_two_statements(app: Flask, client: Client, big_catalog: Any) -> None:
    for path, extra in (("/stores?page_size=100", 0), ("/stores/1/tags?page_size=100", 1)):
        statements = statements_of(app, client, path)
        # The page (not full, so no count); a store's tags also check the store.
        assert len(statements) == SNAPSHOT + 1 + extra, (path, statements)
    statements = statements_of(app, client, "/stores?page_size=2")
    assert len(statements) == SNAPSHOT + COUNTING + 1


def test_authentication_costs_at_most_two_statements(
    app: Flask,
    client: Client,
    big_catalog: Any,
    admin: User,
    auth: Callable[[User], dict[str, str]],
) -> None:
    headers = auth(admin)
    statements = statements_of(app, client, "/users?page_size=100", headers)
    # The revocation check (unless it is in Redis) and the user, then the page.
    revocation_check = 0 if app.config["REDIS_URL"] else 1
    assert len(statements) == SNAPSHOT + revocation_check + 1 + 1
