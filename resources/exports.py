"""CSV exports of the catalog (§9): every item of a search, streamed.

The rows are read in keyset chunks of EXPORT_CHUNK_SIZE, each chunk one statement
(its items with their tags), and written out as they come: a worker's
memory stays flat whatever the catalog's size, and no statement runs long enough to
meet the statement timeout. (On PostgreSQL the chunks share one snapshot, db.py, so
an export is consistent.) What bounds an export is the worker timeout
(GUNICORN_TIMEOUT): at the measured speed (README) that is over a million items.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from flask import Response, current_app, stream_with_context
from flask.views import MethodView
from sqlalchemy import Select, func, select

from core.catalog.csv_format import Writer
from core.catalog.queries import ITEMS, item_search
from core.lists import cursors
from core.web.fields import TAG_SEPARATOR
from core.web.smorest import Blueprint
from db import db
from models import Item, Store, Tag, item_tags
from resources.common import get_or_404
from schemas import ItemQuerySchema, StoreItemQuerySchema

blp = Blueprint("exports", __name__, description="The catalog as CSV, for spreadsheets")


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
)
CSV_DOC = {
    "content_type": "text/csv",
    "description": "CSV (RFC 4180, UTF-8): a header row, then one row per item",
    "headers": {
        "Content-Disposition": {
            "description": 'attachment; filename="items.csv"',
            "schema": {"type": "string"},
        }
    },
}


def _chunks(query: Select[Any], args: dict[str, Any], size: int) -> Iterator[Sequence[Any]]:
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


def export(args: dict, filename: str) -> Response:
    query = item_search(args)
    size = current_app.config["EXPORT_CHUNK_SIZE"]

    def generate() -> Iterator[bytes]:
        writer = Writer()
        yield writer.header().encode()
        for rows in _chunks(query, args, size):
            yield writer.rows(rows).encode()

    response = Response(stream_with_context(generate()), mimetype="text/csv")
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    # A download of the current catalog: no cache keeps a copy of it.
    response.headers["Cache-Control"] = "no-store"
    return response


@blp.route("/items.csv")
class ItemsCsv(MethodView):
    @blp.arguments(ITEMS.query_schema(ItemQuerySchema, paging=False), location="query")
    @blp.response(200, {"type": "string"}, **CSV_DOC)
    def get(self, args):
        """Every item of a search as CSV (same filters and sort as `GET /items`)"""
        return export(args, "items.csv")


@blp.route("/stores/<id:store_id>/items.csv")
class StoreItemsCsv(MethodView):
    @blp.arguments(ITEMS.query_schema(StoreItemQuerySchema, paging=False), location="query")
    @blp.response(200, {"type": "string"}, **CSV_DOC)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args, store_id):
        """A store's items as CSV (same filters and sort as `GET /stores/{id}/items`)"""
        get_or_404(Store, store_id)
        return export({**args, "store_id": store_id}, f"store-{store_id}-items.csv")
