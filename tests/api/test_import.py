"""`flask import-items` (§9): upserts by name, errors by line and column, all or
nothing, streamed; an export imports back into the same catalog."""

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text, update

from core.catalog import csv_copy
from core.catalog.csv_import import import_items
from db import db
from helpers import CatalogFactory, Client, count_queries, query, snapshot, without_links
from models import AuditEntry, Event, Item, StockMovement, Store, Tag

HEADER = "name,price,description,stock,tags\r\n"


@pytest.fixture
def store(api: CatalogFactory, as_alice: dict[str, str]) -> Any:
    return api.store(as_alice)


@pytest.fixture
def run(app: Flask, tmp_path: Path) -> Any:
    def invoke(store_id: Any, content: Any, *options: Any) -> Any:
        path = tmp_path / "items.csv"
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return app.test_cli_runner().invoke(
            args=["import-items", str(store_id), str(path), *options]
        )

    return invoke


def catalog(client: Client, store: Any) -> Any:
    """A store's items as the export shows them, without what differs between stores."""
    rows = list(
        csv.DictReader(
            io.StringIO(
                client.get(f"/stores/{store['id']}/items.csv").get_data(as_text=True), newline=""
            )
        )
    )
    for row in rows:
        for column in ("id", "store_id", "created_at", "updated_at"):
            del row[column]
    return rows


def test_an_export_imports_back_into_the_same_catalog(
    app: Flask,
    client: Client,
    api: CatalogFactory,
    as_alice: dict[str, str],
    store: Any,
    run: Any,
) -> None:
    tricky = 'Line one, "quoted"\nline two,\r\nthree; Grüße 東京 🙂'
    milk = api.item(as_alice, store, name="Milk", price="1.50", description=tricky, stock=12)
    api.item(as_alice, store, name="=SUM(A1)", price="0", description="+1 -1 @x", stock=0)
    api.item(as_alice, store, name="Plain", price="9999999999.99")
    for name in ("dairy", "-fresh", "Ünïcode, with comma"):
        api.link(as_alice, milk, api.tag(as_alice, store, name))
    exported = client.get(f"/stores/{store['id']}/items.csv").get_data()
    empty = api.store(as_alice, "Empty")
    result = run(empty["id"], exported)
    assert result.exit_code == 0, result.output
    assert "3 created, 0 updated, 0 unchanged, 0 invalid." in result.output
    assert catalog(client, empty) == catalog(client, store)
    # Each stock given is one count, by nobody (the command line).
    counts = query(
        app,
        select(StockMovement.delta, StockMovement.reason, StockMovement.user_id)
        .join(Item)
        .where(Item.store_id == empty["id"])
        .order_by(StockMovement.id),
    )
    assert counts == [(12, "count", None), (0, "count", None), (0, "count", None)]
    # Importing it again changes nothing.
    before = snapshot(app)
    again = run(empty["id"], exported)
    assert "0 created, 0 updated, 3 unchanged, 0 invalid." in again.output
    assert snapshot(app) == before


def test_rows_update_items_of_the_same_name(
    app: Flask,
    client: Client,
    api: CatalogFactory,
    as_alice: dict[str, str],
    store: Any,
    run: Any,
) -> None:
    milk = api.item(as_alice, store, name="Milk", price="1.00", description="old", stock=5)
    api.link(as_alice, milk, api.tag(as_alice, store, "old-tag"))
    api.item(as_alice, store, name="Bread", price="2.00")
    content = HEADER + "MILK,1.20,,8,new-tag|Other\r\nBread,2.00,,,\r\nTea,3,Green,,tea\r\n"
    result = run(store["id"], content)
    assert result.exit_code == 0, result.output
    assert "1 created, 1 updated, 1 unchanged, 0 invalid." in result.output
    updated = client.get(f"/items/{milk['id']}").json
    assert (updated["name"], updated["price"], updated["description"]) == ("MILK", 1.2, None)
    assert [t["name"] for t in updated["tags"]] == ["new-tag", "Other"]
    assert updated["stock"] == 8
    alice = client.get("/users/me", headers=as_alice).json["id"]
    assert [
        (m["delta"], m["stock_after"], m["user_id"])
        for m in client.get(f"/items/{milk['id']}/stock").json
    ] == [(3, 8, None), (5, 5, alice)]  # the command line's count is no user's (§8)
    # The old tag stays in the store, unlinked; new tags were created in it.
    assert sorted(n for (n,) in query(app, select(Tag.name))) == [
        "Other",
        "new-tag",
        "old-tag",
        "tea",
    ]
    tea = query(app, select(Item.stock, Item.description).where(Item.name == "Tea"))
    assert tea == [(0, "Green")]


