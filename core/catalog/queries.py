"""The filters and sorts of every list of items (`GET /items`, `GET /stores/{id}/items`).

Each filter is written so that an index serves it (models/item.py): `tag` by the
tags' ids, resolved first, then one statement over item_tags(tag_id, item_id) whatever
the number of tags (its plan costs the same for 1 tag as for 10), `q` on the trigram
index of the name and description together, `search` on the full-text document's GIN
index; and each sort has an index on its keys with the id tie-break.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Double,
    Integer,
    Row,
    Select,
    and_,
    any_,
    cast,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.orm import InstrumentedAttribute, joinedload, selectinload

from core.auth import scopes
from core.auth.permissions import forbid, key_store, sees_own_catalog
from core.catalog.stores import live_items
from core.lists.listing import Listing, Ranked, Rows
from core.lists.settled import settled
from db import db, icontains, lower
from models import Item, Store, Tag, item_tags
from models.item import ITEM_TEXT, SEARCH_CONFIG

# Exactly what ItemSchema nests: the store (one row) and the tags (a collection).
ITEM_LOADS = (joinedload(Item.store), selectinload(Item.tags))

# Lists (and the single read, resources/items.py) read items as plain rows, not ORM
# objects: a row has what ItemSchema dumps, but the tags, which come apart.
_items, _stores, _tags = Item.__table__.c, Store.__table__.c, Tag.__table__.c
ITEM_COLUMNS = (
    *(_items[f] for f in ("id", "name", "description", "price", "stock", "store_id")),
    _stores.name.label("store_name"),
    _stores.owner_id.label("store_owner_id"),  # who may see an item that is not active
    *(_items[f] for f in ("sku", "status", "low_stock_threshold")),
    _items["metadata"].label("metadata_"),
    _items.created_at,
    _items.updated_at,
)
ITEM_FROM = Item.__table__.join(Store.__table__, _stores.id == _items.store_id)
TAG_COLUMNS = (_tags.id.label("tag_id"), _tags.name.label("tag_name"))
_ITEM_KEYS = tuple(c.key for c in ITEM_COLUMNS)

# What each field of an item's JSON (``?fields=``, core/web/sparse.py) is read from,
# by key of ITEM_COLUMNS; a field not named here is its own column. ``tags`` are read
# by a statement of their own, which a list without them skips.
_READS: dict[str, tuple[str, ...]] = {
    "store": ("store_id", "store_name"),
    "metadata": ("metadata_",),
    "tags": (),
    "links": ("store_id",),  # and the id, read always
}


def item_columns(fields: frozenset[str] | None) -> tuple[Any, ...]:
    """The columns a list of items reads for ``fields`` (None: all of them)."""
    if fields is None:
        return ITEM_COLUMNS
    keys = {"id"}.union(*(_READS.get(field, (field,)) for field in fields))
    return tuple(c for c in ITEM_COLUMNS if c.key in keys and c.key != "store_owner_id")


def as_item(fields: Mapping[Any, Any], tags: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A row of ITEM_COLUMNS, or of some of them (its mapping), as ItemSchema dumps
    it; ``tags`` None: not read."""
    item = {key: fields[key] for key in _ITEM_KEYS if key in fields}
    if "store_name" in item:
        item["store"] = {"id": item["store_id"], "name": item.pop("store_name")}
    if tags is not None:
        item["tags"] = tags
    return item


def _item_rows(query: Select[Any], fields: frozenset[str] | None) -> Select[Any]:
    return query.with_only_columns(*item_columns(fields)).select_from(ITEM_FROM)


def _items_with_tags(
    rows: Sequence[Row[Any]], fields: frozenset[str] | None
) -> list[dict[str, Any]]:
    """The page's items, and their tags read by one more statement (if shown)."""
    if fields is not None and "tags" not in fields:
        return [as_item(row._mapping, None) for row in rows]
    tags: dict[int, list[dict[str, Any]]] = {row.id: [] for row in rows}
    if tags:
        links = (
            select(item_tags.c.item_id, *TAG_COLUMNS)
            .join(Tag.__table__, _tags.id == item_tags.c.tag_id)
            .where(item_tags.c.item_id.in_(tags))
            .order_by(_tags.id)
        )
        for link in db.session.connection().execute(links):
            tags[link.item_id].append({"id": link.tag_id, "name": link.tag_name})
    return [as_item(row._mapping, tags[row.id]) for row in rows]


def _postgresql() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def _query(text: str) -> ColumnElement[Any]:
    """Web-search syntax: words, "a phrase", or, -word."""
    return func.websearch_to_tsquery(literal_column(f"'{SEARCH_CONFIG}'::regconfig"), text)


def _relevance(args: dict[str, Any]) -> tuple[Any, ...]:
    """Best match first (name weighs more than description), then by id. SQLite has
    no ranking: by id."""
    if not _postgresql():
        return (Item.id,)
    # In double precision: a real sent to the client and back would not compare equal.
    rank = cast(func.ts_rank(Item.search_vector, _query(args["search"])), Double)
    return (rank.desc(), Item.id)


# The sorts of every list of items. Adding one: a line here, and an index on its keys
# and on (store_id, keys) in models/item.py (tests/api/test_search.py checks both exist).
ITEMS = Listing(
    {
        "id": (Item.id,),
        "name": (lower(Item.name), Item.id),
        "price": (Item.price, Item.id),
        "created_at": (Item.created_at, Item.id),
        "stock": (Item.stock, Item.id),
        "updated_at": (Item.updated_at, Item.id),
        "relevance": Ranked(_relevance, requires="search"),
    },
    read_whole=("q", "search"),  # their bitmaps read every match; the page counts them
    rows=Rows(_item_rows, _items_with_tags),
)


