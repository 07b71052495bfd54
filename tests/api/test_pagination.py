"""Every list moves by keyset cursor (or page number for its first 10,000 rows), and
says how long it is without a full count (contract §5; core/lists/listing.py)."""

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask import Flask
from sqlalchemy import Select, insert, literal_column, select, text

from core.lists.counting import count_rows
from core.lists.listing import Listing
from db import analyze, db
from helpers import PG_URL, Client, assert_error, client_of, count_queries, snapshot
from models import Item, Store, Tag, User, item_tags


def links(response: Any) -> dict[str, str]:
    """``Link`` header as {rel: root-relative URL}."""
    if "Link" not in response.headers:
        return {}
    result = {}
    for part in response.headers["Link"].split(", "):
        url, rel = part.split("; ")
        result[rel.split('"')[1]] = url.strip("<>")
    return result


def params(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def walk(client: Client, start: str, rel: str = "next") -> list[list[dict[str, Any]]]:
    """Every page from ``start`` on, following ``rel`` links."""
    pages: list[list[dict[str, Any]]] = []
    url: str | None = start
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.json
        pages.append(response.json)
        url = links(response).get(rel)
        assert len(pages) < 100
    return pages


@pytest.fixture
def shelf(app: Flask, alice: User) -> Any:
    """One store with 25 items: prices and names that tie, created a second apart."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with app.app_context():
        store = Store(name="Shelf", owner_id=alice.id)
        db.session.add(store)
        db.session.flush()
        tag = Tag(name="odd", store_id=store.id)
        db.session.add(tag)
        for n in range(25):
            item = Item(
                name=f"Item {n % 7}-{n:02}" if n % 5 else f"item {n % 7}-{n:02}",
                price=Decimal(n % 4) + Decimal("0.50"),
                store_id=store.id,
                created_at=start + timedelta(seconds=n // 2),  # pairs tie
                tags=[tag] if n % 2 else [],
            )
            db.session.add(item)
        db.session.commit()
        return store.id


SORTS = ["id", "-id", "name", "-name", "price", "-price", "created_at", "-created_at"]


@pytest.mark.parametrize("sort", SORTS)
def test_a_cursor_walk_visits_every_row_once_in_order(
    client: Client, shelf: Any, sort: Any
) -> None:
    everything = client.get(f"/items?sort={sort}&page_size=100").json
    assert len(everything) == 25
    pages = walk(client, f"/items?sort={sort}&page_size=7")
    assert [len(page) for page in pages] == [7, 7, 7, 4]
    assert [item["id"] for page in pages for item in page] == [item["id"] for item in everything]
    # And back: prev links from the last page lead to the same pages.
    last = client.get(f"/items?sort={sort}&page_size=7")
    for _ in range(3):
        last = client.get(links(last)["next"])
    assert "next" not in links(last)
    back = walk(client, links(last)["prev"], rel="prev")
    assert back == pages[2::-1]


def test_links_keep_the_query_and_freeze_it_in_the_cursor(client: Client, shelf: Any) -> None:
    first = client.get(f"/stores/{shelf}/items?tag=odd&max_price=4&page_size=3&sort=-price")
    assert [item["price"] for item in first.json] == [3.5, 3.5, 3.5]
    assert set(links(first)) == {"next"}  # no prev on the first page
    nxt = links(first)["next"]
    assert urlsplit(nxt).path == f"/stores/{shelf}/items"
    assert {k: v for k, v in params(nxt).items() if k != "cursor"} == {
        "tag": ["odd"],
        "max_price": ["4"],
        "page_size": ["3"],
        "sort": ["-price"],
    }
    second = client.get(nxt)
    assert set(links(second)) == {"next", "prev"}
    # page_size and count are not frozen: a client may change them on the way.
    cursor = params(nxt)["cursor"][0]
    base = f"/stores/{shelf}/items?tag=odd&max_price=4&sort=-price&cursor={cursor}"
    assert client.get(base + "&page_size=2&count=exact").json == second.json[:2]
    # Filters and sort are: the same cursor with anything else is refused.
    for changed in (
        f"/stores/{shelf}/items?tag=odd&max_price=3&sort=-price&cursor={cursor}",
        f"/stores/{shelf}/items?tag=odd&max_price=4&cursor={cursor}",
        f"/stores/{shelf}/items?max_price=4&sort=-price&cursor={cursor}",
        f"/items?tag=odd&max_price=4&sort=-price&cursor={cursor}",
        f"/stores/{shelf}/items?tag=odd&max_price=4&sort=price&cursor={cursor}",
    ):
        body = assert_error(client.get(changed), 422)
        assert "other filters or another sort" in body["errors"]["query"]["cursor"][0]


@pytest.mark.parametrize(
    "cursor",
    ["x", "eyJhIjoxfQ", "WyIiLDAsWzFdXQ.bad-signature", "A" * 2001],
)
def test_an_altered_cursor_is_refused(app: Flask, client: Client, shelf: Any, cursor: Any) -> None:
    before = snapshot(app)
    body = assert_error(client.get("/items", query_string={"cursor": cursor}), 422)
    assert list(body["errors"]["query"]) == ["cursor"]
    assert snapshot(app) == before


def test_a_tampered_cursor_is_refused(client: Client, shelf: Any) -> None:
    cursor = params(links(client.get("/items?page_size=5"))["next"])["cursor"][0]
    payload, signature = cursor.rsplit(".", 1)
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    for bad in (f"{flipped}.{signature}", f"{payload}.{signature[::-1]}"):
        body = assert_error(client.get("/items", query_string={"cursor": bad}), 422)
        assert body["errors"]["query"]["cursor"] == [
            "Not a cursor of this service (altered or damaged)."
        ]


def test_a_cursor_signed_by_another_deployment_is_refused(
    client: Client, make_app: Callable[..., Flask], shelf: Any
) -> None:
    other = client_of(make_app())
    cursor = params(links(other.get("/items?page_size=5"))["next"])["cursor"][0]
    assert_error(client.get("/items", query_string={"cursor": cursor}), 422)


def test_page_and_cursor_together_are_refused(client: Client, shelf: Any) -> None:
    cursor = params(links(client.get("/items?page_size=5"))["next"])["cursor"][0]
    body = assert_error(client.get("/items", query_string={"cursor": cursor, "page": 2}), 422)
    assert body["errors"]["query"]["cursor"] == ["Send either page or cursor, not both."]


@pytest.mark.parametrize("query", ["count=estimate", "count=", "page_size=0", "cursor="])
def test_bad_paging_parameters(client: Client, query: Any) -> None:
    body = assert_error(client.get(f"/items?{query}"), 422)
    assert query.split("=")[0] in body["errors"]["query"]


def test_a_page_number_is_a_choice_of_the_client(client: Client, shelf: Any) -> None:
    response = client.get("/items?page=2&page_size=10&sort=name")
    assert json.loads(response.headers["X-Pagination"]) == {
        "total": 25,
        "total_pages": 3,
        "first_page": 1,
        "last_page": 3,
        "page": 2,
        "previous_page": 1,
        "next_page": 3,
    }
    assert {rel: params(url)["page"] for rel, url in links(response).items()} == {
        "first": ["1"],
        "prev": ["1"],
        "next": ["3"],
        "last": ["3"],
    }
    assert response.headers["X-Total-Count"] == "25"
    by_cursor = walk(client, "/items?page_size=10&sort=name")
    assert response.json == by_cursor[1]


def test_lists_keep_their_etag_and_304(
    client: Client, shelf: Any, as_alice: dict[str, str]
) -> None:
    first = client.get("/items?page_size=5")
    etag = first.headers["ETag"]
    assert client.get("/items?page_size=5", headers={"If-None-Match": etag}).status_code == 304
    nxt = links(first)["next"]
    second = client.get(nxt)
    assert second.headers["ETag"] != etag
    assert client.get(nxt, headers={"If-None-Match": second.headers["ETag"]}).status_code == 304
    # The count is part of what a list says: a new row anywhere changes the ETag.
    created = client.post(
        "/items", json={"name": "New", "price": 1, "store_id": shelf}, headers=as_alice
    )
    assert created.status_code == 201
    assert client.get("/items?page_size=5", headers={"If-None-Match": etag}).status_code == 200


def test_head_of_a_list(client: Client, shelf: Any) -> None:
    response = client.head("/items?page_size=5")
    assert response.status_code == 200
    assert response.get_data() == b""
    assert "next" in links(response)


# --- more rows than page numbers and counts reach -------------------------------


@pytest.fixture
def many_stores(app: Flask, alice: User) -> None:
    """10,050 stores: past the reach of page numbers and of the capped count."""
    with app.app_context():
        db.session.execute(
            insert(Store), [{"name": f"Store {n:05}", "owner_id": alice.id} for n in range(10_050)]
        )
        analyze("stores")  # as a bulk write does (commits): the planner knows the rows


def test_the_count_is_capped_and_the_last_link_goes_with_it(
    client: Client, many_stores: Any
) -> None:
    response = client.get("/stores?page_size=100")
    assert "X-Total-Count" not in response.headers
    estimate = int(response.headers["X-Total-Count-Estimate"])
    if PG_URL:
        assert 9_550 <= estimate <= 10_550  # the planner's, from fresh statistics
    else:
        assert estimate == 10_001  # no planner: what the capped count proved
    exact = client.get("/stores?page_size=100&count=exact")
    assert exact.headers["X-Total-Count"] == "10050"
    assert "X-Total-Count-Estimate" not in exact.headers
    paged = client.get("/stores?page_size=100&page=3")
    meta = json.loads(paged.headers["X-Pagination"])
    assert meta == {"first_page": 1, "page": 3, "previous_page": 2, "next_page": 4}
    assert set(links(paged)) == {"first", "prev", "next"}  # no last page without a total


@pytest.mark.parametrize("size", [99, 100])
def test_every_link_near_the_window_is_served(client: Client, many_stores: None, size: int) -> None:
    """With an exact total, rel="last" is given only when page numbers reach it (100
    rows a page: page 101 starts at row 10,000, past the window: no such link)."""
    response = client.get(f"/stores?page_size={size}&page=1&count=exact")
    assert response.headers["X-Total-Count"] == "10050"
    found = links(response)
    assert ("last" in found) == (size == 99)
    for rel, url in found.items():
        followed = client.get(url)
        assert followed.status_code == 200, (rel, url, followed.json)
        if rel == "last":
            assert params(url)["page"] == ["102"]
            assert [s["name"] for s in followed.json][-1] == "Store 10049"
            assert len(followed.json) == 10_050 - 101 * 99


def test_the_last_numbered_page_links_on_with_a_cursor(client: Client, many_stores: None) -> None:
    response = client.get("/stores?page_size=100&page=100")
    assert [s["name"] for s in response.json][-1] == "Store 09999"
    nxt = links(response)["next"]
    assert "page" not in params(nxt) and "cursor" in params(nxt)
    pages = walk(client, nxt)
    assert [s["name"] for page in pages for s in page] == [
        f"Store {n:05}" for n in range(10_000, 10_050)
    ]


# --- every list ---------------------------------------------------------------


def test_every_list_has_cursors(
    app: Flask,
    client: Client,
    admin: User,
    auth: Callable[[User], dict[str, str]],
    alice: User,
) -> None:
    with app.app_context():
        store = Store(name="Tags", owner_id=alice.id)
        db.session.add(store)
        db.session.flush()
        db.session.add_all(Tag(name=f"t{n}", store_id=store.id) for n in range(5))
        db.session.execute(
            insert(User),
            [
                {"username": f"u{n}", "email": f"u{n}@example.com", "password_hash": "x"}
                for n in range(5)
            ],
        )
        db.session.commit()
        store_id = store.id
    headers = auth(admin)
    for path, total in ((f"/stores/{store_id}/tags", 5), ("/users", 7), ("/stores", 1)):
        pages: list[list[int]] = []
        url: str | None = f"{path}?page_size=2"
        while url:
            response = client.get(url, headers=headers)
            assert response.status_code == 200
            pages.append([row["id"] for row in response.json])
            url = links(response).get("next")
        ids = [i for page in pages for i in page]
        assert ids == sorted(ids) and len(ids) == total, path


def test_every_list_documents_its_paging(client: Client) -> None:
    spec = client.get("/openapi.json").json
    lists = ["/items", "/stores", "/stores/{store_id}/items", "/stores/{store_id}/tags", "/users"]
    for path in lists:
        operation = spec["paths"][path]["get"]
        names = {p["name"] for p in operation["parameters"] if p.get("in") == "query"}
        assert {"page", "page_size", "cursor", "count"} <= names, path
        headers = operation["responses"]["200"]["headers"]
        assert {"Link", "X-Total-Count", "X-Total-Count-Estimate", "X-Pagination"} <= set(headers)
    sorts = next(p for p in spec["paths"]["/items"]["get"]["parameters"] if p.get("name") == "sort")
    assert sorts["schema"]["enum"][:4] == ["id", "-id", "name", "-name"]


def test_links_are_root_relative_urls_of_the_list(client: Client, shelf: Any) -> None:
    url = links(client.get("/items?page_size=5&q=item"))["next"]
    assert url.startswith("/items?")
    assert urlencode({"q": "item"}) in url


def test_tags_of_items_on_a_cursor_page(app: Flask, client: Client, shelf: Any) -> None:
    with app.app_context():
        odd = db.session.scalars(select(item_tags.c.item_id)).all()
    pages = walk(client, "/items?tag=ODD&page_size=4")
    assert sorted(item["id"] for page in pages for item in page) == sorted(odd)


# --- the counting rules on PostgreSQL's planner -----------------------------------


def series(n: int, where: str = "TRUE") -> Select[Any]:
    """n rows the planner knows the number of (generate_series with constants)."""
    return (
        select(literal_column("g"))
        .select_from(text(f"generate_series(1, {n}) g"))
        .where(text(where))
    )


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("rows", "result", "statements"),
    [
        # Estimate 5,000 (a third of 15,000): the capped count runs, finds more.
        (series(15_000, "g > 0"), (None, 10_001), ["EXPLAIN", "SELECT count"]),
        (series(15_000, "g > 14000"), (1_000, 1_000), ["EXPLAIN", "SELECT count"]),
        # Estimate 500,000: no count at all.
        (series(500_000), (None, 500_000), ["EXPLAIN"]),
        # Estimate 16,667 and a count that needs 50 ms: given up after 10.
        (
            series(50_000, "g > 0 AND (SELECT pg_sleep(0.05)) IS NULL"),
            (None, 16_667),
            ["EXPLAIN"],  # the count goes through the driver's cursor (core/lists/counting.py)
        ),
    ],
)
def test_counting_rules(app: Flask, rows: Any, result: Any, statements: Any) -> None:
    with app.app_context(), count_queries(app) as sent:
        assert count_rows(rows, None, exact=False) == result
        # The transaction goes on, with the configured statement timeout.
        timeout = db.session.scalar(text("SHOW statement_timeout"))
        assert timeout == f"{app.config['DB_STATEMENT_TIMEOUT_MS'] // 1000}s"
    sent = sent[:-1]  # without the SHOW
    assert len(sent) == len(statements)
    assert all(s.startswith(p) for s, p in zip(sent, statements, strict=True)), sent


@pytest.mark.postgres
def test_a_page_slower_than_the_count_budget_skips_the_count(app: Flask) -> None:
    """Estimate 16,667, 5,000 rows: the budgeted count finds them all, unless the page's
    own statement took longer than the count may take. The page's time is given (as
    Page measures it), and the budget is roomy where the count must finish: the rule
    is tested, not this machine's speed (it failed 2 runs of 5 on a loaded one)."""
    rows = series(50_000, "g > 45000")
    roomy = 60_000  # ms: the count always finishes within it
    with app.app_context(), count_queries(app) as sent:
        assert count_rows(rows, None, exact=False, budget_ms=roomy) == (5_000, 5_000)
        counted = count_rows(rows, None, exact=False, page_ms=9.9, budget_ms=roomy)
        assert counted == (5_000, 5_000)
        del sent[:]
        skipped = count_rows(rows, None, exact=False, page_ms=12.0, budget_ms=10)
        assert skipped == (None, 16_667)
        assert [s.split()[0] for s in sent] == ["EXPLAIN"]  # no count was even tried
        # The same page time under a larger budget: counted.
        assert count_rows(rows, None, exact=False, page_ms=12.0, budget_ms=roomy) == (5_000, 5_000)


@pytest.mark.postgres
def test_count_exact_counts_whatever_it_costs(app: Flask) -> None:
    with app.app_context():
        assert count_rows(series(500_000), None, exact=True) == (500_000, 500_000)
        assert count_rows(series(500_000), 7, exact=False) == (7, 7)


def test_a_list_may_be_newest_first_without_a_sort_parameter() -> None:
    """As the stock movements of an item are (GET /items/{id}/stock)."""
    newest_first = Listing({"id": (Item.id,)}, default="-id", sortable=False)
    assert newest_first.sort_of({}) == "-id"
    [(column, descending)] = newest_first.keys(newest_first.sort_of({}), {})
    assert cast(object, column) is Item.id and descending
    assert "sort" not in newest_first.query_schema()().fields
