"""Items: listing and search, changes by the store's owner, and tagging."""

from __future__ import annotations

from flask import url_for
from flask.views import MethodView
from flask_jwt_extended import current_user
from flask_smorest import abort
from sqlalchemy import Select, case, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload, selectinload

from core import stock
from core.http import public_cache
from core.permissions import authorize_store, login_required, store_owner_required
from core.smorest import Blueprint
from db import db
from models import Item, Store, Tag, item_tags
from models.types import utcnow
from resources.common import (
    commit,
    get_or_404,
    icontains,
    iequals,
    is_unique_violation,
    lower,
    paginate,
)
from schemas import (
    ItemCreateSchema,
    ItemQuerySchema,
    ItemReplaceSchema,
    ItemSchema,
    ItemUpdateSchema,
)

blp = Blueprint("items", __name__, url_prefix="/items", description="Items and their tags")
blp.after_request(public_cache)

# Exactly what ItemSchema nests: the store (one row) and the tags (a collection).
ITEM_LOADS = (joinedload(Item.store), selectinload(Item.tags))
SORT_KEYS = {
    "id": (Item.id,),
    "name": (lower(Item.name), Item.id),
    "price": (Item.price, Item.id),
    "created_at": (Item.created_at, Item.id),
    "stock": (Item.stock, Item.id),
}
LOCATION = {"Location": {"schema": {"type": "string"}, "description": "URL of the new item"}}


def item_search(args: dict) -> Select:
    """``GET /items`` filters and sort order as one ordered SELECT of items."""
    query = select(Item).options(*ITEM_LOADS)
    if args.get("store_id") is not None:
        query = query.where(Item.store_id == args["store_id"])
    if args.get("min_price") is not None:
        query = query.where(Item.price >= args["min_price"])
    if args.get("max_price") is not None:
        query = query.where(Item.price <= args["max_price"])
    if args.get("in_stock") is not None:
        query = query.where(Item.stock > 0 if args["in_stock"] else Item.stock == 0)
    if args.get("q"):
        query = query.where(
            or_(icontains(Item.name, args["q"]), icontains(Item.description, args["q"]))
        )
    names = set(args.get("tag") or ())
    if names:
        # Items carrying every named tag: among an item's links to those names, one
        # for each name. (Names are compared by the database, so "Dairy" and "dairy"
        # asked together are one name to it, whatever Python's str.lower thinks.)
        carrying_all = (
            select(item_tags.c.item_id)
            .join(Tag, Tag.id == item_tags.c.tag_id)
            .where(lower(Tag.name).in_([lower(name) for name in names]))
            .group_by(item_tags.c.item_id)
            .having(*(func.max(case((iequals(Tag.name, name), 1), else_=0)) == 1 for name in names))
        )
        query = query.where(Item.id.in_(carrying_all))
    sort = args.get("sort", "id")
    keys = SORT_KEYS[sort.lstrip("-")]
    return query.order_by(*(key.desc() for key in keys) if sort.startswith("-") else keys)


def get_item(item_id: int, *, for_update: bool = False) -> Item:
    return get_or_404(Item, item_id, *ITEM_LOADS, for_update=for_update)


def _item(item_id: int) -> tuple[Store, Item]:
    """The item to change, locked until the request commits, so that the checks made
    on it (ownership, If-Match) still hold when the change is written."""
    item = get_item(item_id, for_update=True)
    return item.store, item


def _item_and_tag(item_id: int, tag_id: int) -> tuple[Store, Item, Tag]:
    # The item is locked: concurrent links and unlinks of it take turns, so the
    # tags it is answered with are the ones it has.
    item = get_item(item_id, for_update=True)
    return item.store, item, get_or_404(Tag, tag_id)


def _duplicate(item: Item) -> str:
    return f"Store {item.store_id} already has an item named {item.name!r}."


@blp.route("")
class Items(MethodView):
    @blp.etag
    @blp.arguments(ItemQuerySchema, location="query")
    @blp.response(200, ItemSchema(many=True))
    @blp.paginate()
    def get(self, args, pagination_parameters):
        """List and search items"""
        return paginate(item_search(args), pagination_parameters)

    @login_required(blp)
    @blp.arguments(ItemCreateSchema)
    @blp.response(201, ItemSchema, headers=LOCATION)
    @blp.alt_response(403, response="FORBIDDEN")  # the store is named in the body
    @blp.alt_response(409, response="CONFLICT")
    def post(self, data):
        """Create an item in one of your stores"""
        store = db.session.get(Store, data["store_id"])  # the schema checked it exists
        authorize_store(store)
        initial_stock = data.pop("stock", None)
        item = Item(**data, store=store, tags=[])
        db.session.add(item)
        if initial_stock is not None:
            stock.initial_count(item, initial_stock, user_id=current_user.id)
        commit(conflict=_duplicate(item))
        return item, 201, {"Location": url_for("items.ItemById", item_id=item.id)}


@blp.route("/<id:item_id>")
@blp.etag
class ItemById(MethodView):
    @blp.response(200, ItemSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, item_id):
        """One item"""
        return get_item(item_id)

    def _change(self, item: Item, data: dict) -> Item:
        for key, value in data.items():
            setattr(item, key, value)
        commit(conflict=_duplicate(item))
        return item

    @store_owner_required(blp, _item, etag_schema=ItemSchema)
    @blp.arguments(ItemReplaceSchema)
    @blp.response(200, ItemSchema)
    @blp.alt_response(409, response="CONFLICT")
    def put(self, item, data):
        """Replace an item's name, price and description (never creates)"""
        return self._change(item, {"description": None} | data)

    @store_owner_required(blp, _item, etag_schema=ItemSchema)
    @blp.arguments(ItemUpdateSchema)
    @blp.response(200, ItemSchema)
    @blp.alt_response(409, response="CONFLICT")
    def patch(self, item, data):
        """Change some of an item's fields"""
        return self._change(item, data)

    @store_owner_required(blp, _item, etag_schema=ItemSchema, fresh=True)
    @blp.response(204)
    def delete(self, item):
        """Delete an item (fresh token)"""
        db.session.delete(item)
        db.session.commit()


@blp.route("/<id:item_id>/tags/<id:tag_id>")
class ItemTag(MethodView):
    @store_owner_required(blp, _item_and_tag)
    @blp.response(201, ItemSchema)
    @blp.alt_response(200, schema=ItemSchema, description="Already linked", success=True)
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    def post(self, item, tag):
        """Put a tag of the item's store on the item"""
        if tag.store_id != item.store_id:
            message = f"Tag {tag.id} belongs to another store than item {item.id}."
            abort(422, message=message, errors={"path": {"tag_id": [message]}})
        if tag in item.tags:
            return item, 200
        item.tags.append(tag)
        item.tags.sort(key=lambda t: t.id)
        item.updated_at = utcnow()
        try:
            db.session.commit()
        except IntegrityError as exc:
            db.session.rollback()
            if not is_unique_violation(exc):
                raise
            # A concurrent request linked it first: the same outcome as "already linked".
            db.session.expunge_all()
            return get_item(item.id), 200
        return item, 201

    @store_owner_required(blp, _item_and_tag)
    @blp.response(204)
    def delete(self, item, tag):
        """Take a tag off an item"""
        if tag not in item.tags:
            abort(404, message=f"Item {item.id} does not carry tag {tag.id}.")
        item.tags.remove(tag)
        item.updated_at = utcnow()
        db.session.commit()
