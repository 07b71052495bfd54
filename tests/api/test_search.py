"""Search, filters, sorting and pagination of items (and the pagination headers)."""

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.dialects import postgresql

from core.catalog.queries import ITEMS, item_search
from core.lists.listing import Ranked
from db import Explain, db, unicode_lower
from helpers import CatalogFactory, Client, assert_error
from models import Item


@pytest.fixture
def catalog(as_alice: dict[str, str], api: CatalogFactory) -> Any:
    """Two stores; items with tags, prices and descriptions to search by."""
    corner, market = api.store(as_alice, "Corner"), api.store(as_alice, "Market")
    tags = {
        (store["name"], name): api.tag(as_alice, store, name)
        for store in (corner, market)
        for name in ("dairy", "organic", "vegan")
    }
    rows = [
        (corner, "Milk", "2.00", "Whole milk", ["dairy"]),
        (corner, "Organic Milk", "3.50", None, ["dairy", "organic"]),
        (corner, "Tofu", "2.75", "Firm, organic soy", ["organic", "vegan"]),
        (market, "butter", "4.10", "Salted", ["dairy", "organic"]),
        (market, "Apples", "1.99", "100% crunchy_ apples", []),
        (market, "Oat drink", "2.00", "Like milk", ["vegan"]),
    ]
    items = {}
    for store, name, price, description, names in rows:
        item = api.item(as_alice, store, name, price, description=description)
        for tag_name in names:
            api.link(as_alice, item, tags[(store["name"], tag_name)])
        items[name] = item
    return {"corner": corner, "market": market, "items": items}


def names(response: Any) -> list[str]:
    assert response.status_code == 200, response.json
    return [item["name"] for item in response.json]


