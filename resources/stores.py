"""Stores: the catalog's top level; each belongs to the user who created it."""

from __future__ import annotations

from typing import Any

from flask import current_app, url_for
from flask.views import MethodView
from flask_jwt_extended import current_user
from sqlalchemy import Select, select

from core.auth import audit
from core.auth.permissions import (
    ADMIN,
    any_store_key,
    fields_reserved,
    login_required,
    store_owner_required,
)
from core.catalog.queries import ITEMS, item_search
from core.catalog.stores import count_items, delete_store, mark_deleting
from core.events.outbox import as_json
from core.jobs import engine
from core.lists.listing import LIST_HEADERS, Listing
from core.lists.settled import settled
from core.web.conditions import LAST_MODIFIED
from core.web.errors import abort
from core.web.http import public_cache
from core.web.smorest import Blueprint
from core.web.sparse import sparse
from db import db, icontains
from models import Store, Tag, User
from resources.common import commit, created, flush, get_or_404, updated
from resources.items import with_metadata
from resources.jobs import ACCEPTED, start
from schemas import (
    STORE_EDITABLE,
    ItemSchema,
    StoreCreateSchema,
    StoreItemQuerySchema,
    StoreQuerySchema,
    StoreRecordSchema,
    StoreReplaceSchema,
    StoreSchema,
    StoreUpdateSchema,
    TagInputSchema,
    TagQuerySchema,
    TagRecordSchema,
    TagSchema,
)

blp = Blueprint("stores", __name__, url_prefix="/stores", description="Stores")
blp.after_request(public_cache)

# sort=updated_at with updated_after: incremental sync (§13), on (updated_at, id)
# and a store's tags on (store_id, updated_at, id).
STORES = Listing({"id": (Store.id,), "updated_at": (Store.updated_at, Store.id)})
TAGS = Listing({"id": (Tag.id,), "updated_at": (Tag.updated_at, Tag.id)})
STORE_LOCATION = {"Location": {"schema": {"type": "string"}, "description": "URL of the new store"}}
TAG_LOCATION = {"Location": {"schema": {"type": "string"}, "description": "URL of the new tag"}}


def _duplicate(data: dict[str, Any]) -> str:
    return f"A store named {data.get('name')!r} already exists."


def _store(store_id: int) -> tuple[Store, Store]:
    """The store to change, locked until the request commits, so that the checks made
    on it (ownership, If-Match) still hold when the change is written."""
    store = get_or_404(Store, store_id, for_update=True)
    return store, store


def _store_held(store_id: int) -> tuple[Store, Store]:
    """The store a new row goes in, held until the request commits (``held``)."""
    store = get_or_404(Store, store_id, held=True)
    return store, store


def _change(store: Store, data: dict[str, Any], *, merge: bool = True) -> Store:
    with_metadata(store.metadata_, data, merge=merge)
    # Checked only now, for an admin (fields_reserved): nobody else learns which ids exist.
    if "owner_id" in data and db.session.get(User, data["owner_id"]) is None:
        message = f"User {data['owner_id']} does not exist."
        abort(422, errors={"json": {"owner_id": [message]}})
    before = as_json(store)
    shown = StoreRecordSchema().dump(store)
    for key, value in data.items():
        setattr(store, key, value)
    changes = audit.updated(shown, StoreRecordSchema().dump(store))
    if changes:
        audit.record("store.updated", "store", store.id, changes, store_id=store.id)
    commit(
        conflict=_duplicate(data), events=updated("store.updated", store, before, store_id=store.id)
    )
    return store


TRANSFER = {"owner_id": (ADMIN, "transfer a store")}


@blp.route("")
class Stores(MethodView):
    @blp.etag
    @blp.response(200, StoreSchema(many=True), headers=LIST_HEADERS)
    @STORES.paginate(blp, StoreQuerySchema, fields=StoreSchema)
    def get(self, args: dict[str, Any]) -> Select[Store]:
        """List stores"""
        query = select(Store).where(Store.deleted_at.is_(None))
        if "q" in args:
            query = query.where(icontains(Store.name, args["q"]))
        if "owner_id" in args:
            query = query.where(Store.owner_id == args["owner_id"])
        if "updated_after" in args:
            query = query.where(Store.updated_at > args["updated_after"])
        return settled(query, Store.updated_at, args)

    @login_required(blp)
    @any_store_key(blp)
    @blp.arguments(StoreCreateSchema)
    @blp.response(201, StoreSchema, headers=STORE_LOCATION)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, data: dict[str, Any]) -> tuple[Store, int, dict[str, str]]:
        """Create a store; the caller becomes its owner"""
        with_metadata(None, data, merge=False)
        store = Store(owner_id=current_user.id, **data)
        db.session.add(store)
        flush(conflict=_duplicate(data))
        changes = audit.created(StoreRecordSchema().dump(store))
        audit.record("store.created", "store", store.id, changes, store_id=store.id)
        commit(
            conflict=_duplicate(data),
            events=created("store.created", store, owner_id=store.owner_id),
        )
        return store, 201, {"Location": url_for("stores.StoreById", store_id=store.id)}


