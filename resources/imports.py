"""CSV imports over HTTP (§12): the body of ``POST /stores/{id}/imports`` is stored
with a job, and a worker runs it through the importer of ``flask import-items``."""

from __future__ import annotations

import io
from dataclasses import asdict
from typing import Any

from flask import Response, current_app, request
from flask.views import MethodView
from flask_jwt_extended import current_user

from core.auth import audit
from core.auth.permissions import store_owner_required
from core.catalog import csv_format
from core.jobs import engine, files
from core.web.errors import abort
from core.web.http import takes_csv
from core.web.idempotency import HEADER
from core.web.smorest import Blueprint
from models import Store
from resources.common import get_or_404
from resources.jobs import ACCEPTED, start
from schemas import ImportQuerySchema

blp = Blueprint("imports", __name__, description="CSV imports, done by a job")

CSV_BODY = {
    "content": {
        "text/csv": {"schema": {"type": "string", "minLength": 1}, "example": csv_format.example()}
    },
    "required": True,
    "description": "The export's columns (name and price required); at most "
    "IMPORT_MAX_BYTES (50 MiB)",
}


def _store(store_id: int) -> tuple[Store, Store]:
    store = get_or_404(Store, store_id)
    return store, store


UTF8_CHARSETS = ("utf-8", "utf8", "us-ascii")  # ASCII is UTF-8 too


@blp.route("/stores/<id:store_id>/imports")
class StoreImports(MethodView):
    @takes_csv("IMPORT_MAX_BYTES")
    @store_owner_required(blp, _store)
    @blp.arguments(ImportQuerySchema, location="query")
    @blp.doc(requestBody=CSV_BODY)
    @blp.response(202, **ACCEPTED)
    @blp.alt_response(413, response="DEFAULT_ERROR", description="Body over IMPORT_MAX_BYTES")
    @blp.alt_response(415, response="DEFAULT_ERROR", description="Body not UTF-8 text/csv")
    def post(self, store: Store, args: dict[str, Any]) -> Response:
        """Import a CSV body into a store's items (a job; same rules as `flask import-items`)"""
        if request.mimetype != "text/csv":
            abort(415, message="Send the file as the body, with Content-Type: text/csv.")
        # The file is read as UTF-8 (§9): one that says it is not would fail in the job.
        charset = request.mimetype_params.get("charset", "utf-8").lower()
        if charset not in UTF8_CHARSETS:
            abort(
                415,
                message=f"The file must be UTF-8 (its Content-Type says charset={charset[:40]}):"
                " convert it, and send Content-Type: text/csv; charset=utf-8.",
            )
        limit = current_app.config["IMPORT_MAX_BYTES"]
        job = engine.create(
            "import",
            current_user.id,
            store_id=store.id,
            params={
                "dry_run": args["dry_run"],
                "skip_invalid": args["skip_invalid"],
                # The audit entries of the rows are this request's (§15).
                "origin": asdict(audit.origin()),
            },
        )
        size, seq = 0, 0
        # Read already (and kept) when an Idempotency-Key made it part of a fingerprint.
        body = io.BytesIO(request.get_data()) if HEADER in request.headers else request.stream
        while piece := body.read(files.CHUNK_BYTES):
            size += len(piece)
            if size > limit:
                abort(413, message=f"The file is over {limit:,} bytes (IMPORT_MAX_BYTES).")
            files.add_chunk(job.id, "input", seq, piece)
            seq += 1
        if size == 0:
            abort(422, message="The body is empty: send the CSV file (a header row, then rows).")
        return start(job)  # its progress.total (the file's size) is set when it starts