def test_a_row_that_differs_only_in_its_tags_updates_its_item(
    app: Flask,
    client: Client,
    api: CatalogFactory,
    as_alice: dict[str, str],
    store: Any,
    run: Any,
) -> None:
    """A row updates its item when the set of its tags' names differs from the item's
    (one added, one left out, all left out); the same names in another order or case
    leave it unchanged."""
    hot, cold = api.tag(as_alice, store, "hot"), api.tag(as_alice, store, "cold")
    items = {}
    for name in ("Same", "Added", "Removed", "Cleared", "Bare"):
        items[name] = api.item(as_alice, store, name=name, price="1.00")
        if name != "Bare":
            api.link(as_alice, items[name], hot)
            if name != "Added":
                api.link(as_alice, items[name], cold)
    rows = [
        "Same,1.00,,,COLD|Hot",
        "Added,1.00,,,hot|cold",
        "Removed,1.00,,,cold",
        "Cleared,1.00,,,",
        "Bare,1.00,,,",
    ]
    result = run(store["id"], HEADER + "\r\n".join(rows) + "\r\n")
    assert result.exit_code == 0, result.output
    assert "0 created, 3 updated, 2 unchanged, 0 invalid." in result.output
    tags = {
        name: [t["name"] for t in client.get(f"/items/{item['id']}").json["tags"]]
        for name, item in items.items()
    }
    assert tags == {
        "Same": ["hot", "cold"],
        "Added": ["hot", "cold"],
        "Removed": ["cold"],
        "Cleared": [],
        "Bare": [],
    }


def test_a_bom_and_windows_line_endings(client: Client, store: Any, run: Any) -> None:
    content = "\ufeff" + HEADER + 'Milk,1.50,"two\r\nlines",3,dairy\r\n'
    result = run(store["id"], content.encode("utf-8"))
    assert result.exit_code == 0, result.output
    [row] = catalog(client, store)
    assert row["description"] == "two\r\nlines" and row["stock"] == "3"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("price,description\r\n1,x\r\n", "missing column(s) name"),
        ("name,price,colour\r\nMilk,1,red\r\n", "unknown column(s) 'colour'. Expected"),
        ("nmae,price\r\nMilk,1\r\n", "missing column(s) name; unknown column(s) 'nmae'"),
        ("name,price,price\r\nMilk,1,2\r\n", "column(s) 'price' more than once. Expected"),
        # A header of many unknown columns: a message of bounded size.
        (
            "name,price," + ",".join(f"c{n}" for n in range(9999)) + ",x" * 2 + "y" * 100 + "\r\n",
            "unknown column(s) 'c0', 'c1', 'c2', 'c3', 'c4' and 9996 more. Expected",
        ),
        ("name,price," + "z" * 100 + "\r\n", "unknown column(s) '" + "z" * 40 + "...'. Expected"),
        ("Name,price,description, NAME\r\nA,1,x,B\r\n", "column(s) 'name' more than once"),
        (b"name,price\r\nMilk,\xff\r\n", "not UTF-8"),
        (
            "name,price,description\r\nMilk,1,\r\nTea,1," + "x" * 131_073 + "\r\n",
            "line 3: field larger than field limit (131072).",
        ),
    ],
)
def test_unreadable_files_change_nothing(
    app: Flask, store: Any, run: Any, content: Any, message: Any
) -> None:
    before = snapshot(app)
    result = run(store["id"], content)
    assert result.exit_code == 1
    assert message in result.output
    assert snapshot(app) == before