class TestFilters:
    def test_default_order_is_by_id(self, client: Client, catalog: Any) -> None:
        assert names(client.get("/items")) == [
            "Milk",
            "Organic Milk",
            "Tofu",
            "butter",
            "Apples",
            "Oat drink",
        ]

    def test_every_named_tag_must_be_present(self, client: Client, catalog: Any) -> None:
        assert names(client.get("/items?tag=dairy")) == ["Milk", "Organic Milk", "butter"]
        assert names(client.get("/items?tag=dairy&tag=organic")) == ["Organic Milk", "butter"]
        assert names(client.get("/items?tag=DAIRY&tag=Organic&tag=dairy")) == [
            "Organic Milk",
            "butter",
        ]
        assert names(client.get("/items?tag=dairy&tag=vegan")) == []
        assert names(client.get("/items?tag=unknown")) == []

    def test_tag_null_is_the_tag_named_null(
        self, client: Client, catalog: Any, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        """A query string has no null (docs/API.md): ``tag=null`` is a name like any
        other, a filter that finds nothing until a tag of that name exists."""
        assert names(client.get("/items?tag=null")) == []
        assert names(client.get(f"/stores/{catalog['corner']['id']}/items?tag=NULL")) == []
        null = api.tag(as_alice, catalog["corner"], "null")
        api.link(as_alice, catalog["items"]["Tofu"], null)
        assert names(client.get("/items?tag=null")) == ["Tofu"]
        assert names(client.get("/items?tag=Null&tag=vegan")) == ["Tofu"]

    def test_q_matches_name_or_description_ignoring_case(
        self, client: Client, catalog: Any
    ) -> None:
        assert names(client.get("/items?q=MILK")) == ["Milk", "Organic Milk", "Oat drink"]
        assert names(client.get("/items?q=organic")) == ["Organic Milk", "Tofu"]
        assert names(client.get("/items?q=100%25")) == ["Apples"]
        assert names(client.get("/items?q=_")) == ["Apples"]

    def test_q_never_matches_across_name_and_description(
        self, client: Client, catalog: Any
    ) -> None:
        # "Milk" + "Whole milk": one text with a separator that `q` cannot contain.
        assert names(client.get("/items?q=milkwhole")) == []
        assert names(client.get("/items?q=milk whole")) == []
        assert client.get("/items?q=k%1Fw").status_code == 422  # the separator is refused
        assert names(client.get("/items?q=whole milk")) == ["Milk"]

    def test_price_bounds_are_inclusive(self, client: Client, catalog: Any) -> None:
        assert names(client.get("/items?min_price=2&max_price=2.75")) == [
            "Milk",
            "Tofu",
            "Oat drink",
        ]
        assert names(client.get("/items?min_price=4.10")) == ["butter"]
        assert names(client.get("/items?max_price=1.99")) == ["Apples"]
        assert names(client.get("/items?min_price=5&max_price=1")) == []  # an empty range

    def test_store_filter_and_combinations(self, client: Client, catalog: Any) -> None:
        market = catalog["market"]["id"]
        assert names(client.get(f"/items?store_id={market}")) == ["butter", "Apples", "Oat drink"]
        assert names(client.get(f"/items?store_id={market}&tag=organic&max_price=5")) == ["butter"]

    def test_the_store_items_endpoint_takes_the_same_filters(
        self, client: Client, catalog: Any
    ) -> None:
        corner = catalog["corner"]["id"]
        assert names(client.get(f"/stores/{corner}/items")) == ["Milk", "Organic Milk", "Tofu"]
        assert names(client.get(f"/stores/{corner}/items?tag=organic&sort=-price")) == [
            "Organic Milk",
            "Tofu",
        ]
        assert names(client.get(f"/stores/{corner}/items?q=soy")) == ["Tofu"]

    @pytest.mark.parametrize(
        ("sort", "expected"),
        [
            ("name", ["Apples", "butter", "Milk", "Oat drink", "Organic Milk", "Tofu"]),
            ("-name", ["Tofu", "Organic Milk", "Oat drink", "Milk", "butter", "Apples"]),
            ("price", ["Apples", "Milk", "Oat drink", "Tofu", "Organic Milk", "butter"]),
            ("-price", ["butter", "Organic Milk", "Tofu", "Oat drink", "Milk", "Apples"]),
            ("created_at", ["Milk", "Organic Milk", "Tofu", "butter", "Apples", "Oat drink"]),
            ("-created_at", ["Oat drink", "Apples", "butter", "Tofu", "Organic Milk", "Milk"]),
            ("-id", ["Oat drink", "Apples", "butter", "Tofu", "Organic Milk", "Milk"]),
        ],
    )
    def test_sort(self, client: Client, catalog: Any, sort: Any, expected: Any) -> None:
        assert names(client.get(f"/items?sort={sort}")) == expected

    @pytest.mark.parametrize(
        ("query_string", "field"),
        [
            ("sort=colour", "sort"),
            ("sort=--price", "sort"),
            ("min_price=-1", "min_price"),
            ("min_price=abc", "min_price"),
            ("max_price=1.001", "max_price"),
            ("store_id=0", "store_id"),
            ("store_id=abc", "store_id"),
            ("store_id=%D9%A1", "store_id"),
            ("min_price=1_0", "min_price"),
            ("tag=", "tag"),
            ("q=", "q"),
            ("q=" + "x" * 81, "q"),
            ("q=%00", "q"),
            ("search=" + "-" * 33 + "x", "search"),  # the database's parser stacks 32
            ("search=" + "-%20" * 33 + "x", "search"),
            ("page=0", "page"),
            ("page=x", "page"),
            ("page_size=0", "page_size"),
            ("page_size=101", "page_size"),
        ],
    )
    def test_invalid_queries(self, client: Client, query_string: Any, field: Any) -> None:
        body = assert_error(client.get(f"/items?{query_string}"), 422)
        assert field in body["errors"]["query"]


def links(response: Any) -> dict[str, dict[str, Any]]:
    """``Link`` header as {rel: query parameters}."""
    result = {}
    for part in response.headers["Link"].split(", "):
        url, rel = part.split("; ")
        parsed = urlsplit(url.strip("<>"))
        assert parsed.path == "/items"
        result[rel.split('"')[1]] = parse_qs(parsed.query)
    return result


class TestPagination:
    def test_headers_of_a_middle_page(self, client: Client, catalog: Any) -> None:
        response = client.get("/items?page=2&page_size=2&sort=name")
        assert names(response) == ["Milk", "Oat drink"]
        assert response.headers["X-Total-Count"] == "6"
        assert json.loads(response.headers["X-Pagination"]) == {
            "total": 6,
            "total_pages": 3,
            "first_page": 1,
            "last_page": 3,
            "page": 2,
            "previous_page": 1,
            "next_page": 3,
        }
        rels = links(response)
        assert set(rels) == {"first", "prev", "next", "last"}
        assert rels["next"] == {"page_size": ["2"], "sort": ["name"], "page": ["3"]}
        assert rels["prev"]["page"] == ["1"] and rels["last"]["page"] == ["3"]

    def test_first_and_last_pages(self, client: Client, catalog: Any) -> None:
        first = client.get("/items?page=1&page_size=4&tag=dairy&tag=organic")
        assert set(links(first)) == {"first", "last"}
        assert links(first)["first"]["tag"] == ["dairy", "organic"]
        first = client.get("/items?page=1&page_size=4")
        assert set(links(first)) == {"first", "next", "last"}
        last = client.get("/items?page=2&page_size=4")
        assert names(last) == ["Apples", "Oat drink"]
        assert set(links(last)) == {"first", "prev", "last"}

    def test_beyond_the_last_page(self, client: Client, catalog: Any) -> None:
        response = client.get("/items?page=99")
        assert response.json == []
        assert response.headers["X-Total-Count"] == "6"
        assert set(links(response)) == {"first", "last"}

    def test_page_numbers_stop_at_10000_rows(self, client: Client, catalog: Any) -> None:
        assert client.get("/items?page=1000&page_size=10").status_code == 200
        assert client.get("/items?page=100&page_size=100").status_code == 200
        for query in ("page=1001&page_size=10", "page=101&page_size=100", f"page={10**30}"):
            body = assert_error(client.get(f"/items?{query}"), 422)
            [message] = body["errors"]["query"]["page"]
            assert 'without page and follow its Link rel="next"' in message

    def test_nothing_at_all(self, client: Client) -> None:
        response = client.get("/items")
        assert response.json == []
        assert response.headers["X-Total-Count"] == "0"
        assert "Link" not in response.headers
        assert "X-Pagination" not in response.headers  # only with page numbers

    def test_default_page_size_is_10(
        self, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        store = api.store(as_alice)
        for n in range(12):
            api.item(as_alice, store, f"item {n:02}")
        response = client.get("/items")
        assert len(response.json) == 10
        assert response.headers["X-Total-Count"] == "12"
        paged = client.get("/items?page=1")
        assert len(paged.json) == 10
        assert json.loads(paged.headers["X-Pagination"])["total_pages"] == 2


def test_search_ignores_case_beyond_ascii_as_the_database_does(
    client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    """Both sides are lowercased by the database, so the exact name always matches."""
    store = api.store(as_alice, "ΟΔΟΣ ÄPFEL")
    for name in ("Straße", "ΣΊΣΥΦΟΣ"):
        api.item(as_alice, store, name)
    assert [s["name"] for s in client.get("/stores?q=ΟΔΟΣ ÄPFEL").json] == ["ΟΔΟΣ ÄPFEL"]
    assert names(client.get("/items?q=ΣΊΣΥΦΟΣ")) == ["ΣΊΣΥΦΟΣ"]
    assert names(client.get("/items?q=Straße")) == ["Straße"]


class TestFullText:
    """`search`: ranked full text on PostgreSQL, every word a substring on SQLite."""

    def test_search_ranks_name_above_description(self, client: Client, catalog: Any) -> None:
        # On PostgreSQL: "milk" twice in Milk, in the name of Organic Milk, only in the
        # description of Oat drink. On SQLite: by id, which here is the same order.
        assert names(client.get("/items?search=milk")) == ["Milk", "Organic Milk", "Oat drink"]
        assert names(client.get("/items?search=MILK&sort=-price")) == [
            "Organic Milk",
            "Oat drink",
            "Milk",
        ]
        assert names(client.get("/items?search=organic milk")) == ["Organic Milk"]
        assert names(client.get("/items?search=crunchy apples")) == ["Apples"]
        assert names(client.get("/items?search=cheese")) == []

    @pytest.mark.postgres
    def test_web_search_syntax(self, client: Client, catalog: Any) -> None:
        assert names(client.get("/items?search=organic -milk")) == ["Tofu"]
        assert names(client.get('/items?search="soy firm"')) == []
        assert names(client.get('/items?search="firm, organic"')) == ["Tofu"]
        assert names(client.get("/items?search=tofu or butter")) == ["Tofu", "butter"]
        assert names(client.get("/items?search=apple")) == ["Apples"]  # one stem
        assert names(client.get("/items?search=the")) == []  # only a stop word
        assert names(client.get("/items?search=" + "-" * 32 + "tofu")) == ["Tofu"]  # even: not not
        assert "Tofu" not in names(client.get("/items?search=" + "-" * 31 + "tofu"))

    def test_relevance_needs_search(self, client: Client, catalog: Any) -> None:
        body = assert_error(client.get("/items?sort=relevance"), 422)
        assert body["errors"]["query"]["sort"] == ["sort=relevance needs search."]
        assert_error(client.get("/items?sort=-relevance&search=milk"), 422)
        by_relevance = client.get("/items?search=milk&sort=relevance")
        assert by_relevance.json == client.get("/items?search=milk").json

    def test_a_cursor_walks_the_relevance_order(self, client: Client, catalog: Any) -> None:
        everything = names(client.get("/items?search=milk&page_size=9"))
        assert len(everything) == 3
        walked: list[str] = []
        url: Any = "/items?search=milk&page_size=1"
        while url:
            response = client.get(url)
            walked += names(response)
            assert len(walked) <= len(everything), "the cursor must move on"
            url = links(response).get("next", {}) and (
                "/items?" + urlencode(links(response)["next"], doseq=True)
            )
        assert walked == everything


def test_every_sort_is_served_by_an_index() -> None:
    """Adding a sort to ITEMS without its indexes fails here."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]

    def sql(expressions: Any) -> list[str]:
        return [str(e.compile(dialect=dialect)).replace("items.", "") for e in expressions]

    table = db.metadata.tables["items"]
    indexes = [sql(index.expressions) for index in table.indexes]
    # A unique index serves its keys followed by the id: no two rows tie on them.
    unique = [[*sql(index.expressions), "id"] for index in table.indexes if index.unique]
    for name, keys in ITEMS.sorts.items():
        if isinstance(keys, Ranked):
            continue
        wanted = sql(keys)
        assert wanted in indexes or wanted == ["id"], name  # the primary key serves id
        assert ["store_id", *wanted] in indexes + unique, name


class TestUnicodeCase:
    """Tag names and ``q`` fold case the same way on both sides, on SQLite as on
    PostgreSQL: one ``lower``, the database's, for column and query."""

    @pytest.fixture
    def shelf(self, as_alice: dict[str, str], api: CatalogFactory) -> Any:
        store = api.store(as_alice, "Bazaar")
        juice = api.item(as_alice, store, "Äpfelsaft", "2.00", description="Aus Äpfeln")
        kebab = api.item(as_alice, store, "İzmir köfte", "7.50", description="Grüße aus İZMİR")
        api.link(as_alice, juice, api.tag(as_alice, store, "äpfel"))
        api.link(as_alice, kebab, api.tag(as_alice, store, "İzmir"))
        return store

    @pytest.mark.parametrize(
        "query, expected",
        [
            ("tag=ÄPFEL", ["Äpfelsaft"]),
            ("tag=Äpfel", ["Äpfelsaft"]),
            ("tag=äpfel&tag=ÄPFEL", ["Äpfelsaft"]),
            ("tag=İzmir", ["İzmir köfte"]),
            ("tag=İZMİR", ["İzmir köfte"]),
            ("tag=İzmir&tag=İZMİR", ["İzmir köfte"]),
            ("tag=äpfel&tag=İzmir", []),
            ("q=ÄPFEL", ["Äpfelsaft"]),
            ("q=äpfeln", ["Äpfelsaft"]),
            ("q=GRÜSSE", []),  # lowercasing is not case folding: ß stays ß
            ("q=GRÜẞE", ["İzmir köfte"]),  # capital sharp s lowercases to ß
            ("q=grüße", ["İzmir köfte"]),
            ("q=İZMİR", ["İzmir köfte"]),
            ("q=İzmir KÖFTE", ["İzmir köfte"]),
        ],
    )
    def test_search(self, client: Client, shelf: Any, query: Any, expected: Any) -> None:
        assert names(client.get(f"/items?{query}")) == expected
        assert names(client.get(f"/stores/{shelf['id']}/items?{query}")) == expected

    def test_unique_names_fold_alike(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        api: CatalogFactory,
        shelf: Any,
    ) -> None:
        duplicate = client.post(
            f"/stores/{shelf['id']}/tags", json={"name": "ÄPFEL"}, headers=as_alice
        )
        assert_error(duplicate, 409)
        api.store(as_alice, "Café")
        assert_error(client.post("/stores", json={"name": "CAFÉ"}, headers=as_alice), 409)
        tags = client.get(f"/stores/{shelf['id']}/tags").json
        assert sorted(tag["name"] for tag in tags) == ["äpfel", "İzmir"]
        assert [s["name"] for s in client.get("/stores?q=CAFÉ").json] == ["Café"]


CASES = ["ÄPFEL", "İZMİR", "İzmir", "ΟΔΟΣ", "ΣΑΣ Σ", "GRÜẞE", "ǄUNGLA", "ǅ", "ÅNGSTRÖM", "ΐ"]


@pytest.mark.postgres
def test_sqlites_lower_is_postgresqls(app: Flask) -> None:
    """The ``lower`` SQLite connections get agrees with PostgreSQL's, character by
    character, on the letters where Python's str.lower does not."""
    with app.app_context():
        for text in CASES:
            assert unicode_lower(text) == db.session.scalar(select(func.lower(text))), text


def test_sqlite_connections_lower_every_letter(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'lower.db'}")
    with engine.connect() as conn:
        for text in CASES:
            assert conn.scalar(select(func.lower(text))) == unicode_lower(text)
        assert conn.scalar(select(func.lower("İZMİR"))) == "izmir"
        assert conn.scalar(select(func.lower(None))) is None
    engine.dispose()


@pytest.mark.postgres
def test_q_is_served_by_the_trigram_index_of_name_and_description(app: Flask) -> None:
    """The filter's expression is the index's, so the planner can use it (models/item.py).
    Without sequential and plain index scans (on an almost empty table, walking the
    primary key in id order and filtering is cheaper), only the index can answer."""
    query = item_search({"q": "widget 42"}).order_by(Item.id).limit(101)
    with app.app_context():
        db.session.execute(text("SET LOCAL enable_seqscan = off"))
        db.session.execute(text("SET LOCAL enable_indexscan = off"))
        plan = db.session.execute(Explain(query)).scalar_one()
    assert "ix_items_text_trgm" in json.dumps(plan)


def plan_nodes(node: dict[str, Any]) -> Any:
    """Every node of an EXPLAIN (FORMAT JSON) plan: its type, table and index."""
    yield {
        "Node Type": node["Node Type"],
        "Relation": node.get("Relation Name"),
        "Index Name": node.get("Index Name"),
    }
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


SPREAD_CATALOG = """
INSERT INTO stores (name, owner_id, created_at, updated_at)
SELECT 'Store ' || g, :owner, now(), now() FROM generate_series(1, 19) g;
INSERT INTO items (name, price, store_id, created_at, updated_at)
SELECT 'Item ' || g, g % 100, s.id, now(), now()
FROM stores s, generate_series(1, 1000) g;
ANALYZE stores;
ANALYZE items
"""


@pytest.mark.postgres
@pytest.mark.parametrize("sort", ["name", "-name"])
def test_a_stores_items_by_name_are_read_in_order_from_its_unique_name_index(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory, sort: str
) -> None:
    """Migration 0013: (store_id, lower(name)) is unique, so it serves `sort=name`
    within a store by itself: the first page and a cursor's page (20 stores of 1,000
    items, statistics fresh) read it in order and stop after the page, sorting nothing
    but the id tie-break of groups of one row (Incremental Sort), never the store."""
    store = api.store(as_alice, "Store 0")
    with app.app_context():
        owner = db.session.scalar(text(f"SELECT owner_id FROM stores WHERE id = {store['id']}"))
        for statement in SPREAD_CATALOG.split(";\n"):
            db.session.execute(text(statement), {"owner": owner})
        db.session.commit()
        engine = db.engine
    pages: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if statement.startswith("SELECT") and "ORDER BY lower(items.name)" in statement:
            pages.append((statement, parameters))

    first = client.get(f"/stores/{store['id']}/items?sort={sort}&page_size=20")
    assert first.status_code == 200 and len(first.json) == 20
    event.listen(engine, "before_cursor_execute", record)
    try:
        following = client.get(
            next(
                part.split("; ")[0].strip("<>")
                for part in first.headers["Link"].split(", ")
                if 'rel="next"' in part
            )
        )
        assert names(following)[0] != names(first)[0]
        client.get(f"/stores/{store['id']}/items?sort={sort}&page_size=20")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(pages) == 2  # the cursor's page, the first page
    with app.app_context():
        for statement, parameters in pages:
            plan = db.session.connection().exec_driver_sql(
                f"EXPLAIN (FORMAT JSON) {statement}", parameters
            )
            nodes = list(plan_nodes(plan.scalar_one()[0]["Plan"]))
            reads = {node.get("Index Name") for node in nodes if node["Relation"] == "items"}
            assert reads == {"uq_items_store_id_name_lower"}, nodes
            assert "Sort" not in {node["Node Type"] for node in nodes}, nodes


WIDE_CATALOG = """
INSERT INTO items (name, description, price, store_id, created_at, updated_at)
SELECT 'Widget ' || g, 'a widget, number ' || g, g % 1000, :store, now(), now()
FROM generate_series(1, 100000) g;
ANALYZE items
"""


@pytest.mark.postgres
@pytest.mark.parametrize(
    "query", ["search=nothing%20matches&sort=price", "search=nothing%20matches&sort=-price&page=2"]
)
def test_a_few_matches_in_another_order_are_read_from_the_text_index(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory, query: str
) -> None:
    """A page that counts its few matches (its window reads them all) reads them through
    the search index and sorts them, never walks the sort's index filtering every item
    for them: one SELECT with the window, ORDER BY and LIMIT did (100,000 items here; a
    search matching nothing, sorted by price: 3-4 s at a million, core/lists/page.py)."""
    store = api.store(as_alice, "Wide")
    with app.app_context():
        db.session.execute(text("SET LOCAL statement_timeout = 0"))  # a loaded machine
        for statement in WIDE_CATALOG.split(";\n"):
            db.session.execute(text(statement), {"store": store["id"]})
        db.session.commit()
        engine = db.engine
    pages: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if statement.startswith(("SELECT", "WITH")) and "_total" in statement:
            pages.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        answer = client.get(f"/items?{query}&page_size=5")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert answer.status_code == 200, answer.json
    assert answer.json == [] and answer.headers["X-Total-Count"] == "0"
    [(statement, parameters)] = pages  # the page, counting its matches
    with app.app_context():
        plan = db.session.connection().exec_driver_sql(
            f"EXPLAIN (FORMAT JSON) {statement}", parameters
        )
        nodes = list(plan_nodes(plan.scalar_one()[0]["Plan"]))
    indexes = {node["Index Name"] for node in nodes if node["Index Name"]}
    assert "ix_items_search_vector" in indexes, nodes
    assert not any(name.startswith("ix_items_price") for name in indexes), nodes


TAGS = [f"t{n}" for n in range(10)]


@pytest.fixture
def ten_tags(app: Flask, as_alice: dict[str, str], api: CatalogFactory) -> tuple[Any, list[Any]]:
    """Items carrying all ten tags (and one carrying nine)."""
    store = api.store(as_alice)
    tags = [api.tag(as_alice, store, name) for name in TAGS]
    items = [api.item(as_alice, store, f"Item {n}") for n in range(3)]
    for item in items:
        for tag in tags[: 9 if item is items[2] else 10]:
            api.link(as_alice, item, tag)
    return store, items


class TestTagBound:
    """§4: `tag` at most 10; a request cannot make the database plan without limit."""

    @pytest.mark.parametrize(
        "path", ["/items", "/stores/1/items", "/items.csv", "/stores/1/items.csv"]
    )
    def test_eleven_tags_are_refused(
        self, client: Client, ten_tags: tuple[Any, list[Any]], path: str
    ) -> None:
        query = urlencode([("tag", name) for name in [*TAGS, "t10"]])
        body = assert_error(client.get(f"{path}?{query}"), 422)
        assert body["errors"]["query"]["tag"] == ["Longer than maximum length 10."]

    def test_ten_tags_find_the_items_that_carry_all(
        self, client: Client, ten_tags: tuple[Any, list[Any]]
    ) -> None:
        _store, items = ten_tags
        query = urlencode([("tag", name.upper()) for name in TAGS])
        for path in ("/items", "/stores/1/items"):
            response = client.get(f"{path}?{query}")
            assert [item["id"] for item in response.json] == [items[0]["id"], items[1]["id"]]
        nine_and_unknown = urlencode([("tag", name) for name in [*TAGS[:9], "nope"]])
        assert client.get(f"/items?{nine_and_unknown}").json == []

    @pytest.mark.postgres
    def test_planning_ten_tags_costs_about_as_much_as_one(
        self, app: Flask, ten_tags: tuple[Any, list[Any]]
    ) -> None:
        """PostgreSQL's planning time (EXPLAIN SUMMARY, best of several) of the filter
        with 10 tags stays within a small factor of 1 tag: one EXISTS per tag made it
        grow steeply (100 tags: seconds)."""
        planning = {count: planning_ms(app, TAGS[:count]) for count in (1, 10)}
        assert planning[10] < 3 * planning[1] + 0.5, planning


def planning_ms(app: Flask, names: list[str], runs: int = 7) -> float:
    """The best planning time of the list's statement for ``names``, in ms."""
    times: list[float] = []
    with app.test_request_context():
        query = item_search({"tag": names}).order_by(Item.id).limit(11)
        compiled = query.compile(bind=db.engine)
        for _run in range(runs):
            plan = (
                db.session.connection()
                .exec_driver_sql(f"EXPLAIN (SUMMARY, FORMAT JSON) {compiled}", compiled.params)
                .scalar_one()
            )
            times.append(plan[0]["Planning Time"])
        db.session.rollback()
    return min(times)