def _matches(text: str) -> ColumnElement[bool]:
    if _postgresql():
        return Item.search_vector.op("@@")(_query(text))
    # SQLite: every word (quotes aside) is a substring of the name or description.
    words = text.replace('"', " ").split()
    return and_(
        true(), *(or_(icontains(Item.name, w), icontains(Item.description, w)) for w in words)
    )


@dataclass(frozen=True)
class Viewer:
    """Who reads items that are not active (§13): a user (an admin: of every store),
    through an API key bound to a store (``store_id``) or not. A request's is read from
    its token; an export job's is the one its request had."""

    user_id: int
    is_admin: bool
    store_id: int | None = None


def request_viewer(what: str) -> Viewer:
    """The signed-in caller of this request, else 403 (core/auth/permissions.py)."""
    caller = sees_own_catalog(what)
    return Viewer(caller.id, bool(caller.is_admin), key_store())


def _visible(query: Select[Any], args: dict[str, Any], viewer: Viewer | None) -> Select[Any]:
    """`status` (§13): active items for anyone (the default); draft, archived or all
    only of the viewer's own stores (an admin's: any; a key bound to a store: that
    store's), else 403."""
    status = args.get("status") or "active"
    if status == "active":
        return query.where(Item.status == "active")
    viewer = viewer or request_viewer(f"status={status}")
    store_id = args.get("store_id")
    if viewer.store_id is not None:
        if store_id not in (None, viewer.store_id):
            scopes.refuse(f"This API key is limited to store {viewer.store_id}.")
        query = query.where(Item.store_id == viewer.store_id)
    if not viewer.is_admin:
        if store_id is not None:
            owner = db.session.scalar(select(Store.owner_id).where(Store.id == store_id))
            if owner != viewer.user_id:
                forbid(f"status={status} lists only the items of your own stores.")
        else:
            # The viewer's stores as values, not a subquery: the planner then knows
            # how many items they hold, and reads a few stores' items by their own
            # index rather than walking the whole catalog's sort order for them (a
            # user with no store, status=all: every item read, 0.5-1 s at 200,000).
            mine = list(
                db.session.scalars(select(Store.id).where(Store.owner_id == viewer.user_id))
            )
            query = query.where(_any(Item.store_id, mine) if mine else false())
    return query if status == "all" else query.where(Item.status == status)


def item_search(args: dict[str, Any], viewer: Viewer | None = None) -> Select[Any]:
    """The filters of a list of items as one unordered SELECT (ITEMS orders it)."""
    query = _visible(select(Item).where(live_items()), args, viewer)
    if args.get("store_id") is not None:
        query = query.where(Item.store_id == args["store_id"])
    if args.get("sku") is not None:
        query = query.where(Item.sku == args["sku"])
    if args.get("updated_after") is not None:
        query = query.where(Item.updated_at > args["updated_after"])
    query = settled(query, Item.updated_at, args)
    if args.get("min_price") is not None:
        query = query.where(Item.price >= args["min_price"])
    if args.get("max_price") is not None:
        query = query.where(Item.price <= args["max_price"])
    if args.get("in_stock") is not None:
        query = query.where(Item.stock > 0 if args["in_stock"] else Item.stock == 0)
    if args.get("q"):
        query = query.where(icontains(ITEM_TEXT, args["q"]))
    if args.get("search"):
        query = query.where(_matches(args["search"]))
    names = list(dict.fromkeys(args.get("tag") or ()))
    if names:
        query = query.where(_carries_every_tag(names, args.get("store_id")))
    return query


def _any(
    column: ColumnElement[int] | InstrumentedAttribute[int], values: list[int]
) -> ColumnElement[bool]:
    """``column`` is one of ``values``: one array parameter on PostgreSQL (the
    statement, and its plan, the same for any number of values)."""
    if _postgresql():
        return column == any_(literal(values, ARRAY(Integer)))
    return column.in_(values)


def _carries_every_tag(names: list[str], store_id: int | None) -> ColumnElement[bool]:
    """Items that carry a tag of each of ``names`` (case-insensitively, by the
    database's ``lower`` on both sides). The tags' ids are looked up first, by one
    statement; then one GROUP BY over their links. (One EXISTS per tag, as before,
    made PostgreSQL's planning time grow steeply with their number.)"""
    wanted = union_all(*(select(lower(literal(name)).label("name")) for name in names))
    wanted_names = wanted.subquery("wanted")
    on = lower(Tag.name) == wanted_names.c.name
    if store_id is not None:
        on = and_(on, Tag.store_id == store_id)
    lookup = select(wanted_names.c.name, Tag.id).select_from(wanted_names.outerjoin(Tag, on))
    found = db.session.connection().execute(lookup).all()
    if any(tag_id is None for _name, tag_id in found):
        return false()  # a name no tag has: nothing carries every one
    ids = sorted({tag_id for _name, tag_id in found})
    # A store's tag names are unique (case-insensitively) and an item carries only
    # its store's tags: one link per distinct name, so carrying all is a count.
    distinct = len({name for name, _tag_id in found})
    links = select(item_tags.c.item_id).where(_any(item_tags.c.tag_id, ids))
    if distinct > 1:
        links = links.group_by(item_tags.c.item_id).having(func.count() == distinct)
    return Item.id.in_(links)
