"""Batch changes to a store's items (§9): up to 100 creates, updates and deletes,
all applied in one transaction or none at all."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask.views import MethodView
from flask_jwt_extended import current_user

from core.auth import audit
from core.auth.permissions import require_fresh, store_owner_required
from core.catalog.batch import Plan
from core.web.body import body_object
from core.web.errors import abort
from core.web.http import public_cache
from core.web.smorest import Blueprint
from models import Store
from resources.common import commit, flush, get_or_404
from schemas import BatchResultSchema, BatchSchema, ItemRecordSchema

blp = Blueprint(
    "batch", __name__, url_prefix="/stores", description="Batch changes to a store's items"
)
blp.after_request(public_cache)


def _store(store_id: int) -> tuple[Store, Store]:
    """The store, locked until the request commits: batches of one store take turns,
    so the names each one checks are still the ones there when it writes."""
    store = get_or_404(Store, store_id, for_update=True)
    return store, store


def _fresh_for_deletes(func: Callable[..., Any]) -> Callable[..., Any]:
    """A batch that deletes needs a fresh token, like DELETE; known from the body,
    looked at before it is validated (so a stale token is told so first)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if body_object().get("delete"):
            require_fresh()
        return func(*args, **kwargs)

    return wrapper


def _record(store: Store, before: dict[int, Any], result: dict[str, Any]) -> None:
    """One audit entry per item, as the single-item endpoints write them."""
    for item_id in result["deleted"]:
        changes = audit.deleted(before[item_id])
        audit.record("item.deleted", "item", item_id, changes, store_id=store.id)
    for item in result["updated"]:
        changes = audit.updated(before[item.id], ItemRecordSchema().dump(item))
        if changes:
            audit.record("item.updated", "item", item.id, changes, store_id=store.id)
    for item in result["created"]:
        changes = audit.created(ItemRecordSchema().dump(item))
        audit.record("item.created", "item", item.id, changes, store_id=store.id)


@blp.route("/<id:store_id>/items/batch")
class ItemsBatch(MethodView):
    @store_owner_required(blp, _store)
    @_fresh_for_deletes
    @blp.arguments(
        BatchSchema,
        example={
            "create": [{"name": "Tea", "price": 2.5}],
            "update": [{"id": 1, "price": 1.99}],
            "delete": [3],
        },
    )
    @blp.response(200, BatchResultSchema)
    @blp.alt_response(409, response="CONFLICT", description="A name taken twice; nothing applied")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    def post(self, store: Store, data: dict[str, Any]) -> dict[str, Any]:
        """Create, change and delete up to 100 of a store's items at once (all or nothing)"""
        plan = Plan(store, data)
        if plan.errors:
            abort(422, message="Nothing was applied; see errors.", errors={"json": plan.errors})
        name = plan.duplicate_name()
        if name is not None:
            abort(
                409,
                message=f"Store {store.id} would have two items named {name!r}; "
                "nothing was applied.",
                error="already_exists",
            )
        sku = plan.duplicate_sku()
        if sku is not None:
            abort(
                409,
                message=f"Store {store.id} would have two items with SKU {sku!r}; "
                "nothing was applied.",
                error="already_exists",
            )
        before = {item_id: ItemRecordSchema().dump(item) for item_id, item in plan.items.items()}
        result = plan.apply(current_user.id)

        def conflict(violated: str) -> str:
            what = "SKU" if "sku" in violated else "name"
            return f"An item {what} in the batch is taken in store {store.id}; nothing was applied."

        flush(conflict=conflict)
        _record(store, before, result)
        commit(conflict=conflict, events=plan.record_events)
        return result
