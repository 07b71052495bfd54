"""Stock: an item's ledger of movements, and the one way to change its stock."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_jwt_extended import current_user
from sqlalchemy import Select, select
from sqlalchemy.orm import joinedload

from core.auth import audit
from core.auth.permissions import may_see, store_owner_required
from core.catalog import stock
from core.events.catalog import stock_moved
from core.lists.listing import LIST_HEADERS, Listing
from core.web.errors import abort
from core.web.http import public_cache
from core.web.smorest import Blueprint
from db import db
from models import Item, StockMovement, Store
from resources.common import get_or_404
from schemas import StockMovementInputSchema, StockMovementSchema

blp = Blueprint(
    "stock", __name__, url_prefix="/items", description="Stock: movements in and out of an item"
)
blp.after_request(public_cache)

# An item's movements, newest first (ledger order); served by the key (item_id, id).
MOVEMENTS = Listing({"id": (StockMovement.id,)}, default="-id", sortable=False)

LOCATION = {"Location": {"schema": {"type": "string"}, "description": "URL of the movement"}}
CONFLICTS = (
    "`insufficient_stock` (the message says the current stock), `stock_changed` (a count "
    "whose `expected` is not the stock), `stock_overflow`, `item_archived` (a delta on an "
    "archived item); nothing changes"
)


def _visible(item_id: int) -> None:
    """404 unless the item exists and the caller may see it (§13: an item that is not
    active shows to its store's owner and admins only, its ledger too)."""
    found = db.session.execute(
        select(Item.status, Store.owner_id, Item.store_id).join(Store).where(Item.id == item_id)
    ).first()
    if found is None or not may_see(found.status, found.owner_id, found.store_id):
        abort(404, message=f"Item {item_id} not found.")


def _item(item_id: int) -> tuple[Store, Item]:
    """The item, locked until the request commits: movements of one item take turns,
    and each is judged against the stock the one before it left."""
    item = get_or_404(Item, item_id, joinedload(Item.store), for_update=True)
    return item.store, item


@blp.route("/<id:item_id>/stock")
class ItemStock(MethodView):
    @blp.etag
    @blp.response(200, StockMovementSchema(many=True), headers=LIST_HEADERS)
    @blp.alt_response(404, response="NOT_FOUND")
    @MOVEMENTS.paginate(blp)
    def get(self, _args: dict[str, Any], item_id: int) -> Select[StockMovement]:
        """An item's stock movements, newest first"""
        _visible(item_id)
        return select(StockMovement).where(StockMovement.item_id == item_id)

    @store_owner_required(blp, _item)
    @blp.arguments(StockMovementInputSchema)
    @blp.response(201, StockMovementSchema, headers=LOCATION)
    @blp.alt_response(409, response="CONFLICT", description=CONFLICTS)
    def post(self, item: Item, data: dict[str, Any]) -> tuple[StockMovement, int, dict[str, str]]:
        """Move stock in or out (`delta`), or record a count (`set` + `expected`)"""
        try:
            if "set" in data:
                movement = stock.count(
                    item,
                    data["set"],
                    expected=data["expected"],
                    reference=data.get("reference"),
                    user_id=current_user.id,
                )
            else:
                movement = stock.move(
                    item,
                    data["delta"],
                    data["reason"],
                    reference=data.get("reference"),
                    user_id=current_user.id,
                )
        except stock.StockError as exc:
            db.session.rollback()
            abort(409, message=str(exc), error=exc.code)
        stock_moved(item, movement)
        db.session.flush()
        changes = audit.created(StockMovementSchema().dump(movement))
        audit.record(
            "stock_movement.created", "stock_movement", movement.id, changes, store_id=item.store_id
        )
        db.session.commit()
        location = url_for("stock.Movement", item_id=item.id, movement_id=movement.id)
        return movement, 201, {"Location": location}


@blp.route("/<id:item_id>/stock/<id:movement_id>")
@blp.etag
class Movement(MethodView):
    @blp.response(200, StockMovementSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, item_id: int, movement_id: int) -> StockMovement:
        """One stock movement"""
        _visible(item_id)
        movement = db.session.get(StockMovement, movement_id)
        # The item is read too: one of a store being deleted is gone (§12).
        if movement is None or movement.item_id != item_id or not db.session.get(Item, item_id):
            abort(404, message=f"Item {item_id} has no stock movement {movement_id}.")
        return movement
