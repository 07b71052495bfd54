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

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import marshmallow as ma
from sqlalchemy import delete, func, insert, literal, select, update
from sqlalchemy.orm import joinedload, selectinload

from core.catalog.csv_format import COLUMNS, TAG_SEPARATOR, restore
from core.catalog.stock import MAX_QUANTITY
from core.events.outbox import as_json, changes, record
from core.web.fields import Integer, Money, Name, OptionalText
from db import db, unicode_lower
from models import Item, StockMovement, Store, Tag, item_tags
from models.types import utcnow

CHUNK = 1000  # rows per round of statements
IGNORED = {"id", "store_id", "created_at", "updated_at"}  # the export's, not the importer's
REQUIRED = ("name", "price")
MAX_REPORTED = 100  # errors listed; the count covers them all


class UnreadableFileError(Exception):
    """The file cannot be imported at all (no header, a missing column)."""


class RowSchema(ma.Schema):
    name = Name(required=True)
    price = Money(required=True)
    description = OptionalText(2000, multiline=True)
    stock = Integer(allow_none=True, validate=ma.validate.Range(0, MAX_QUANTITY))
    tags = ma.fields.List(Name(validate=ma.validate.ContainsNoneOf(TAG_SEPARATOR)))


@dataclass
class Summary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    invalid: int = 0
    errors: list[str] = field(default_factory=list)

    def error(self, line: int, column: str | None, message: str) -> None:
        self.invalid += 1
        if len(self.errors) < MAX_REPORTED:
            where = f"line {line}" + (f", column {column}" if column else "")
            self.errors.append(f"{where}: {message}")


def _cells(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row as the schema takes it: ' stripped, empty cells as the contract says."""
    data: dict[str, Any] = {}
    for column in ("name", "price", "description", "stock", "tags"):
        if column not in row:
            continue
        cell = restore(row[column] or "")
        if column == "tags":
            data["tags"] = [name for name in cell.split(TAG_SEPARATOR)] if cell else []
        elif column == "stock":
            data["stock"] = cell.strip() or None  # empty: unchanged (0 when new)
        elif column == "description":
            data["description"] = cell or None
        else:
            data[column] = cell
    return data


def read_rows(text: IO[str], summary: Summary) -> Iterator[tuple[int, dict[str, Any]]]:
    """Valid rows with their line numbers; invalid ones go to ``summary``."""
    reader = csv.DictReader(text)
    if reader.fieldnames is None:
        raise UnreadableFileError("The file is empty: it needs a header row (name,price,...).")
    columns = [name.strip().lower() for name in reader.fieldnames]
    reader.fieldnames = columns
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise UnreadableFileError(f"Line 1: missing column(s) {', '.join(missing)}.")
    unknown = sorted(set(columns) - set(COLUMNS))
    if unknown:
        raise UnreadableFileError(f"Line 1: unknown column(s) {', '.join(unknown)}.")
    schema = RowSchema()
    seen: dict[str, int] = {}
    line = reader.line_num + 1
    for row in reader:
        start, line = line, reader.line_num + 1
        if None in row:  # more cells than columns
            summary.error(
                start,
                None,
                f"{len(columns) + len(row[None])} cells, expected at most {len(columns)}.",
            )
            continue
        try:
            data = schema.load(_cells(row))
        except ma.ValidationError as exc:
            messages_by_column: dict[str, Any] = exc.messages  # type: ignore[assignment]
            for column, messages in sorted(messages_by_column.items()):
                summary.error(start, column, " ".join(_flatten(messages)))
            continue
        key = unicode_lower(data["name"])  # as the database lowercases it
        if key in seen:
            summary.error(start, "name", f"{data['name']!r} is on line {seen[key]} already.")
            continue
        seen[key] = start
        yield start, data


def _flatten(messages: Any) -> list[str]:
    if isinstance(messages, dict):
        return [m for value in messages.values() for m in _flatten(value)]
    return [str(m) for m in messages] if isinstance(messages, list) else [str(messages)]


class Importer:
    def __init__(self, store: Store, summary: Summary) -> None:
        self.store = store
        self.summary = summary
        found = db.session.execute(
            select(func.lower(Tag.name), Tag.id).where(Tag.store_id == store.id)
        )
        self.tags: dict[str, int] = {name: tag_id for name, tag_id in found}

    def _ensure_tags(self, lowered: dict[str, str], names: list[str]) -> None:
        """Create the tags among ``names`` that the store lacks: one statement."""
        new = {lowered[name]: name for name in names if lowered[name] not in self.tags}
        if new:
            created = db.session.execute(
                insert(Tag).returning(func.lower(Tag.name), Tag.id, sort_by_parameter_order=True),
                [{"name": name, "store_id": self.store.id} for name in new.values()],
            )
            self.tags.update({name: tag_id for name, tag_id in created})

    def chunk(self, rows: list[dict[str, Any]]) -> None:
        """Create or update the items of ``rows``: a fixed number of statements."""
        # In the order the file names them: new tags get their ids (the order an
        # export lists them in) in that order.
        tag_names = list(dict.fromkeys(name for row in rows for name in row.get("tags") or ()))
        lowered = _lowered([row["name"] for row in rows] + tag_names)
        self._ensure_tags(lowered, tag_names)
        by_name = {lowered[row["name"]]: row for row in rows}
        existing = {
            key: item
            for item, key in db.session.execute(
                select(Item, func.lower(Item.name))
                .where(Item.store_id == self.store.id, func.lower(Item.name).in_(by_name))
                .with_for_update()
            )
        }
        # As GET returned them before the import: the `previous` of their events.
        before = _as_json([item.id for item in existing.values()])
        links: dict[int, set[int]] = {}
        if existing:
            ids = [item.id for item in existing.values()]
            for item_id, tag_id in db.session.execute(
                select(item_tags.c.item_id, item_tags.c.tag_id).where(item_tags.c.item_id.in_(ids))
            ):
                links.setdefault(item_id, set()).add(tag_id)
        wanted = {
            key: sorted({self.tags[lowered[name]] for name in row.get("tags") or ()})
            for key, row in by_name.items()
        }
        now = utcnow()
        changes, relink, movements = [], [], []
        new_rows = []
        for key, row in by_name.items():
            item = existing.get(key)
            if item is None:
                new_rows.append((key, row))
                continue
            fields = {"name": row["name"], "price": row["price"]}
            if "description" in row:
                fields["description"] = row["description"]
            changed = {k: v for k, v in fields.items() if getattr(item, k) != v}
            stock = row.get("stock")
            if stock is not None and stock != item.stock:
                changed["stock"] = stock
                movements.append(_count(item.id, stock - item.stock, stock, now))
            if set(wanted[key]) != links.get(item.id, set()):
                relink.append(item.id)
            if changed or item.id in relink:
                changes.append(
                    {
                        "id": item.id,
                        **fields,
                        "stock": stock if stock is not None else item.stock,
                        "updated_at": now,
                    }
                )
                self.summary.updated += 1
            else:
                self.summary.unchanged += 1
            db.session.expunge(item)
        if changes:
            db.session.execute(
                update(Item),  # ORM bulk UPDATE by primary key: one executemany
                changes,
            )
        keys = {item.id: key for key, item in existing.items()}
        if relink:
            db.session.execute(delete(item_tags).where(item_tags.c.item_id.in_(relink)))
        new_links = [
            {"item_id": item_id, "tag_id": tag_id}
            for item_id in relink
            for tag_id in wanted[keys[item_id]]
        ]
        if new_rows:
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
                            "created_at": now,
                            "updated_at": now,
                        }
                        for _, row in new_rows
                    ],
                )
                .scalars()
                .all()
            )
            for item_id, (key, row) in zip(created, new_rows, strict=True):
                new_links += [{"item_id": item_id, "tag_id": tag_id} for tag_id in wanted[key]]
                if row.get("stock") is not None:
                    movements.append(_count(item_id, row["stock"], row["stock"], now))
            self.summary.created += len(created)
        if new_links:
            db.session.execute(insert(item_tags), new_links)
        if movements:
            db.session.execute(insert(StockMovement), movements)
        self._record(before, [c["id"] for c in changes], list(created) if new_rows else [])

    def _record(self, before: dict[int, Any], updated: list[int], created: list[int]) -> None:
        """One event per item created or changed, committed with the rows (§10)."""
        after = _as_json([*updated, *created], release=True)
        owner = self.store.owner_id
        for item_id in updated:
            previous = changes(before[item_id], after[item_id])
            if previous:
                record(
                    "item.updated",
                    store_id=self.store.id,
                    obj=after[item_id],
                    previous=previous,
                    owner_id=owner,
                )
        for item_id in created:
            record("item.created", store_id=self.store.id, obj=after[item_id], owner_id=owner)