@blp.route("/<id:store_id>")
@blp.etag
class StoreById(MethodView):
    @blp.response(200, StoreSchema, headers=LAST_MODIFIED)
    @blp.alt_response(404, response="NOT_FOUND")
    @sparse(blp, StoreSchema)
    def get(self, store_id: int) -> Store:
        """One store"""
        store = get_or_404(Store, store_id)
        blp.set_last_modified(store.last_modified)
        return store

    @store_owner_required(blp, _store, etag_schema=StoreSchema)
    @fields_reserved(blp, **TRANSFER)
    @blp.arguments(StoreReplaceSchema)
    @blp.response(200, StoreSchema)
    @blp.alt_response(409, response="CONFLICT")
    def put(self, store: Store, data: dict[str, Any]) -> Store:
        """Replace a store's editable fields; optional ones left out are cleared"""
        return _change(store, dict.fromkeys(STORE_EDITABLE) | data, merge=False)

    @store_owner_required(blp, _store, etag_schema=StoreSchema)
    @fields_reserved(blp, **TRANSFER)
    @blp.arguments(StoreUpdateSchema)
    @blp.response(200, StoreSchema)
    @blp.alt_response(409, response="CONFLICT")
    def patch(self, store: Store, data: dict[str, Any]) -> Store:
        """Change some of a store's fields (`owner_id`: admins only)"""
        return _change(store, data)

    @store_owner_required(blp, _store, etag_schema=StoreSchema, fresh=True)
    @blp.response(204)
    @blp.alt_response(202, **ACCEPTED)
    def delete(self, store: Store) -> Any:
        """Delete a store with its items and tags (fresh token; a job above
        STORE_DELETE_SYNC_MAX items)"""
        changes = audit.deleted(StoreRecordSchema().dump(store))

        def record() -> None:  # with the store's deletion, in its transaction
            audit.record("store.deleted", "store", store.id, changes, store_id=store.id)

        most = current_app.config["STORE_DELETE_SYNC_MAX"]
        if count_items(store.id, limit=most) <= most:
            delete_store(
                store.id, current_app.config["STORE_DELETE_BATCH"], also=record, at_once=True
            )
            return None
        mark_deleting(store)  # the job counts the items (its total) when it starts
        record()  # the store is gone for clients from this commit on
        return start(engine.create("store_delete", current_user.id, store_id=store.id))


@blp.route("/<id:store_id>/items")
class StoreItems(MethodView):
    @blp.etag
    @blp.response(200, ItemSchema(many=True), headers=LIST_HEADERS)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(
        403,
        response="FORBIDDEN",
        description="status= other than active, by anyone but the store's owner or an admin",
    )
    @ITEMS.paginate(blp, StoreItemQuerySchema, fields=ItemSchema)
    def get(self, args: dict[str, Any], store_id: int) -> Select[Any]:
        """List a store's items (same filters as `GET /items`)"""
        get_or_404(Store, store_id)
        return item_search({**args, "store_id": store_id})


@blp.route("/<id:store_id>/tags")
class StoreTags(MethodView):
    @blp.etag
    @blp.response(200, TagSchema(many=True), headers=LIST_HEADERS)
    @blp.alt_response(404, response="NOT_FOUND")
    @TAGS.paginate(blp, TagQuerySchema, fields=TagSchema)
    def get(self, args: dict[str, Any], store_id: int) -> Select[Tag]:
        """List a store's tags"""
        get_or_404(Store, store_id)
        query = select(Tag).where(Tag.store_id == store_id)
        if "updated_after" in args:
            query = query.where(Tag.updated_at > args["updated_after"])
        return settled(query, Tag.updated_at, args)

    @store_owner_required(blp, _store_held)
    @blp.arguments(TagInputSchema)
    @blp.response(201, TagSchema, headers=TAG_LOCATION)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, store: Store, data: dict[str, Any]) -> tuple[Tag, int, dict[str, str]]:
        """Create a tag in a store"""
        tag = Tag(store_id=store.id, name=data["name"])
        db.session.add(tag)
        conflict = f"Store {store.id} already has a tag named {data['name']!r}."
        flush(conflict=conflict)
        changes = audit.created(TagRecordSchema().dump(tag))
        audit.record("tag.created", "tag", tag.id, changes, store_id=store.id)
        commit(
            conflict=conflict,
            events=created("tag.created", tag, store_id=store.id, owner_id=store.owner_id),
        )
        return tag, 201, {"Location": url_for("tags.TagById", tag_id=tag.id)}
