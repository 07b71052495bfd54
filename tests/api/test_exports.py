"""CSV exports (§9): content, headers, filters, and statements per chunk."""

import csv
import io
import logging
from typing import Any

import pytest
from flask import Flask

from core.catalog.csv_format import neutralize
from helpers import CatalogFactory, Client, assert_error, count_queries

HEADER = [
    "id",
    "name",
    "description",
    "price",
    "stock",
    "store_id",
    "tags",
    "created_at",
    "updated_at",
    "sku",
    "status",
    "low_stock_threshold",
]
TRICKY = 'Line one, with "quotes"\nline two; Grüße, 東京'


@pytest.fixture
def catalog(api: CatalogFactory, as_alice: dict[str, str]) -> Any:
    store = api.store(as_alice)
    milk = api.item(as_alice, store, name="Milk", price="1.50", description=TRICKY, stock=3)
    formula = api.item(
        as_alice, store, name="=HYPERLINK(1)", price="9.99", description="-2+3", stock=0
    )
    other = api.store(as_alice, "Other Shop")
    bread = api.item(as_alice, other, name="Bread", price="2.00")
    for tag_name in ("dairy", "fresh"):
        api.link(as_alice, milk, api.tag(as_alice, store, tag_name))
    api.link(as_alice, formula, api.tag(as_alice, store, "@risky"))
    return {"store": store, "other": other, "milk": milk, "formula": formula, "bread": bread}


def rows(response: Any) -> Any:
    return list(csv.reader(io.StringIO(response.get_data(as_text=True), newline="")))


def test_every_item_with_its_columns(client: Client, catalog: Any) -> None:
    response = client.get("/items.csv")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == 'attachment; filename="items.csv"'
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.is_streamed
    header, *lines = rows(response)
    assert header == HEADER
    milk = client.get(f"/items/{catalog['milk']['id']}").json
    assert lines[0] == [
        str(milk["id"]),
        "Milk",
        TRICKY,
        "1.50",
        "3",
        str(milk["store_id"]),
        "dairy|fresh",
        milk["created_at"],
        milk["updated_at"],
        "",
        "active",
        "",
    ]
    # Text a spreadsheet would run as a formula starts with ' instead.
    assert lines[1][1:4] == ["'=HYPERLINK(1)", "'-2+3", "9.99"]
    assert lines[1][6] == "'@risky"
    assert [line[1] for line in lines] == ["Milk", "'=HYPERLINK(1)", "Bread"]
    # Rows end with CRLF; a line break inside a description stays as it was (quoted).
    assert response.get_data(as_text=True).count("\r\n") == 4


def test_a_stores_items_with_the_lists_filters(client: Client, catalog: Any) -> None:
    store = catalog["store"]
    response = client.get(f"/stores/{store['id']}/items.csv?sort=-price")
    disposition = f'attachment; filename="store-{store["id"]}-items.csv"'
    assert response.headers["Content-Disposition"] == disposition
    assert [line[1] for line in rows(response)[1:]] == ["'=HYPERLINK(1)", "Milk"]
    assert [line[1] for line in rows(client.get("/items.csv?in_stock=true"))[1:]] == ["Milk"]
    assert [line[1] for line in rows(client.get("/items.csv?tag=dairy&tag=fresh"))[1:]] == ["Milk"]
    assert rows(client.get("/items.csv?q=nothing-like-it")) == [HEADER]


@pytest.mark.parametrize(
    "query",
    [
        "sort=name",
        "sort=-name",
        "sort=price",
        "sort=-stock",
        "sort=created_at",
        "sort=-id",
        "search=milk",
        "search=milk&sort=-price",
    ],
)
def test_the_order_is_the_json_lists(client: Client, catalog: Any, query: Any) -> None:
    listed = [i["id"] for i in client.get(f"/items?{query}&page_size=100").json]
    exported = [int(line[0]) for line in rows(client.get(f"/items.csv?{query}"))[1:]]
    assert exported == listed


def test_bad_queries_and_unknown_stores(client: Client, catalog: Any) -> None:
    assert_error(client.get("/items.csv?sort=colour"), 422)
    assert_error(client.get("/items.csv?in_stock=maybe"), 422)
    assert_error(client.get("/items.csv?sort=relevance"), 422)  # only with search
    assert_error(client.get("/stores/999/items.csv"), 404)


@pytest.mark.config(EXPORT_CHUNK_SIZE=2)
def test_each_chunk_is_one_bounded_statement(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    store = api.store(as_alice)
    for n in range(5):
        api.item(as_alice, store, name=f"Item {n}")
    with count_queries(app) as statements:
        response = client.get("/items.csv?sort=name")
        lines = rows(response)
    assert len(lines) == 6
    reads = [s for s in statements if s.lstrip().startswith("SELECT")]
    item_reads = [s for s in reads if "FROM items" in s]
    # Chunks of 2, 2 and 1 rows, each one statement with its items' tags; the short
    # one is the last, no empty read after it.
    assert len(item_reads) == 3 and all("item_tags" in s for s in item_reads)
    # Each chunk starts where the last ended (keyset), never by skipping rows.
    assert all("LIMIT" in s for s in item_reads)
    assert all("(lower(items.name), items.id) >" in s for s in item_reads[1:]), item_reads


def test_a_whole_export_writes_one_access_line_when_it_ends(
    client: Client, catalog: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="stores.access"):
        response = client.get("/items.csv", headers={"X-Request-ID": "whole"})
        assert [r for r in caplog.records if r.name == "stores.access"] == []  # not yet
        assert len(rows(response)) == 4
        response.close()  # what a server does after the last byte
    [line] = [r for r in caplog.records if r.name == "stores.access"]
    assert (line.__dict__["request_id"], line.__dict__["status"], line.levelname) == (
        "whole",
        200,
        "INFO",
    )
    assert not hasattr(line, "cut")


FORMULA_NAMES = ["=1+1", "+1", "-1", "@SUM(A1)", "'quoted", "''twice", "plain"]


def test_every_formula_start_is_neutralised(
    client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    """§9 (OWASP CSV injection): a value starting with =, +, -, @ or ' is written with
    one ' before it; a tab or a carriage return too (core/catalog/csv_format.py)."""
    store = api.store(as_alice)
    for name in FORMULA_NAMES:
        api.item(as_alice, store, name=name, description=f"{name} described")
    lines = rows(client.get(f"/stores/{store['id']}/items.csv?sort=id"))[1:]
    assert [line[1] for line in lines] == [
        "'=1+1",
        "'+1",
        "'-1",
        "'@SUM(A1)",
        "''quoted",
        "'''twice",
        "plain",
    ]
    assert [line[2] for line in lines] == [
        ("'" if name != "plain" else "") + f"{name} described" for name in FORMULA_NAMES
    ]
    assert [neutralize(text) for text in ("\tx", "\rx", "x=", "")] == ["'\tx", "'\rx", "x=", ""]