def _as_json(ids: list[int], *, release: bool = False) -> dict[int, Any]:
    """Items as GET returns them, by id (read now, in the import's transaction)."""
    if not ids:
        return {}
    items = db.session.scalars(
        select(Item)
        .where(Item.id.in_(ids))
        .options(joinedload(Item.store), selectinload(Item.tags))
        .execution_options(populate_existing=True)
    )
    found = {}
    for item in items:
        found[item.id] = as_json(item)
        if release:  # the import holds no ORM object per row
            db.session.expunge(item)
    return found


def _lowered(texts: list[str]) -> dict[str, str]:
    """Each text as the database lowercases it (one statement): names are compared
    by the database's lower() everywhere (the unique indexes use it), which Python's
    str.lower() does not always match ("İ")."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return {}
    values = db.session.execute(select(*(func.lower(literal(text)) for text in unique))).one()
    return dict(zip(unique, values, strict=True))


def _count(item_id: int, delta: int, after: int, now: Any) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "delta": delta,
        "stock_after": after,
        "reason": "count",
        "reference": "import",
        "user_id": None,
        "created_at": now,
    }


def import_items(
    store: Store,
    raw: IO[bytes],
    *,
    dry_run: bool = False,
    skip_invalid: bool = False,
    progress: Callable[[int], None] = lambda _rows: None,
) -> Summary:
    """Import ``raw`` (a binary file) into ``store``; commits unless nothing may be
    written (invalid rows without ``skip_invalid``, or ``dry_run``)."""
    summary = Summary()
    # utf-8-sig drops a BOM; newline="" lets csv read line breaks inside quoted cells.
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    importer = Importer(store, summary)
    chunk: list[dict[str, Any]] = []
    try:
        for _line, row in read_rows(text, summary):
            chunk.append(row)
            if len(chunk) == CHUNK:
                importer.chunk(chunk)
                progress(len(chunk))
                chunk = []
        if chunk:
            importer.chunk(chunk)
            progress(len(chunk))
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
    else:
        db.session.commit()
    return summary