def test_invalid_rows_are_reported_by_line_and_column(app: Flask, store: Any, run: Any) -> None:
    content = (
        HEADER
        + "Good,1,,,\r\n"
        + 'Bad price,1.001,"a\r\nmultiline",,\r\n'
        + ",2,,,\r\n"
        + "Negative,1,,-3,\r\n"
        + "Pipes,1,,,a||b\r\n"
        + "good,5,,,\r\n"
    )
    before = snapshot(app)
    result = run(store["id"], content)
    assert result.exit_code == 1
    assert "line 3, column price:" in result.output
    assert "line 5, column name:" in result.output
    assert "line 6, column stock:" in result.output
    assert "line 7, column tags:" in result.output
    assert "line 8, column name: 'good' is on line 2 already." in result.output
    assert (
        "Nothing written: 5 invalid rows (listed above). Fix them and run again, or add "
        "--skip-invalid to import the 1 valid row alone." in result.output
    )
    assert snapshot(app) == before

    skipped = run(store["id"], content, "--skip-invalid")
    assert skipped.exit_code == 0
    assert query(app, select(Item.name)) == [("Good",)]


def test_a_row_counts_once_and_its_line_counts_the_blank_lines(
    app: Flask, store: Any, run: Any
) -> None:
    """A row with three bad cells is one invalid row (each cell listed); its line is
    where it is in the file, blank lines before it included."""
    content = HEADER + "\r\n\r\nGood,1,,,\r\n\r\n,x,,y,\r\nGood,2,,,\r\n"
    before = snapshot(app)
    result = run(store["id"], content)
    assert result.exit_code == 1
    listed = [line.split(":")[0] for line in result.output.splitlines() if line[:5] == "line "]
    assert listed == [
        "line 6, column name",
        "line 6, column price",
        "line 6, column stock",
        "line 7, column name",
    ]
    assert "line 7, column name: 'Good' is on line 4 already." in result.output
    assert "Nothing written: 2 invalid rows" in result.output
    assert "import the 1 valid row alone." in result.output
    assert snapshot(app) == before


def test_the_errors_listed_are_the_first_lines_whoever_finds_them(app: Flask, store: Any) -> None:
    """Line 3 repeats line 2's name (on PostgreSQL found by SQL, after the file's
    other errors were read): it is listed first, with the next lines' up to the cap."""
    rows = "Milk,1,,,\r\nmilk,1,,,\r\n" + "".join(f"Bad {n},x,,,\r\n" for n in range(20))
    with app.app_context():
        summary = import_items(
            db.session.get_one(Store, store["id"]), io.BytesIO((HEADER + rows).encode()), listed=5
        )
    assert summary.invalid == 21
    assert [(e["line"], e["column"]) for e in summary.errors] == [
        (3, "name"),
        (4, "price"),
        (5, "price"),
        (6, "price"),
        (7, "price"),
    ]


def test_a_row_refused_makes_no_later_row_a_repeat(app: Flask, store: Any, run: Any) -> None:
    """A row refused for its SKU holds no name, and one refused for its name no SKU:
    line 4 is the first valid "B", line 6 the first valid "c" (PostgreSQL, which judges
    the whole file's repeats at once, must not count the rows it refuses); a row that
    repeats both is an error of its name."""
    content = "name,price,sku\r\nA,1,X\r\nB,1,X\r\nB,1,Y\r\nC,1,Y\r\nc,1,Z\r\nA,1,Z\r\n"
    result = run(store["id"], content)
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line[:5] == "line "] == [
        "line 3, column sku: 'X' is on line 2 already.",
        "line 5, column sku: 'Y' is on line 4 already.",
        "line 7, column name: 'A' is on line 2 already.",
    ]
    assert "Nothing written: 3 invalid rows" in result.output
    assert "import the 3 valid rows alone." in result.output

    skipped = run(store["id"], content, "--skip-invalid")
    assert skipped.exit_code == 0, skipped.output
    assert "Imported: 3 created, 0 updated, 0 unchanged, 3 invalid (skipped)." in skipped.output
    items = query(app, select(Item.name, Item.sku).order_by(Item.id))
    assert items == [("A", "X"), ("B", "Y"), ("c", "Z")]


