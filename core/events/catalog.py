"""The catalog's events that need more than one line: stock movements and their
crossings, a store's deletion. Every path that moves stock records through here."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import joinedload, selectinload

from core.auth.audit import NOT_CHANGES
from core.events.outbox import record
from db import db
from models import Item, StockMovement, Store

BULK_IDS = 1000  # ids per statement: a statement's size never grows with an import


def crossings(before: int, after: int, threshold: int | None) -> list[str]:
    """The thresholds a movement from ``before`` to ``after`` crosses (contract §10)."""
    found = []
    if threshold is not None and before > threshold >= after:
        found.append("stock.low")
    if before > 0 and after == 0:
        found.append("stock.out")
    if before == 0 and after > 0:
        found.append("stock.back_in")
    return found


def owner_of(item: Item) -> int | None:
    """The item's store's owner if the store is loaded (else ``record`` looks it up)."""
    store = item.__dict__.get("store")
    return store.owner_id if store is not None else None


def stock_moved(item: Item, movement: StockMovement) -> None:
    """``stock.moved`` (the movement) and, on a crossing, ``stock.low``/``out``/
    ``back_in`` (the item as GET returns it). Flushes; does not commit."""
    db.session.flush()  # the movement's id
    owner = owner_of(item)
    record("stock.moved", store_id=item.store_id, obj=movement, owner_id=owner)
    before = movement.stock_after - movement.delta
    found = crossings(before, movement.stock_after, item.low_stock_threshold)
    if not found:
        return
    whole = db.session.scalars(
        select(Item)
        .where(Item.id == item.id)
        .options(joinedload(Item.store), selectinload(Item.tags))
        .execution_options(populate_existing=True)
    ).one()
    for kind in found:
        record(kind, store_id=item.store_id, obj=whole, owner_id=whole.store.owner_id)


def initial_stock(item: Item, movement: StockMovement | None) -> None:
    """The ``stock.moved`` of a new item's first count, if it was created with stock
    (a movement like any other, §16). No crossing: the item had no stock to cross
    from, and its ``item.created`` tells what it holds. Flushes; does not commit."""
    if movement is None:
        return
    db.session.flush()
    record("stock.moved", store_id=item.store_id, obj=movement, owner_id=owner_of(item))


def movements_written(store: Store, ids: Iterable[int], at: datetime, created: set[int]) -> None:
    """``stock.moved`` for every movement of the items ``ids`` written in bulk at ``at``
    (an import's counts), each followed by its crossings if its item existed before
    (``created``: the new items, whose first count crosses nothing). Does not commit."""
    ids = list(ids)
    for start in range(0, len(ids), BULK_IDS):
        rows = db.session.execute(
            select(StockMovement, Item.low_stock_threshold)
            .join(Item, Item.id == StockMovement.item_id)
            .where(StockMovement.item_id.in_(ids[start : start + BULK_IDS]))
            .where(StockMovement.created_at == at)
            .order_by(StockMovement.id)
        ).all()
        found = {
            movement.id: crossings(movement.stock_after - movement.delta, movement.stock_after, t)
            for movement, t in rows
            if movement.item_id not in created
        }
        crossers = {m.item_id for m, _ in rows if found.get(m.id)}
        whole = (
            {
                item.id: item
                for item in db.session.scalars(
                    select(Item)
                    .where(Item.id.in_(crossers))
                    .options(joinedload(Item.store), selectinload(Item.tags))
                    .execution_options(populate_existing=True)
                )
            }
            if crossers
            else {}
        )
        for movement, _ in rows:
            record("stock.moved", store_id=store.id, obj=movement, owner_id=store.owner_id)
            for kind in found.get(movement.id, ()):
                item = whole[movement.item_id]
                record(kind, store_id=store.id, obj=item, owner_id=store.owner_id)
            db.session.expunge(movement)  # an import holds no ORM object per row


def store_deleted(store_id: int, owner_id: int) -> None:
    """One ``store.deleted``; its items and tags write none (contract §16). Its owner
    is given: a store marked for deletion is hidden from the lookup ``record`` makes
    (the event of a deletion by a job went to no one but admins, and no webhook)."""
    record("store.deleted", store_id=store_id, owner_id=owner_id, obj={"id": store_id})


def utc_text(column: str) -> str:
    """SQL: a timestamptz ``column`` as the item schema writes it (Python's
    ``isoformat()`` of a UTC time: microseconds unless there are none, ``+00:00``)."""
    local = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"to_char({local}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
        f"CASE WHEN mod(extract(microseconds FROM {local})::integer, 1000000) = 0 THEN '' "
        f"ELSE to_char({local}, '.US') END || '+00:00'"
    )


def _item_fields(store: str, created_at: str, updated_at: str) -> list[tuple[str, str]]:
    """The item ``i``'s JSON fields in ItemSchema's order, each with its SQL."""
    price = (
        "CASE WHEN i.price = trunc(i.price) THEN (trunc(i.price)::bigint || '.0')::json "
        "ELSE to_json(i.price::float8) END"
    )
    return [
        ("id", "i.id"),
        ("name", "i.name"),
        ("description", "i.description"),
        ("price", price),
        ("stock", "i.stock"),
        ("store_id", "i.store_id"),
        ("store", store),
        ("tags", "coalesce(tags_json, '[]'::json)"),
        ("sku", "i.sku"),
        ("status", "i.status"),
        ("low_stock_threshold", "i.low_stock_threshold"),
        ("metadata", "i.metadata"),
        ("created_at", created_at),
        ("updated_at", updated_at),
    ]


STORE_JSON = "json_build_object('id', s.id, 'name', s.name)"


def item_json(
    store: str = STORE_JSON,
    created_at: str = utc_text("i.created_at"),
    updated_at: str = utc_text("i.updated_at"),
) -> str:
    """SQL (PostgreSQL): the item ``i`` as its GET returns it (schemas.py ItemSchema, in
    its fields' order; the price a JSON number as Python writes a float), its tags' JSON
    array given as ``tags_json`` (``TAGS_JSON`` of its links). ``store`` is its store's
    JSON (by default from the store ``s``), ``created_at`` and ``updated_at`` its times'
    texts: a statement that knows them for every row gives them once."""
    pairs = (f"'{key}', {sql}" for key, sql in _item_fields(store, created_at, updated_at))
    return f"json_build_object({', '.join(pairs)})"


def created_changes(store: str = STORE_JSON) -> str:
    """SQL (PostgreSQL): the audit entry's ``changes`` of the new item ``i``, as
    core/auth/audit.py ``created`` writes them from its JSON (``[null, value]`` of each
    field but the id and the times), from the row itself: no JSON is read back."""
    fields = _item_fields(store, "NULL", "NULL")
    pairs = (
        f"'{key}', json_build_array(NULL, {sql})" for key, sql in fields if key not in NOT_CHANGES
    )
    return f"json_build_object({', '.join(pairs)})"


# What the importer writes its events from without reading each item into Python
# (core/catalog/csv_copy.py); tests/api/test_import.py compares the two.
ITEM_JSON = item_json()
# An item's tags ``t`` as its JSON shows them (to be aggregated by item).
TAG_LIST = "json_agg(json_build_object('id', t.id, 'name', t.name) ORDER BY t.id)"
# Items' tags as ``tags_json`` by ``item_id``, ordered by id as an item's ``tags`` are
# (to be completed with a WHERE and ``GROUP BY l.item_id``).
TAGS_JSON = f"""SELECT l.item_id, {TAG_LIST} AS tags_json
FROM item_tags l JOIN tags t ON t.id = l.tag_id"""  # noqa: S608 - fragments of our own, no input
# ``previous`` of an update, from ``before`` (json, whose key order it keeps) and
# ``after_b`` (the new JSON as jsonb, converted once: ``->`` on json parses the whole
# text again for each key): the old value of each field that changed, but
# ``updated_at`` (core/events/outbox.py ``changes``); NULL if none.
PREVIOUS_JSON = """(SELECT json_object_agg(b.key, b.value ORDER BY b.n)
 FROM json_each(before) WITH ORDINALITY AS b(key, value, n)
 WHERE b.key <> 'updated_at' AND after_b -> b.key IS DISTINCT FROM b.value::jsonb)"""
