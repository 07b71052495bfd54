"""Tags: rename and delete (tags are created under their store)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from sqlalchemy.exc import IntegrityError

from core.auth import audit
from core.auth.permissions import store_owner_required
from core.events.outbox import as_json, record
from core.web.conditions import LAST_MODIFIED
from core.web.errors import abort
from core.web.http import public_cache
from core.web.smorest import Blueprint
from core.web.sparse import sparse
from db import db
from models import Store, Tag
from resources.common import commit, get_or_404, updated
from schemas import TagInputSchema, TagRecordSchema, TagSchema

blp = Blueprint("tags", __name__, url_prefix="/tags", description="Tags")
blp.after_request(public_cache)


def _tag(tag_id: int) -> tuple[Store, Tag]:
    """The tag to change, locked until the request commits, so that the checks made
    on it (ownership, If-Match) still hold when the change is written."""
    tag = get_or_404(Tag, tag_id, for_update=True)  # its store held first (404 if gone)
    return db.session.get_one(Store, tag.store_id), tag


@blp.route("/<id:tag_id>")
@blp.etag
class TagById(MethodView):
    @blp.response(200, TagSchema, headers=LAST_MODIFIED)
    @blp.alt_response(404, response="NOT_FOUND")
    @sparse(blp, TagSchema)
    def get(self, tag_id: int) -> Tag:
        """One tag"""
        tag = get_or_404(Tag, tag_id)
        blp.set_last_modified(tag.last_modified)
        return tag

    @store_owner_required(blp, _tag, etag_schema=TagSchema)
    @blp.arguments(TagInputSchema)
    @blp.response(200, TagSchema)
    @blp.alt_response(409, response="CONFLICT")
    def patch(self, tag: Tag, data: dict[str, Any]) -> Tag:
        """Rename a tag"""
        before = as_json(tag)
        shown = TagRecordSchema().dump(tag)
        tag.name = data["name"]
        changes = audit.updated(shown, TagRecordSchema().dump(tag))
        if changes:
            audit.record("tag.updated", "tag", tag.id, changes, store_id=tag.store_id)
        commit(
            conflict=f"Store {tag.store_id} already has a tag named {tag.name!r}.",
            events=updated("tag.updated", tag, before, store_id=tag.store_id),
        )
        return tag

    @store_owner_required(blp, _tag, etag_schema=TagSchema)
    @blp.response(204)
    @blp.alt_response(409, response="CONFLICT")
    def delete(self, tag: Tag) -> None:
        """Delete a tag that no item carries any more"""
        record("tag.deleted", store_id=tag.store_id, obj={"id": tag.id})
        changes = audit.deleted(TagRecordSchema().dump(tag))
        audit.record("tag.deleted", "tag", tag.id, changes, store_id=tag.store_id)
        db.session.delete(tag)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            abort(
                409,
                message=f"Tag {tag.id} is still on items; take it off them first.",
                error="tag_in_use",
            )