@pytest.mark.postgres
@pytest.mark.parametrize("links", [csv_copy.ROUNDS, csv_copy.ROUNDS + 5])
def test_a_chain_of_refusals_is_judged_in_a_bounded_number_of_rounds(
    app: Flask, store: Any, run: Any, links: int
) -> None:
    """PostgreSQL judges repeats a round per link of a chain (csv_copy.SHARED): a chain
    of up to ROUNDS links as the file is read; in a longer one, the rows left then are
    each refused as a repeat of an earlier row with its name or SKU (refused or not),
    not judged a round per row. Nothing is written."""
    rows = "".join(f"N{n},1,S{n}\r\nN{n + 1},1,S{n}\r\n" for n in range(links))
    result = run(store["id"], f"name,price,sku\r\n{rows}N{links},1,S{links}\r\n")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line[:5] == "line "]
    # As the file is read: line 2n+3 (N{n+1},S{n}) repeats S{n}; line 2n+4 is valid.
    judged = min(links, csv_copy.ROUNDS + 1)
    assert errors[:judged] == [
        f"line {2 * n + 3}, column sku: 'S{n}' is on line {2 * n + 2} already."
        for n in range(judged)
    ]
    # Past the rounds, every row left is refused: its name or SKU is on the line before.
    left = [
        f"line {line}, column name: 'N{line // 2 - 1}' is on line {line - 1} already."
        if line % 2 == 0
        else f"line {line}, column sku: 'S{line // 2 - 1}' is on line {line - 1} already."
        for line in range(2 * judged + 2, 2 * links + 3)
        if links > csv_copy.ROUNDS
    ]
    assert errors[judged:] == left
    assert query(app, select(Item.id)) == []


