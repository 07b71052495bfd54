"""``flask import-items``: a CSV file (the export's columns) into a store (§9).

The file is streamed (a 50 MB file is never read whole) and written a chunk of rows
at a time with a few statements per chunk: rows whose name the store already has
update that item, the others create one; each row sets the item's tags exactly
(created in the store as needed) and, when its ``stock`` cell is not empty, the
stock through one ``count`` movement. Everything happens in one transaction: any
invalid row, reported by line and column, means nothing is written (unless
``skip_invalid``), and ``dry_run`` always rolls back. The store's items being
updated are locked while the import runs, so counts are not lost to a concurrent
movement.
"""

from __future__ import annotations

import bisect
import csv
import io
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import marshmallow as ma
from sqlalchemy import String, cast, delete, func, insert, literal, or_, select, update
from sqlalchemy.orm import joinedload, selectinload

from core.auth import audit
from core.catalog import stock
from core.catalog.csv_format import COLUMNS, restore
from core.catalog.stock import MAX_STOCK
from core.events.catalog import BULK_IDS, movements_written
from core.events.outbox import as_json, changes, hold_stores, record
from core.web.fields import TAG_SEPARATOR, Description, Integer, Money, Name, Quantity, Sku, TagName
from db import BULK_TABLES, analyze, db, unicode_lower
from models import Item, Store, Tag, item_tags
from models.item import STATUSES
from models.types import utcnow

CHUNK = 1000  # rows per round of statements
IGNORED = {"id", "store_id", "created_at", "updated_at"}  # the export's, not the importer's
REQUIRED = ("name", "price")
MAX_REPORTED = 100  # errors listed by the CLI; the count covers them all


class UnreadableFileError(Exception):
    """The file cannot be imported at all (no header, a missing column)."""


class ImportConflictError(Exception):
    """Another change took a name or SKU of the file while the import ran (matched
    against the store before, inserted after): nothing was written."""

    def __init__(self, what: str, value: str | None) -> None:
        named = f" {value!r}" if value is not None else ""
        super().__init__(
            f"An item with the {what}{named} was made in the store while the import ran: "
            "nothing was written. Import the file again (its row then updates that item)."
        )


class RowSchema(ma.Schema):
    """A row as the API takes an item (the same field rules); a cell is text."""

    name = Name(required=True)
    price = Money(required=True)
    description = Description()
    stock = Quantity(0, strict=False, allow_none=True)
    tags = ma.fields.List(TagName())
    # §13: a row with a SKU updates the item with that SKU (else the one of its name).
    sku = Sku()
    status = ma.fields.String(allow_none=True, validate=ma.validate.OneOf(STATUSES))
    low_stock_threshold = Integer(allow_none=True, validate=ma.validate.Range(0, MAX_STOCK))


# The columns a row sets (the others are the export's: IGNORED).
ROW_COLUMNS = (
    "name",
    "price",
    "description",
    "stock",
    "tags",
    "sku",
    "status",
    "low_stock_threshold",
)


@dataclass
class Summary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    invalid: int = 0
    # The first ``listed`` invalid rows: {"line", "column" (or None: the whole row), "message"}.
    errors: list[dict[str, Any]] = field(default_factory=list)
    listed: int = MAX_REPORTED

    def error(self, line: int, column: str | None, message: str) -> None:
        """An invalid row, for one reason."""
        self.invalid_row(line, [(column, message)])

    def invalid_row(self, line: int, problems: list[tuple[str | None, str]]) -> None:
        """An invalid row (counted once), each of its problems (column, message)
        listed in line order (a deferred row is judged last)."""
        self.invalid += 1
        for column, message in problems:
            entry = {"line": line, "column": column, "message": message}
            bisect.insort(self.errors, entry, key=lambda e: int(e["line"]))
        del self.errors[self.listed :]

    def lines(self) -> list[str]:
        """The listed errors as the CLI prints them."""
        return [
            f"line {e['line']}"
            + (f", column {e['column']}" if e["column"] else "")
            + f": {e['message']}"
            for e in self.errors
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "invalid": self.invalid,
            "errors": self.errors,
        }


