"""Stores: the catalog's top level; each belongs to the user who created it."""

from __future__ import annotations

from flask import current_app, url_for
from flask.views import MethodView
from flask_jwt_extended import current_user
from flask_smorest import abort
from sqlalchemy import select

from core.auth import audit
from core.auth.permissions import ADMIN, fields_reserved, login_required, store_owner_required
from core.catalog.queries import ITEMS, item_search
from core.catalog.stores import delete_store
from core.lists.listing import LIST_HEADERS, Listing
from core.web.http import public_cache
from core.web.smorest import Blueprint
from db import db
from models import Store, Tag, User
from resources.common import commit, flush, get_or_404, icontains
from schemas import (
    STORE_EDITABLE,
    ItemSchema,
    StoreCreateSchema,
    StoreItemQuerySchema,
    StoreQuerySchema,
    StoreReplaceSchema,
    StoreSchema,
    StoreUpdateSchema,
    TagInputSchema,
    TagSchema,
)

blp = Blueprint("stores", __name__, url_prefix="/stores", description="Stores")
blp.after_request(public_cache)

STORES = Listing({"id": (Store.id,)}, sortable=False)
TAGS = Listing({"id": (Tag.id,)}, sortable=False)
STORE_LOCATION = {"Location": {"schema": {"type": "string"}, "description": "URL of the new store"}}
TAG_LOCATION = {"Location": {"schema": {"type": "string"}, "description": "URL of the new tag"}}


def _duplicate(data: dict) -> str:
    return f"A store named {data.get('name')!r} already exists."


def _store(store_id: int) -> tuple[Store, Store]:
    """The store to change, locked until the request commits, so that the checks made
    on it (ownership, If-Match) still hold when the change is written."""
    store = get_or_404(Store, store_id, for_update=True)
    return store, store


def _store_unlocked(store_id: int) -> tuple[Store, Store]:
    store = get_or_404(Store, store_id)
    return store, store


def _change(store: Store, data: dict) -> Store:
    # Checked only now, for an admin (fields_reserved): nobody else learns which ids exist.
    if "owner_id" in data and db.session.get(User, data["owner_id"]) is None:
        message = f"User {data['owner_id']} does not exist."
        abort(422, errors={"json": {"owner_id": [message]}})
    before = StoreSchema().dump(store)
    for key, value in data.items():
        setattr(store, key, value)
    changes = audit.updated(before, StoreSchema().dump(store))
    if changes:
        audit.record("store.updated", "store", store.id, changes, store_id=store.id)
    commit(conflict=_duplicate(data))
    return store


TRANSFER = {"owner_id": (ADMIN, "transfer a store")}


@blp.route("")
class Stores(MethodView):
    @blp.etag
    @blp.response(200, StoreSchema(many=True), headers=LIST_HEADERS)
    @STORES.paginate(blp, StoreQuerySchema)
    def get(self, args):
        """List stores"""
        query = select(Store)
        if "q" in args:
            query = query.where(icontains(Store.name, args["q"]))
        if "owner_id" in args:
            query = query.where(Store.owner_id == args["owner_id"])
        return query

    @login_required(blp)
    @blp.arguments(StoreCreateSchema)
    @blp.response(201, StoreSchema, headers=STORE_LOCATION)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, data):
        """Create a store; the caller becomes its owner"""
        store = Store(owner_id=current_user.id, **data)
        db.session.add(store)
        flush(conflict=_duplicate(data))
        changes = audit.created(StoreSchema().dump(store))
        audit.record("store.created", "store", store.id, changes, store_id=store.id)
        commit(conflict=_duplicate(data))
        return store, 201, {"Location": url_for("stores.StoreById", store_id=store.id)}


@blp.route("/<id:store_id>")
@blp.etag
class StoreById(MethodView):
    @blp.response(200, StoreSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, store_id):
        """One store"""
        return get_or_404(Store, store_id)

    @store_owner_required(blp, _store, etag_schema=StoreSchema)
    @fields_reserved(blp, **TRANSFER)
    @blp.arguments(StoreReplaceSchema)
    @blp.response(200, StoreSchema)
    @blp.alt_response(409, response="CONFLICT")
    def put(self, store, data):
        """Replace a store's editable fields; optional ones left out are cleared"""
        return _change(store, dict.fromkeys(STORE_EDITABLE) | data)

    @store_owner_required(blp, _store, etag_schema=StoreSchema)
    @fields_reserved(blp, **TRANSFER)
    @blp.arguments(StoreUpdateSchema)
    @blp.response(200, StoreSchema)
    @blp.alt_response(409, response="CONFLICT")
    def patch(self, store, data):
        """Change some of a store's fields (`owner_id`: admins only)"""
        return _change(store, data)

    @store_owner_required(blp, _store, etag_schema=StoreSchema, fresh=True)
    @blp.response(204)
    def delete(self, store):
        """Delete a store with its items and tags (fresh token)"""
        changes = audit.deleted(StoreSchema().dump(store))

        def record() -> None:  # with the store's own deletion, in its transaction
            audit.record("store.deleted", "store", store.id, changes, store_id=store.id)

        delete_store(store.id, current_app.config["STORE_DELETE_BATCH"], also=record)


@blp.route("/<id:store_id>/items")
class StoreItems(MethodView):
    @blp.etag
    @blp.response(200, ItemSchema(many=True), headers=LIST_HEADERS)
    @blp.alt_response(404, response="NOT_FOUND")
    @ITEMS.paginate(blp, StoreItemQuerySchema)
    def get(self, args, store_id):
        """List a store's items (same filters as `GET /items`)"""
        get_or_404(Store, store_id)
        return item_search({**args, "store_id": store_id})


@blp.route("/<id:store_id>/tags")
class StoreTags(MethodView):
    @blp.etag
    @blp.response(200, TagSchema(many=True), headers=LIST_HEADERS)
    @blp.alt_response(404, response="NOT_FOUND")
    @TAGS.paginate(blp)
    def get(self, _args, store_id):
        """List a store's tags"""
        get_or_404(Store, store_id)
        return select(Tag).where(Tag.store_id == store_id)

    @store_owner_required(blp, _store_unlocked)
    @blp.arguments(TagInputSchema)
    @blp.response(201, TagSchema, headers=TAG_LOCATION)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, store, data):
        """Create a tag in a store"""
        tag = Tag(store_id=store.id, name=data["name"])
        db.session.add(tag)
        conflict = f"Store {store.id} already has a tag named {data['name']!r}."
        flush(conflict=conflict)
        changes = audit.created(TagSchema().dump(tag))
        audit.record("tag.created", "tag", tag.id, changes, store_id=store.id)
        commit(conflict=conflict)
        return tag, 201, {"Location": url_for("tags.TagById", tag_id=tag.id)}
