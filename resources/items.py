"""Items: listing and search, changes by the store's owner, and tagging."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_jwt_extended import current_user
from sqlalchemy import Select, bindparam, select
from sqlalchemy.exc import IntegrityError

from core.auth import audit
from core.auth.permissions import (
    authorize_store,
    login_required,
    may_see,
    store_in_body,
    store_owner_required,
)
from core.catalog import stock
from core.catalog.metadata import TooManyKeysError, merged, replaced
from core.catalog.queries import (
    ITEM_COLUMNS,
    ITEM_FROM,
    ITEM_LOADS,
    ITEMS,
    TAG_COLUMNS,
    as_item,
    item_search,
)
from core.events.catalog import initial_stock as initial_stock_moved
from core.events.outbox import as_json, record
from core.lists.listing import LIST_HEADERS
from core.web.conditions import LAST_MODIFIED
from core.web.errors import abort
from core.web.http import public_cache
from core.web.smorest import Blueprint
from core.web.sparse import sparse
from db import db
from models import Item, Store, Tag, item_tags
from models.types import utcnow
from resources.common import (
    KEY_SHARE,
    commit,
    created,
    flush,
    get_or_404,
    is_unique_violation,
    updated,
)
from schemas import (
    ItemCreateSchema,
    ItemQuerySchema,
    ItemRecordSchema,
    ItemReplaceSchema,
    ItemSchema,
    ItemUpdateSchema,
)

blp = Blueprint("items", __name__, url_prefix="/items", description="Items and their tags")
blp.after_request(public_cache)

_stores = Store.__table__.c

# One item, its store and its tags in one statement: one row per tag (or one without),
# with the times the store and the tags changed (the item's Last-Modified, §16).
ONE_ITEM = (
    select(
        *ITEM_COLUMNS,
        *TAG_COLUMNS,
        _stores.updated_at.label("store_updated_at"),
        Tag.__table__.c.updated_at.label("tag_updated_at"),
    )
    .select_from(
        ITEM_FROM.outerjoin(item_tags, item_tags.c.item_id == Item.__table__.c.id).outerjoin(
            Tag.__table__, Tag.__table__.c.id == item_tags.c.tag_id
        )
    )
    .where(Item.__table__.c.id == bindparam("item_id"), _stores.deleted_at.is_(None))
    .order_by(TAG_COLUMNS[0])
)
LOCATION = {"Location": {"schema": {"type": "string"}, "description": "URL of the new item"}}


def read_item(item_id: int) -> dict[str, Any] | None:
    """The item as ItemSchema dumps it (and its ``last_modified``), or None. One
    statement is one snapshot, so it runs in autocommit: one round trip, without
    BEGIN and ROLLBACK around it."""
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        rows = conn.execute(ONE_ITEM, {"item_id": item_id}).all()
    if not rows:
        return None
    linked = [r for r in rows if r.tag_id is not None]
    item = as_item(rows[0]._mapping, [{"id": r.tag_id, "name": r.tag_name} for r in linked])
    item["last_modified"] = max(
        [rows[0].updated_at, rows[0].store_updated_at, *(r.tag_updated_at for r in linked)]
    )
    return item


def get_item(item_id: int, *, for_update: bool = False) -> Item:
    return get_or_404(Item, item_id, *ITEM_LOADS, for_update=for_update)


def _item(item_id: int) -> tuple[Store, Item]:
    """The item to change, locked until the request commits, so that the checks made
    on it (ownership, If-Match) still hold when the change is written."""
    item = get_item(item_id, for_update=True)
    return item.store, item


def _may_add_to(store_id: int) -> None:
    """The body's store, when it exists, is the caller's to add to (else 403)."""
    store = db.session.get(Store, store_id)
    if store is not None:
        authorize_store(store)


def _item_and_tag(item_id: int, tag_id: int) -> tuple[Store, Item, Tag]:
    # The item is locked: concurrent links and unlinks of it take turns, so the
    # tags it is answered with are the ones it has. The tag FOR KEY SHARE (as the
    # link's foreign key would hold it, other links go on): a deletion of it under way
    # finishes first and this finds no tag (404), or waits and finds it in use (409).
    item = get_item(item_id, for_update=True)
    tag = db.session.get(Tag, tag_id, with_for_update=KEY_SHARE)
    if tag is None:
        abort(404, message=f"Tag {tag_id} not found.")
    return item.store, item, tag


def _duplicate(item: Item) -> Any:
    """The 409's message: the SKU or the name that is taken (§13)."""

    # Read now: after the failed commit's rollback, the item holds the old values.
    store_id, sku, name = item.store_id, item.sku, item.name

    def message(violated: str) -> str:
        if "sku" in violated:
            return f"Store {store_id} already has an item with SKU {sku!r}."
        return f"Store {store_id} already has an item named {name!r}."

    return message