def _cells(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row as the schema takes it: ' stripped, empty cells as the contract says."""
    data: dict[str, Any] = {}
    for column in ROW_COLUMNS:
        if column not in row:
            continue
        cell = restore(row[column] or "")
        if column == "tags":
            data["tags"] = [name for name in cell.split(TAG_SEPARATOR)] if cell else []
        elif column in ("stock", "status"):
            data[column] = cell.strip() or None  # empty: unchanged (0 / active when new)
        elif column in ("sku", "low_stock_threshold"):
            data[column] = cell.strip() or None  # empty: none
        elif column == "description":
            data["description"] = cell or None
        else:
            data[column] = cell
    return data


def _some(names: list[str], most: int = 5, longest: int = 40) -> str:
    """The first ``most`` names, each cut at ``longest`` characters, and how many more:
    the message goes into the job's error and its event, whatever the header holds."""
    shown = [repr(n if len(n) <= longest else n[:longest] + "...") for n in names[:most]]
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(shown) + more


def read_header(reader: csv.DictReader[str]) -> list[str]:
    """The file's columns (lowercased), or UnreadableFileError."""
    if reader.fieldnames is None:
        raise UnreadableFileError("The file is empty: it needs a header row (name,price,...).")
    columns = [name.strip().lower() for name in reader.fieldnames]
    reader.fieldnames = columns
    missing = [name for name in REQUIRED if name not in columns]
    unknown = [name for name in columns if name not in COLUMNS]
    # Twice, a column's last cell won silently: which one the file meant is unknown.
    repeated = sorted(n for n, times in Counter(columns).items() if times > 1 and n in COLUMNS)
    problems = [f"missing column(s) {', '.join(missing)}"] if missing else []
    problems += [f"unknown column(s) {_some(unknown)}"] if unknown else []
    problems += (
        [f"column(s) {', '.join(repr(n) for n in repeated)} more than once"] if repeated else []
    )
    if problems:
        raise UnreadableFileError(
            f"Line 1: {'; '.join(problems)}. Expected the export's header, "
            f"{','.join(COLUMNS)}, or any of its columns in any order "
            f"({' and '.join(REQUIRED)} required)."
        )
    return columns


def reading(reader: Any) -> Iterator[list[str]]:
    """The rows of a csv reader; a file it cannot read (a cell over the csv module's
    131,072 characters, a NUL byte) raises csv.Error naming the line it stopped at."""
    while True:
        try:
            cells: list[str] = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise csv.Error(f"line {reader.line_num}: {exc}") from None
        yield cells


def read_rows(text: IO[str], summary: Summary) -> Iterator[tuple[int, dict[str, Any]]]:
    """Valid rows with their line numbers; invalid ones go to ``summary``."""
    header = csv.DictReader(text)
    columns = read_header(header)
    schema = RowSchema()
    seen: dict[str, int] = {}
    skus: dict[str, int] = {}
    # The rows as csv.DictReader reads them (blank lines skipped, short rows padded),
    # from its own reader: each row's first line counts the blank lines before it.
    reader = header.reader
    line = reader.line_num + 1
    for cells in reading(reader):
        if not cells:  # a blank line: the next row starts after it
            line = reader.line_num + 1
            continue
        start, line = line, reader.line_num + 1
        if len(cells) > len(columns):
            summary.error(start, None, f"{len(cells)} cells, expected at most {len(columns)}.")
            continue
        row = dict(zip(columns, cells + [""] * (len(columns) - len(cells)), strict=True))
        try:
            data = schema.load(_cells(row))
        except ma.ValidationError as exc:
            summary.invalid_row(start, problems_of(exc))
            continue
        key = unicode_lower(data["name"])  # as the database lowercases it
        if key in seen:
            summary.error(start, "name", f"{data['name']!r} is on line {seen[key]} already.")
            continue
        if data.get("sku") is not None:
            if data["sku"] in skus:
                summary.error(
                    start, "sku", f"{data['sku']!r} is on line {skus[data['sku']]} already."
                )
                continue
            skus[data["sku"]] = start
        seen[key] = start
        yield start, data


def problems_of(exc: ma.ValidationError) -> list[tuple[str | None, str]]:
    """What RowSchema found wrong with a row: (column, message), by column."""
    by_column: dict[str, Any] = exc.messages  # type: ignore[assignment]
    return [(column, " ".join(_flatten(text))) for column, text in sorted(by_column.items())]


def _flatten(messages: Any) -> list[str]:
    if isinstance(messages, dict):
        return [m for value in messages.values() for m in _flatten(value)]
    return [str(m) for m in messages] if isinstance(messages, list) else [str(messages)]


class Importer:
    """Writes the rows a chunk at a time, judging them as if the file were one chunk:
    an item is updated by one row of the whole file (the first), and a row that renames
    its item to a name another item holds waits (``deferred``) until the end of the
    file, when a later row may have renamed that item: then the deferred rows are
    written together (two items may swap names), or each is an invalid row."""

    def __init__(
        self,
        store: Store,
        summary: Summary,
        user_id: int | None = None,
        source: audit.Origin = audit.SYSTEM,
    ) -> None:
        self.store = store
        self.summary = summary
        self.user_id = user_id  # whose the counts' movements are
        self.source = source  # who asked for the import, as the audit log names them
        found = db.session.execute(
            select(func.lower(Tag.name), Tag.id).where(Tag.store_id == store.id)
        )
        self.tags: dict[str, int] = {name: tag_id for name, tag_id in found}
        self.written: dict[int, int] = {}  # item id: the line that updated it
        self.waiting: dict[int, int] = {}  # item id: the deferred line that will
        self.deferred: list[dict[str, Any]] = []
        self.final = False
        # What the rows are matched against is the store before the import: the
        # names and SKUs that items written by an earlier chunk let go of.
        self.old_names: dict[str, int] = {}
        self.old_skus: dict[str, int] = {}
        self.keys: dict[int, str] = {}  # item id: its name, lowered, when matched

    def finish(self) -> int:
        """Write the deferred rows, as one last chunk; how many there were."""
        rows, self.deferred, self.final = self.deferred, [], True
        self.waiting.clear()
        if rows:
            self.chunk(rows)
        return len(rows)

    def _ensure_tags(self, lowered: dict[str, str], names: list[str]) -> None:
        """Create the tags among ``names`` that the store lacks: one statement."""
        new: dict[str, str] = {}  # lowered: the file's first spelling (as PostgreSQL's)
        for name in names:
            if lowered[name] not in self.tags:
                new.setdefault(lowered[name], name)
        if not new:
            return
        made = db.session.scalars(
            insert(Tag).returning(Tag, sort_by_parameter_order=True),
            [{"name": name, "store_id": self.store.id} for name in new.values()],
        ).all()
        for tag in made:
            self.tags[lowered[tag.name]] = tag.id
            # tag.created, before the events of the items that name it (§10).
            shown = as_json(tag)
            record("tag.created", store_id=self.store.id, obj=shown, owner_id=self.store.owner_id)
            changes = audit.created(shown)
            audit.record(
                "tag.created", "tag", tag.id, changes, store_id=self.store.id, source=self.source
            )
            db.session.expunge(tag)  # an import holds no ORM object per row

    def _matches(self, by_name: dict[str, dict[str, Any]]) -> dict[str, Item]:
        """The items the rows update, locked, by the rows' lowered names: the item with
        the row's SKU, else the one with its name (§13). An item two rows would update
        (one by SKU, one by name) is the first one's; the second row is invalid."""
        skus = [row["sku"] for row in by_name.values() if row.get("sku")]
        found = db.session.execute(
            select(Item, func.lower(Item.name))
            .where(
                Item.store_id == self.store.id,
                or_(func.lower(Item.name).in_(by_name), Item.sku.in_(skus)),
            )
            .with_for_update()
        ).all()
        by_sku = {item.sku: item for item, _ in found if item.sku is not None}
        named = {key: item for item, key in found}
        matches: dict[str, Item] = {}
        claimed: dict[int, int] = {}  # item id: line, in this chunk
        self.keys.update({item.id: key for item, key in found})
        for key, row in list(by_name.items()):
            item_id = self.old_skus.get(row.get("sku") or "")
            item = None if item_id else by_sku.get(row.get("sku"))
            if item_id is None and item is None:
                item_id = self.old_names.get(key)
                item = None if item_id else named.get(key)
            if item_id is not None:  # an item of an earlier chunk had it
                self.summary.error(
                    row["_line"],
                    "name",
                    f"Item {item_id} is updated by line {self.written[item_id]} already.",
                )
                del by_name[key]
                continue
            if item is None:
                continue
            earlier = claimed.get(item.id) or self.written.get(item.id)
            earlier = earlier or self.waiting.get(item.id)
            if earlier is not None:
                self.summary.error(
                    row["_line"], "name", f"Item {item.id} is updated by line {earlier} already."
                )
                del by_name[key]
                continue
            claimed[item.id] = row["_line"]
            matches[key] = item
        for key in self._held(matches, named, claimed):
            # Matched by SKU, renamed to a name another item keeps: fine if a row of
            # this chunk renames that item; maybe if a later row does (wait and see).
            item, holder = matches[key], named[key]
            row = by_name.pop(key)
            del matches[key]
            del claimed[item.id]
            if not self.final and holder.id not in self.written:
                self.deferred.append(row)
                self.waiting[item.id] = row["_line"]
                continue
            self.summary.error(
                row["_line"],
                "name",
                f"{row['name']!r} is the name of item {holder.id}, which no valid row renames.",
            )
        self.written.update(claimed)
        return matches

    @staticmethod
    def _held(
        matches: dict[str, Item], named: dict[str, Item], claimed: dict[int, int]
    ) -> list[str]:
        """The matched rows (keys, in the file's order) whose new name another item
        keeps, that no row of this chunk renames; then, along each chain, the row that
        renames an item onto the name of one of those rows' items (that item keeps its
        name while its row waits or is refused). Each row is found once: linear."""
        holders = {key: named[key].id for key in matches if key in named}
        holders = {key: held for key, held in holders.items() if held != matches[key].id}
        follower = {held: key for key, held in holders.items()}  # item id: the row it holds up
        found = [key for key, held in holders.items() if held not in claimed]
        chained: set[str] = set()
        while found:
            key = found.pop()
            if key not in chained:
                chained.add(key)
                if (after := follower.get(matches[key].id)) is not None:
                    found.append(after)
        return sorted(chained, key=lambda key: claimed[matches[key].id])

    def chunk(self, rows: list[dict[str, Any]]) -> None:
        """Create or update the items of ``rows``: a fixed number of statements."""
        tag_names = list(dict.fromkeys(name for row in rows for name in row.get("tags") or ()))
        lowered = _lowered([row["name"] for row in rows] + tag_names)
        by_name = {lowered[row["name"]]: row for row in rows}
        existing = self._matches(by_name)
        # The tags of the rows still valid (a row refused or deferred by the matching
        # writes nothing), in the order the file names them: new tags get their ids
        # (the order an export lists them in) in that order.
        self._ensure_tags(
            lowered, [name for row in by_name.values() for name in row.get("tags") or ()]
        )
        wanted = {
            key: sorted({self.tags[lowered[name]] for name in row.get("tags") or ()})
            for key, row in by_name.items()
        }
        now = utcnow()
        # As GET returned them before the import: the `previous` of their events.
        before = items_as_json([item.id for item in existing.values()])
        relinked, updated = self._update(existing, by_name, wanted, now)
        new_rows = [(key, row) for key, row in by_name.items() if key not in existing]
        new_links = [(item_id, wanted[key]) for item_id, key in relinked.items()]
        created = self._create(new_rows, wanted, now)
        new_links += created
        link_rows = [{"item_id": item_id, "tag_id": t} for item_id, tags in new_links for t in tags]
        if link_rows:
            db.session.execute(insert(item_tags), link_rows)
        new_ids = [item_id for item_id, _ in created]
        record_item_events(self.store, before, updated, new_ids, self.source)
        movements_written(self.store, [*updated, *new_ids], now, set(new_ids))

    def _update(
        self,
        existing: dict[str, Item],
        by_name: dict[str, dict[str, Any]],
        wanted: dict[str, list[int]],
        now: datetime,
    ) -> tuple[dict[int, str], list[int]]:
        """Update the existing items whose row differs; returns the ids (with their
        keys) whose tags must be linked again, their old links already removed, and the
        ids of every item updated."""
        links: dict[int, set[int]] = {}
        if existing:
            ids = [item.id for item in existing.values()]
            for item_id, tag_id in db.session.execute(
                select(item_tags.c.item_id, item_tags.c.tag_id).where(item_tags.c.item_id.in_(ids))
            ):
                links.setdefault(item_id, set()).add(tag_id)
        updates: list[dict[str, Any]] = []
        counts: list[stock.Count] = []
        relink: dict[int, str] = {}
        for key, row in by_name.items():  # in the file's order, as the movements are
            item = existing.get(key)
            if item is None:
                continue
            fields = {"name": row["name"], "price": row["price"]}
            for optional in ("description", "sku", "low_stock_threshold"):
                if optional in row:
                    fields[optional] = row[optional]
            if key != self.keys[item.id]:
                self.old_names[self.keys[item.id]] = item.id
            if item.sku is not None and fields.get("sku", item.sku) != item.sku:
                self.old_skus[item.sku] = item.id
            if row.get("status") is not None:
                fields["status"] = row["status"]
            changed = any(getattr(item, k) != v for k, v in fields.items())
            new_stock = row.get("stock")
            if new_stock is not None and new_stock != item.stock:
                counts.append(stock.Count(item.id, item.stock, new_stock))
                changed = True
            if set(wanted[key]) != links.get(item.id, set()):
                relink[item.id] = key
            if changed or item.id in relink:
                updates.append({"id": item.id, **fields, "updated_at": now})
                self.summary.updated += 1
            else:
                self.summary.unchanged += 1
            db.session.expunge(item)
        if updates:
            self._free_names(existing, updates)
            db.session.execute(
                update(Item),  # ORM bulk UPDATE by primary key: one executemany
                updates,
            )
        stock.set_counts(counts, reference="import", user_id=self.user_id, now=now)
        if relink:
            db.session.execute(delete(item_tags).where(item_tags.c.item_id.in_(relink)))
        return relink, [row["id"] for row in updates]

    def _free_names(self, existing: dict[str, Item], updates: list[dict[str, Any]]) -> None:
        """Give the items being renamed a placeholder name first (one statement): the
        unique index, checked row by row, then judges only the final names, in
        whatever order the rows are written (two items may swap names)."""
        old = {item.id: item.name for item in existing.values()}
        renamed = [u["id"] for u in updates if u["name"] != old[u["id"]]]
        if renamed:
            db.session.execute(
                update(Item)
                .where(Item.id.in_(renamed))
                .values(name="\x1fimport " + cast(Item.id, String)),
                execution_options={"synchronize_session": False},
            )

    def _create(
        self,
        new_rows: list[tuple[str, dict[str, Any]]],
        wanted: dict[str, list[int]],
        now: datetime,
    ) -> list[tuple[int, list[int]]]:
        """Insert the new items (and their first stock movements); returns each new
        item's id with the tag ids to link."""
        if not new_rows:
            return []
        created = (
            db.session.execute(
                insert(Item).returning(Item.id, sort_by_parameter_order=True),
                [
                    {
                        "name": row["name"],
                        "price": row["price"],
                        "description": row.get("description"),
                        "stock": row.get("stock") or 0,
                        "store_id": self.store.id,
                        "sku": row.get("sku"),
                        "status": row.get("status") or "active",
                        "low_stock_threshold": row.get("low_stock_threshold"),
                        "created_at": now,
                        "updated_at": now,
                    }
                    for _, row in new_rows
                ],
            )
            .scalars()
            .all()
        )
        self.summary.created += len(created)
        pairs = list(zip(created, new_rows, strict=True))
        stock.initial_counts(
            {item_id: row["stock"] for item_id, (_, row) in pairs if row.get("stock") is not None},
            reference="import",
            user_id=self.user_id,
            now=now,
        )
        return [(item_id, wanted[key]) for item_id, (key, _) in pairs]


def record_item_events(
    store: Store,
    before: dict[int, Any],
    updated: list[int],
    created: list[int],
    source: audit.Origin,
) -> None:
    """One event and one audit entry per item an import created or changed, committed
    with the rows (§10, §15), but no event where the stock alone changed (its count's
    stock.moved tells it); ``before``: the changed items as GET returned them before
    the import; ``source``: who asked for it."""
    after = items_as_json([*updated, *created], release=True)
    for item_id in updated:
        previous = changes(before[item_id], after[item_id])
        if set(previous) - {"stock"}:  # the stock alone: its count's stock.moved (§16)
            record(
                "item.updated",
                store_id=store.id,
                obj=after[item_id],
                previous=previous,
                owner_id=store.owner_id,
            )
        if previous:
            changed = audit.updated(before[item_id], after[item_id])
            audit.record("item.updated", "item", item_id, changed, store_id=store.id, source=source)
    for item_id in created:
        record("item.created", store_id=store.id, obj=after[item_id], owner_id=store.owner_id)
        changed = audit.created(after[item_id])
        audit.record("item.created", "item", item_id, changed, store_id=store.id, source=source)


def items_as_json(ids: list[int], *, release: bool = False) -> dict[int, Any]:
    """Items as GET returns them, by id (read now, in the import's transaction), in
    statements of BULK_IDS ids: an IN list as long as the file would pass
    PostgreSQL's limit of 65,535 parameters."""
    found = {}
    for start in range(0, len(ids), BULK_IDS):
        items = db.session.scalars(
            select(Item)
            .where(Item.id.in_(ids[start : start + BULK_IDS]))
            .options(joinedload(Item.store), selectinload(Item.tags))
            .execution_options(populate_existing=True)
        )
        for item in items:
            found[item.id] = as_json(item)
            if release:  # the import holds no ORM object per row
                db.session.expunge(item)
    return found


# Texts lowercased per statement: a statement's size never grows with the number of
# distinct names and tags (PostgreSQL allows at most 1,664 columns in a SELECT).
LOWER_BATCH = 500


def _lowered(texts: list[str]) -> dict[str, str]:
    """Each text as the database lowercases it (a statement per LOWER_BATCH texts):
    names are compared by the database's lower() everywhere (the unique indexes use
    it), which Python's str.lower() does not always match ("İ")."""
    unique = list(dict.fromkeys(texts))
    lowered: dict[str, str] = {}
    for start in range(0, len(unique), LOWER_BATCH):
        batch = unique[start : start + LOWER_BATCH]
        values = db.session.execute(select(*(func.lower(literal(text)) for text in batch))).one()
        lowered.update(zip(batch, values, strict=True))
    return lowered


def import_items(
    store: Store,
    raw: IO[bytes],
    *,
    dry_run: bool = False,
    skip_invalid: bool = False,
    progress: Callable[[int], None] = lambda _rows: None,
    listed: int = MAX_REPORTED,
    commit: bool = True,
    user_id: int | None = None,
    source: audit.Origin = audit.SYSTEM,
) -> Summary:
    """Import ``raw`` (a binary file) into ``store``; commits unless nothing may be
    written (invalid rows without ``skip_invalid``, or ``dry_run``), which rolls back.
    With ``commit=False`` the rows are left in the session's open transaction, for
    the caller to commit with its own record of the import (a job's result). The
    counts' movements are ``user_id``'s (the caller's; None from the command line,
    §8); the audit entries' actor is ``source``'s (the command line's: system). On
    PostgreSQL, the file goes through COPY and set-based statements
    (csv_copy.py)."""
    # The store held first, until the commit (core/events/outbox.py hold_stores): a
    # deletion of it waits for the import, whose events come before its store.deleted.
    hold_stores({store.id})
    if db.session.get_bind().dialect.name == "postgresql":
        from core.catalog import csv_copy

        return csv_copy.import_items(
            store,
            raw,
            dry_run=dry_run,
            skip_invalid=skip_invalid,
            progress=progress,
            listed=listed,
            commit=commit,
            user_id=user_id,
            source=source,
        )
    summary = Summary(listed=listed)
    # utf-8-sig drops a BOM; newline="" lets csv read line breaks inside quoted cells.
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    importer = Importer(store, summary, user_id, source)
    chunk: list[dict[str, Any]] = []
    try:
        for line, row in read_rows(text, summary):
            row["_line"] = line
            chunk.append(row)
            if len(chunk) == CHUNK:
                importer.chunk(chunk)
                progress(len(chunk))
                chunk = []
        if chunk:
            importer.chunk(chunk)
            progress(len(chunk))
        importer.finish()
    except UnicodeDecodeError as exc:
        db.session.rollback()
        raise UnreadableFileError(f"The file is not UTF-8 text ({exc.reason}).") from None
    except csv.Error as exc:
        db.session.rollback()
        raise UnreadableFileError(f"Not a CSV file this importer can read: {exc}.") from None
    finally:
        text.detach()  # the caller's file stays the caller's to close
    if dry_run or (summary.invalid and not skip_invalid):
        db.session.rollback()
    elif commit:
        analyze(*BULK_TABLES)  # commits
    return summary