@pytest.mark.parametrize(
    ("rows", "refused"),
    [
        # X is A's SKU: A would be renamed B, a name B keeps.
        ("B,1,X,newtag\r\n", "line 2, column name: 'B' is the name of item {b}, which no"),
        # Line 2 updates A (by its SKU): line 3 cannot update it too.
        ("Z,1,X,\r\nA,1,,onlyhere\r\n", "line 3, column name: Item {a} is updated by line 2"),
    ],
    ids=["name taken", "item claimed"],
)
def test_a_row_refused_by_the_matching_creates_no_tag(
    app: Flask,
    api: CatalogFactory,
    as_alice: dict[str, str],
    store: Any,
    run: Any,
    rows: str,
    refused: str,
) -> None:
    """An invalid row writes nothing: a row the matching refuses (the name its item
    would take is kept, or its item is another row's) leaves no tag, no tag.created
    and no audit entry behind, when the valid rows are written (--skip-invalid)."""
    a = api.item(as_alice, store, name="A", sku="X")
    b = api.item(as_alice, store, name="B")
    result = run(store["id"], "name,price,sku,tags\r\n" + rows, "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert refused.format(a=a["id"], b=b["id"]) in result.output
    assert "1 invalid (skipped)." in result.output
    assert query(app, select(Tag.name)) == []
    assert query(app, select(Event.type).where(Event.type == "tag.created")) == []
    assert query(app, select(AuditEntry.id).where(AuditEntry.action == "tag.created")) == []


def test_a_new_tag_takes_the_files_first_spelling(
    app: Flask, client: Client, store: Any, run: Any
) -> None:
    result = run(store["id"], HEADER + "A,1,,,Fresh\r\nB,1,,,fresh|FRESH\r\nC,1,,,x|X\r\n")
    assert result.exit_code == 0, result.output
    assert query(app, select(Tag.name).order_by(Tag.id)) == [("Fresh",), ("x",)]
    listed = client.get(f"/stores/{store['id']}/items?sort=name").json
    assert {i["name"]: [t["name"] for t in i["tags"]] for i in listed} == {
        "A": ["Fresh"],
        "B": ["Fresh"],
        "C": ["x"],
    }


def test_a_dry_run_writes_nothing(app: Flask, store: Any, run: Any) -> None:
    before = snapshot(app)
    result = run(store["id"], HEADER + "Milk,1,,4,dairy\r\n", "--dry-run")
    assert result.exit_code == 0
    assert (
        "Dry run, nothing written. The file would give: 1 created, 0 updated, 0 unchanged, "
        "0 invalid." in result.output
    )
    assert snapshot(app) == before


@pytest.mark.parametrize("store_id", [999, 0, 2**31, 2**63])
def test_an_unknown_store(run: Any, store_id: int) -> None:
    """Beyond the ids' 32 bits too: no store, not the driver's overflow."""
    result = run(store_id, HEADER)
    assert result.exit_code == 1, result.exception
    assert result.output.splitlines() == [f"Error: Store {store_id} not found."]


class Recording(io.RawIOBase):
    """A file that notes how much each read asks for."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)
        self.largest = 0

    def readable(self) -> Any:
        return True

    def readinto(self, buffer: Any) -> Any:
        self.largest = max(self.largest, len(buffer))
        return self.data.readinto(buffer)


def test_a_large_file_is_streamed_not_read_whole(app: Flask, store: Any) -> None:
    rows = "".join(f"Item {n},{n % 100}.99,{'x' * 200},{n % 7},\r\n" for n in range(12_000))
    raw = Recording((HEADER + rows).encode())
    assert len(raw.data.getvalue()) > 2_500_000
    with app.app_context():
        summary = import_items(db.session.get_one(Store, store["id"]), io.BufferedReader(raw))
        assert (summary.created, summary.invalid) == (12_000, 0)
        assert db.session.scalar(select(func.count()).select_from(Item)) == 12_000
    assert raw.largest <= 64 * 1024


def test_many_distinct_names_and_tags_import(app: Flask, store: Any, run: Any) -> None:
    """17.8: a chunk with more distinct names and tags than a SELECT may have columns
    (1,664 on PostgreSQL) imports; no statement grows with their number."""
    rows = [f"Item {n},1.00,,,t{n}a|t{n}b" for n in range(900)]  # 900 names, 1,800 tags
    with count_queries(app) as statements:
        result = run(store["id"], HEADER + "\r\n".join(rows) + "\r\n")
    assert result.exit_code == 0, result.output
    assert query(app, select(func.count()).select_from(Item)) == [(900,)]
    assert query(app, select(func.count()).select_from(Tag)) == [(1800,)]
    assert max(s.count("lower(") for s in statements) <= 500


@pytest.mark.postgres
def test_an_import_leaves_fresh_statistics(app: Flask, store: Any, run: Any) -> None:
    """17.12: the planner's row estimate (and so an estimated count) is right at once."""
    rows = [f"Item {n},1.00,,," for n in range(70)]
    assert run(store["id"], HEADER + "\r\n".join(rows) + "\r\n").exit_code == 0
    assert query(app, text("SELECT reltuples FROM pg_class WHERE relname = 'items'")) == [(70,)]


@pytest.mark.postgres
def test_a_new_items_event_shows_its_time_when_a_link_moved_it(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    store: Any,
    run: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The importer gives a new item's times to its event as one text, for the time it
    wrote; with the application's clock behind the database's, linking the item's tags
    moves its `updated_at` on (the links' trigger), and the event shows that time."""
    monkeypatch.setattr(csv_copy, "utcnow", lambda: datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC))
    first = query(app, select(func.coalesce(func.max(Event.id), 0)))[0][0]
    assert run(store["id"], HEADER + "Tea,2.50,,,hot\r\nMilk,1.00,,,\r\n").exit_code == 0
    created = query(
        app,
        select(Event.data).where(Event.id > first, Event.type == "item.created").order_by(Event.id),
    )
    shown = [data["object"] for (data,) in created]
    assert [item["name"] for item in shown] == ["Tea", "Milk"]
    written = "2020-01-02T03:04:05+00:00"
    for item in shown:
        assert item == without_links(client.get(f"/items/{item['id']}", headers=as_alice).json)
        assert item["created_at"] == written
    tea, milk = shown
    assert tea["updated_at"] > written  # moved on by the link, to the database's clock
    assert milk["updated_at"] == written  # no tag: as written


def test_text_starting_with_a_quote_round_trips(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any, run: Any
) -> None:
    """Import strips exactly the one ' the export added: "'quoted" stays "'quoted"."""
    names = ["'quoted", "''twice", "=1+1", "+1", "-1", "@x", "plain"]
    for name in names:
        api.item(as_alice, store, name=name, description=name)
    exported = client.get(f"/stores/{store['id']}/items.csv").get_data()
    empty = api.store(as_alice, "Empty")
    assert run(empty["id"], exported).exit_code == 0
    got = query(app, select(Item.name, Item.description).where(Item.store_id == empty["id"]))
    assert sorted(got) == sorted((name, name) for name in names)


def test_an_empty_stock_cell_leaves_the_stock_as_it_is(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any, run: Any
) -> None:
    milk = api.item(as_alice, store, name="Milk", price="1.00", stock=5)
    before = query(app, select(StockMovement.id))
    result = run(store["id"], HEADER + "Milk,1.20,,,\r\n")
    assert result.exit_code == 0, result.output
    assert "0 created, 1 updated, 0 unchanged, 0 invalid." in result.output
    item = client.get(f"/items/{milk['id']}").json
    assert (item["stock"], item["price"]) == (5, 1.2)
    assert query(app, select(StockMovement.id)) == before  # no movement


def test_a_stock_only_change_writes_stock_moved_and_an_entry_but_no_item_updated(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any, run: Any
) -> None:
    """A movement writes no item.updated (§16): a row that changes only the stock
    tells it by its count's stock.moved; the audit log still has the change."""
    milk = api.item(as_alice, store, name="Milk", price="1.00", stock=5)
    first = query(app, select(func.max(Event.id)))[0][0]
    result = run(store["id"], HEADER + "Milk,1.00,,0,\r\n")
    assert result.exit_code == 0, result.output
    assert "0 created, 1 updated, 0 unchanged, 0 invalid." in result.output
    events = query(app, select(Event.type, Event.data).where(Event.id > first).order_by(Event.id))
    assert [kind for kind, _ in events] == ["stock.moved", "stock.out"]
    moved = events[0][1]["object"]
    assert (moved["item_id"], moved["delta"], moved["stock_after"]) == (milk["id"], -5, 0)
    entries = select(AuditEntry.action, AuditEntry.target_id, AuditEntry.changes).where(
        AuditEntry.action.like("item.%")
    )
    assert query(app, entries.order_by(AuditEntry.id))[-1] == (
        "item.updated",
        milk["id"],
        {"stock": [5, 0]},
    )


def test_the_counts_of_updated_items_move_in_the_files_order(
    app: Flask, api: CatalogFactory, as_alice: dict[str, str], store: Any, run: Any
) -> None:
    """The movements, and the crossings their events tell, follow the file's rows,
    whether a row also relinks its item's tags (A: its tag left out) or not (B)."""
    a = api.item(as_alice, store, name="A", stock=0)
    api.link(as_alice, a, api.tag(as_alice, store, "t"))
    b = api.item(as_alice, store, name="B", stock=0)
    first = query(app, select(func.max(Event.id)))[0][0]
    moved_before = query(app, select(func.max(StockMovement.id)))[0][0]
    result = run(store["id"], "name,price,stock,tags\r\nA,1,5,\r\nB,1,5,\r\n")
    assert result.exit_code == 0, result.output
    assert "0 created, 2 updated, 0 unchanged, 0 invalid." in result.output
    movements = select(StockMovement.item_id, StockMovement.delta).where(
        StockMovement.id > moved_before
    )
    assert query(app, movements.order_by(StockMovement.id)) == [(a["id"], 5), (b["id"], 5)]
    events = query(app, select(Event.type, Event.data).where(Event.id > first).order_by(Event.id))
    told = [(kind, data["object"]) for kind, data in events if kind.startswith("stock.")]
    assert [(kind, shown.get("item_id", shown["id"])) for kind, shown in told] == [
        ("stock.moved", a["id"]),
        ("stock.back_in", a["id"]),
        ("stock.moved", b["id"]),
        ("stock.back_in", b["id"]),
    ]


def test_each_event_shows_the_item_as_get_does(
    app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str], store: Any, run: Any
) -> None:
    """The events an import writes (on PostgreSQL, built by SQL: core/events/catalog.py
    ITEM_JSON) hold each item as GET returns it, and `previous` its old values."""
    assert run(store["id"], HEADER + "Tea,2.50,Green,,hot\r\n").exit_code == 0
    [(tea,)] = query(app, select(Item.id).where(Item.name == "Tea"))
    [(hot,)] = query(app, select(Tag.id).where(Tag.name == "hot"))
    with app.app_context():  # a time of whole seconds, which isoformat() writes without .000000
        db.session.execute(
            update(Item).where(Item.id == tea).values(created_at=datetime(2026, 1, 2, tzinfo=UTC))
        )
        db.session.commit()
    first = query(app, select(func.max(Event.id)))[0][0]
    header = "name,price,description,stock,tags,sku,status,low_stock_threshold\r\n"
    rows = [
        "Tea,3,,7,hot|leaf|cup,TEA-1,draft,2",  # every field changes
        'Milk,1.10,"Whole, 1 l",0,dairy,,archived,',
        "Salt,1234567.89,,,,S-1,,0",
        "Bread,0.00,Rye,12,,,,",
    ]
    result = run(store["id"], header + "\r\n".join(rows) + "\r\n")
    assert result.exit_code == 0, result.output
    events = query(app, select(Event.type, Event.data).where(Event.id > first).order_by(Event.id))
    # The tags the file made come first, in its order, each as GET shows it, each with
    # its audit entry (they had neither: a mirror met them only inside items).
    made = [data["object"] for _, data in events[:3]]
    assert [kind for kind, _ in events[:3]] == ["tag.created"] * 3
    assert [tag["name"] for tag in made] == ["leaf", "cup", "dairy"]
    for tag in made:
        assert tag == without_links(client.get(f"/tags/{tag['id']}", headers=as_alice).json)
    entries = select(AuditEntry.target_id, AuditEntry.changes, AuditEntry.actor_type).where(
        AuditEntry.action == "tag.created", AuditEntry.target_id != hot
    )
    assert query(app, entries.order_by(AuditEntry.id)) == [
        (tag["id"], {"name": [None, tag["name"]], "store_id": [None, store["id"]]}, "system")
        for tag in made
    ]
    written = [(kind, data) for kind, data in events if kind.startswith("item.")]
    assert [kind for kind, _ in written] == ["item.updated"] + ["item.created"] * 3
    # Each count written moves stock (a count of 0 too; Salt has none); Tea's 0 -> 7
    # is back in stock.
    milk, bread = written[1][1]["object"]["id"], written[3][1]["object"]["id"]
    moved = [(kind, data["object"]) for kind, data in events if kind.startswith("stock.")]
    assert [(kind, shown.get("item_id", shown["id"])) for kind, shown in moved] == [
        ("stock.moved", tea),
        ("stock.back_in", tea),
        ("stock.moved", milk),
        ("stock.moved", bread),
    ]
    # Each movement's event shows it as GET does (the new items' are written by SQL).
    for _, shown in moved[::2] + moved[3:]:
        path = f"/items/{shown['item_id']}/stock/{shown['id']}"
        assert shown == without_links(client.get(path, headers=as_alice).json)
    for _, data in written:
        item = client.get(f"/items/{data['object']['id']}", headers=as_alice).json
        assert data["object"] == without_links(item)
        assert [type(data["object"][k]) for k in ("price", "stock")] == [float, int]
    updated = written[0][1]
    assert updated["object"]["created_at"] == "2026-01-02T00:00:00+00:00"
    assert updated["previous"] == {
        "description": "Green",
        "price": 2.5,
        "stock": 0,
        "tags": [{"id": hot, "name": "hot"}],
        "sku": None,
        "status": "active",
        "low_stock_threshold": None,
    }
    assert list(updated["previous"]) == [k for k in updated["object"] if k in updated["previous"]]
    assert [data["object"]["price"] for _, data in written] == [3.0, 1.1, 1234567.89, 0.0]
