"""Reading the catalog for a CSV export (§9): every item of a search, in keyset
chunks, as CSV text. Shared by the streamed download (resources/exports.py) and the
export job (core/jobs/work.py), so both write the same file.

Each chunk is one statement (its items with their tags): memory stays flat whatever
the catalog's size, and no statement runs long enough to meet the statement timeout.
On PostgreSQL the chunks of a request share one snapshot (db.py), so an export is
consistent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Select, func, select

from core.catalog.csv_format import Writer
from core.catalog.queries import ITEMS, Viewer, item_search
from core.lists import cursors
from core.web.fields import TAG_SEPARATOR
from db import db
from models import Item, Tag, item_tags


def _tag_names() -> Any:
    """An item's tag names joined by ``|`` in tag id order, computed by the database
    in the chunk's own statement (string_agg on PostgreSQL, group_concat on SQLite)."""
    names = (
        select(Tag.name)
        .join(item_tags, item_tags.c.tag_id == Tag.id)
        .where(item_tags.c.item_id == Item.id)
        .order_by(Tag.id)
        .correlate(Item)
        .subquery()
    )
    return select(func.aggregate_strings(names.c.name, TAG_SEPARATOR)).scalar_subquery()


COLUMNS = (
    Item.id,
    Item.name,
    Item.description,
    Item.price,
    Item.stock,
    Item.store_id,
    _tag_names(),
    Item.created_at,
    Item.updated_at,
    Item.sku,
    Item.status,
    Item.low_stock_threshold,
)


def chunks(query: Select[Any], args: dict[str, Any], size: int) -> Iterator[Sequence[Any]]:
    """The rows of ``query`` in the order of ``args``' sort, ``size`` at a time, each
    chunk read by its own statement from where the last one ended (keyset: no OFFSET),
    with the keys and predicate of the JSON lists (core/catalog/queries.py ITEMS)."""
    keys = ITEMS.keys(ITEMS.sort_of(args), args)
    order = [expr.desc() if descending else expr for expr, descending in keys]
    base = query.with_only_columns(*COLUMNS, *(expr for expr, _ in keys)).order_by(*order)
    position = None
    while True:
        page = base
        if position is not None:
            page = page.where(cursors.after(keys, position))
        # On the session's connection (its transaction, its snapshot) but as plain rows:
        # no ORM loading per row.
        rows: Sequence[Any] = db.session.connection().execute(page.limit(size)).all()
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        position = rows[-1][len(COLUMNS) :]


def csv_text(
    args: dict[str, Any], size: int, viewer: Viewer | None = None
) -> Iterator[tuple[str, int]]:
    """The export of the search ``args`` (as ``viewer`` sees it; by default, the
    request's caller): the header, then each chunk's rows as CSV text, with the number
    of rows each piece holds."""
    writer = Writer()
    yield writer.header(), 0
    for rows in chunks(item_search(args, viewer), args, size):
        yield writer.rows(rows), len(rows)