def with_metadata(current: dict[str, str] | None, data: dict[str, Any], *, merge: bool) -> None:
    """``data``'s metadata as it will be stored: merged into ``current`` (PATCH) or
    replacing it (POST, PUT); past 50 keys after the merge, 422."""
    if "metadata_" not in data:
        return
    try:
        data["metadata_"] = (
            merged(current, data["metadata_"]) if merge else replaced(data["metadata_"])
        )
    except TooManyKeysError as exc:
        abort(422, errors={"json": {"metadata": [str(exc)]}})


# What PUT sets when left out: every editable field but name and price.
ITEM_DEFAULTS: dict[str, Any] = {
    "description": None,
    "sku": None,
    "status": "active",
    "low_stock_threshold": None,
    "metadata_": {},
}


def visible_item(item_id: int) -> dict[str, Any]:
    """The item as ItemSchema dumps it, if the caller may see it (§13), else 404."""
    item = read_item(item_id)
    if item is None or not may_see(item["status"], item["store_owner_id"], item["store_id"]):
        abort(404, message=f"Item {item_id} not found.")
    return item


def _tags_changed(item: Item, before: dict[str, Any]) -> None:
    """A tag linked or unlinked is an ``item.updated`` (contract §10)."""
    updated("item.updated", item, before, store_id=item.store_id, owner_id=item.store.owner_id)()


def _record_update(item: Item, before: dict[str, Any]) -> None:
    changes = audit.updated(before, ItemRecordSchema().dump(item))
    if changes:
        audit.record("item.updated", "item", item.id, changes, store_id=item.store_id)


@blp.route("")
class Items(MethodView):
    @blp.etag
    @blp.response(200, ItemSchema(many=True), headers=LIST_HEADERS)
    @blp.alt_response(
        403, response="FORBIDDEN", description="status= other than active, without being signed in"
    )
    @ITEMS.paginate(blp, ItemQuerySchema, fields=ItemSchema)
    def get(self, args: dict[str, Any]) -> Select[Any]:
        """List and search items"""
        return item_search(args)

    @login_required(blp)
    @store_in_body(_may_add_to)
    @blp.arguments(ItemCreateSchema)
    @blp.response(201, ItemSchema, headers=LOCATION)
    @blp.alt_response(403, response="FORBIDDEN")  # the store is named in the body
    @blp.alt_response(409, response="CONFLICT")
    def post(self, data: dict[str, Any]) -> tuple[Item, int, dict[str, str]]:
        """Create an item in one of your stores"""
        # The schema checked it exists; a deletion may have come since (and waits from
        # here on: the store is held FOR KEY SHARE, resources/common.py KEY_SHARE).
        store = db.session.get(Store, data["store_id"], with_for_update=KEY_SHARE)
        if store is None:
            message = f"Store {data['store_id']} does not exist."
            abort(422, message=message, errors={"json": {"store_id": [message]}})
        authorize_store(store)
        initial_stock = data.pop("stock", None)
        with_metadata(None, data, merge=False)
        item = Item(**data, store=store, tags=[])
        db.session.add(item)
        movement = None
        if initial_stock is not None:
            movement = stock.initial_count(item, initial_stock, user_id=current_user.id)
        flush(conflict=_duplicate(item))
        changes = audit.created(ItemRecordSchema().dump(item))
        audit.record("item.created", "item", item.id, changes, store_id=store.id)
        item_created = created("item.created", item, store_id=store.id, owner_id=store.owner_id)

        def events() -> None:
            item_created()
            initial_stock_moved(item, movement)

        commit(conflict=_duplicate(item), events=events)
        return item, 201, {"Location": url_for("items.ItemById", item_id=item.id)}


