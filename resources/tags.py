"""Tags: rename and delete (tags are created under their store)."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy.exc import IntegrityError

from core.http import public_cache
from core.security import authorize_store, login_required
from core.smorest import Blueprint
from db import db
from models import Store, Tag
from resources.common import commit, get_or_404
from schemas import TagInputSchema, TagSchema

blp = Blueprint("tags", __name__, url_prefix="/tags", description="Tags")
blp.after_request(public_cache)


def _for_change(tag_id: int) -> Tag:
    """The tag, locked until the request commits, once the caller may change it
    and its If-Match (if sent) matches."""
    tag = get_or_404(Tag, tag_id, for_update=True)
    authorize_store(db.session.get(Store, tag.store_id))
    blp.check_etag(tag, TagSchema)
    return tag


@blp.route("/<id:tag_id>")
@blp.etag
class TagById(MethodView):
    @blp.response(200, TagSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, tag_id):
        """One tag"""
        return get_or_404(Tag, tag_id)

    @login_required(blp)
    @blp.arguments(TagInputSchema)
    @blp.response(200, TagSchema)
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def patch(self, data, tag_id):
        """Rename a tag"""
        tag = _for_change(tag_id)
        tag.name = data["name"]
        commit(conflict=f"Store {tag.store_id} already has a tag named {tag.name!r}.")
        return tag

    @login_required(blp)
    @blp.response(204)
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def delete(self, tag_id):
        """Delete a tag that no item carries any more"""
        db.session.delete(_for_change(tag_id))
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            abort(409, message=f"Tag {tag_id} is still on items; take it off them first.")
