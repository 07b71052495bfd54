"""``GET /``: the index of the API (contract §14) — its name, version and a link to
every collection and to its documentation, so that a client can start from here."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView

from core.web import links
from core.web.http import public_cache
from core.web.smorest import Blueprint
from schemas import IndexSchema

blp = Blueprint("index", __name__, description="The index of the API")
blp.after_request(public_cache)

API_VERSION = "1"
# Every collection, by the name its link has (its path: the name, "_" as "-").
COLLECTIONS = ("items", "stores", "users", "events", "webhooks", "jobs", "api_keys", "audit")


def index_document() -> dict[str, Any]:
    """The index, its links under the prefix the request came through (``/v1`` for
    ``GET /v1``); the OpenAPI document and Swagger UI are the service's, at the root."""
    base = links.base()
    return {
        "name": current_app.config["API_TITLE"],
        "version": API_VERSION,
        "links": {
            "self": base or "/",
            **{name: f"{base}/{name.replace('_', '-')}" for name in COLLECTIONS},
            "openapi": "/openapi.json",
            "swagger_ui": "/swagger-ui",
        },
    }


@blp.route("/")
class Index(MethodView):
    @blp.etag
    @blp.response(200, IndexSchema)
    def get(self) -> dict[str, Any]:
        """The index: links to every collection and to the documentation"""
        return index_document()