@blp.route("/<id:item_id>")
@blp.etag
class ItemById(MethodView):
    @blp.response(200, ItemSchema, headers=LAST_MODIFIED)
    @blp.alt_response(404, response="NOT_FOUND")
    @sparse(blp, ItemSchema)
    def get(self, item_id: int) -> dict[str, Any]:
        """One item (one that is not active: only to its store's owner and admins)"""
        item = visible_item(item_id)
        blp.set_last_modified(item["last_modified"])
        return item

    def _change(self, item: Item, data: dict[str, Any], *, merge: bool = True) -> Item:
        before = as_json(item)
        shown = ItemRecordSchema().dump(item)
        with_metadata(item.metadata_, data, merge=merge)
        for key, value in data.items():
            setattr(item, key, value)
        _record_update(item, shown)
        commit(
            conflict=_duplicate(item),
            events=updated(
                "item.updated", item, before, store_id=item.store_id, owner_id=item.store.owner_id
            ),
        )
        return item

    @store_owner_required(blp, _item, etag_schema=ItemSchema)
    @blp.arguments(ItemReplaceSchema)
    @blp.response(200, ItemSchema)
    @blp.alt_response(409, response="CONFLICT")
    def put(self, item: Item, data: dict[str, Any]) -> Item:
        """Replace an item's editable fields (never creates); those left out take their defaults"""
        return self._change(item, ITEM_DEFAULTS | data, merge=False)

    @store_owner_required(blp, _item, etag_schema=ItemSchema)
    @blp.arguments(ItemUpdateSchema)
    @blp.response(200, ItemSchema)
    @blp.alt_response(409, response="CONFLICT")
    def patch(self, item: Item, data: dict[str, Any]) -> Item:
        """Change some of an item's fields"""
        return self._change(item, data)

    @store_owner_required(blp, _item, etag_schema=ItemSchema, fresh=True)
    @blp.response(204)
    def delete(self, item: Item) -> None:
        """Delete an item (fresh token)"""
        record(
            "item.deleted",
            store_id=item.store_id,
            obj={"id": item.id},
            owner_id=item.store.owner_id,
        )
        changes = audit.deleted(ItemRecordSchema().dump(item))
        audit.record("item.deleted", "item", item.id, changes, store_id=item.store_id)
        db.session.delete(item)
        db.session.commit()


@blp.route("/<id:item_id>/tags/<id:tag_id>")
class ItemTag(MethodView):
    @store_owner_required(blp, _item_and_tag)
    @blp.response(201, ItemSchema)
    @blp.alt_response(200, schema=ItemSchema, description="Already linked", success=True)
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    def post(self, item: Item, tag: Tag) -> tuple[Item, int]:
        """Put a tag of the item's store on the item"""
        if tag.store_id != item.store_id:
            message = f"Tag {tag.id} belongs to another store than item {item.id}."
            abort(422, message=message, errors={"path": {"tag_id": [message]}})
        if tag in item.tags:
            return item, 200
        before = as_json(item)
        shown = ItemRecordSchema().dump(item)
        item.tags.append(tag)
        item.tags.sort(key=lambda t: t.id)
        item.updated_at = utcnow()
        _record_update(item, shown)
        try:
            db.session.flush()
            _tags_changed(item, before)
            db.session.commit()
        except IntegrityError as exc:
            db.session.rollback()
            if not is_unique_violation(exc):
                raise
            # A concurrent request linked it first: the same outcome as "already linked".
            db.session.expunge_all()
            return get_item(item.id), 200
        return item, 201

    @store_owner_required(blp, _item_and_tag, etag_schema=ItemSchema)  # the item's ETag
    @blp.response(204)
    def delete(self, item: Item, tag: Tag) -> None:
        """Take a tag off an item"""
        if tag not in item.tags:
            abort(404, message=f"Item {item.id} does not carry tag {tag.id}.")
        before = as_json(item)
        shown = ItemRecordSchema().dump(item)
        item.tags.remove(tag)
        item.updated_at = utcnow()
        db.session.flush()
        _tags_changed(item, before)
        _record_update(item, shown)
        db.session.commit()
