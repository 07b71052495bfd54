"""CSV exports of the catalog (§9): every item of a search, streamed.

The rows are read in keyset chunks of EXPORT_CHUNK_SIZE (core/catalog/csv_export.py)
and written out as they come. What bounds an export is the worker timeout
(GUNICORN_TIMEOUT): at the measured speed (README) that is over a million items; an
export job (POST /exports, resources/jobs.py) has no such bound.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import Response, current_app, stream_with_context
from flask.views import MethodView
from flask_jwt_extended import current_user
from marshmallow import fields, validate

from core.auth import scopes
from core.auth.permissions import key_store, login_required
from core.auth.security import api_key
from core.catalog import csv_format
from core.catalog.csv_export import csv_text
from core.catalog.queries import ITEMS, Viewer, item_search
from core.jobs import engine
from core.web.fields import Id, JsonBoolean, Line, Money
from core.web.request_log import stream_outcome
from core.web.smorest import Blueprint
from models import Store
from models.item import STATUSES
from resources.common import get_or_404
from resources.jobs import ACCEPTED, start
from schemas import ItemQuerySchema, StoreItemQuerySchema

blp = Blueprint("exports", __name__, description="The catalog as CSV, for spreadsheets")


CSV_DOC = {
    "content_type": "text/csv",
    "example": csv_format.example(),
    "description": "CSV (RFC 4180, UTF-8): a header row, then one row per item",
    "headers": {
        "Content-Disposition": {
            "description": 'attachment; filename="items.csv"',
            "schema": {"type": "string"},
        }
    },
}


class StreamCutError(BrokenPipeError):
    """Raised by an export's stream that failed after its first bytes were sent. A
    broken pipe (EPIPE) is what gunicorn's workers treat as a connection gone: they
    close it without writing the chunked terminator and without a traceback, so the
    client sees a cut transfer, never a complete-looking file (§9). The failure itself
    is written once, on the request's access line (request_log.stream_outcome)."""

    def __init__(self) -> None:
        super().__init__(errno.EPIPE, "export stream cut")


def export(args: dict[str, Any], filename: str) -> Response:
    size = current_app.config["EXPORT_CHUNK_SIZE"]
    # Refusals (a status= the caller may not list) and a failure of the first chunk's
    # statement come now, in the envelope, before anything is sent: once the stream
    # has started, a failure can only cut it (§9).
    item_search(args)
    pieces = csv_text(args, size)
    header, _ = next(pieces)
    first, sent = next(pieces, ("", 0))
    outcome = stream_outcome()

    def generate() -> Iterator[bytes]:
        rows = sent
        yield (header + first).encode()
        try:
            for text, count in pieces:
                yield text.encode()
                rows += count
        except Exception as exc:  # noqa: BLE001 - any failure cuts the stream alike
            # The class only: an exception's text may hold the SQL and users' values.
            outcome.update(cut=type(exc).__name__, rows_sent=rows)
            raise StreamCutError from None

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
    @blp.alt_response(403, response="FORBIDDEN")
    def get(self, args: dict[str, Any]) -> Response:
        """Every item of a search as CSV (same filters and sort as `GET /items`)"""
        return export(args, "items.csv")


@blp.route("/stores/<id:store_id>/items.csv")
class StoreItemsCsv(MethodView):
    @blp.arguments(ITEMS.query_schema(StoreItemQuerySchema, paging=False), location="query")
    @blp.response(200, {"type": "string"}, **CSV_DOC)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(403, response="FORBIDDEN")
    def get(self, args: dict[str, Any], store_id: int) -> Response:
        """A store's items as CSV (same filters and sort as `GET /stores/{id}/items`)"""
        get_or_404(Store, store_id)
        return export({**args, "store_id": store_id}, f"store-{store_id}-items.csv")


class ExportJobSchema(ITEMS.query_schema(ItemQuerySchema, paging=False)):  # type: ignore[misc]
    """The filters and sort of `GET /items`, as a JSON body (JSON types, strictly:
    true/false and numbers, where a query string's are text)."""

    q = Line(
        80, metadata={"description": "Substring of the name or description", "example": "milk"}
    )
    search = Line(200, metadata={"description": "Full-text search", "example": "fresh milk"})
    min_price = Money(metadata={"description": "Inclusive lower bound", "example": 1})
    max_price = Money(metadata={"description": "Inclusive upper bound", "example": 20})
    store_id = Id(metadata={"example": 1})
    in_stock = JsonBoolean(
        metadata={"description": "true: stock above 0; false: stock 0", "example": True}
    )
    sort = fields.String(
        validate=validate.OneOf(ITEMS.choices),
        metadata={"description": "As in GET /items (default id)", "example": "-price"},
    )
    sku = Line(64, metadata={"description": "Exact SKU (case-sensitive)", "example": "MILK-1L"})
    status = fields.String(
        validate=validate.OneOf([*STATUSES, "all"]),
        metadata={"description": "As in GET /items (default active)", "example": "active"},
    )


def _jsonable(args: dict[str, Any]) -> dict[str, Any]:
    """The parsed filters as the job stores them (prices as exact text, times in ISO 8601)."""
    return {
        k: v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, Decimal) else v
        for k, v in args.items()
    }


@blp.route("/exports")
class ExportJobs(MethodView):
    @login_required(blp)
    @blp.arguments(ExportJobSchema)
    @blp.response(202, **ACCEPTED)
    def post(self, args: dict[str, Any]) -> Response:
        """Export a search as CSV by a job; its `links.file` downloads it for 24 hours"""
        item_search(args)  # a status= the caller may not list: 403 now, not in the job
        viewer = Viewer(current_user.id, bool(current_user.is_admin), key_store())
        if args.get("store_id") is not None:
            scopes.check_store(api_key(), args["store_id"])
        params = {"filters": _jsonable(args), "viewer": asdict(viewer)}
        # A key bound to a store: its store's job (core/auth/scopes.py), whatever it reads.
        store_id = args.get("store_id") or viewer.store_id
        job = engine.create("export", current_user.id, params=params, store_id=store_id)
        return start(job)
