"""Batch changes to a store's items (§9): up to 100 creates, updates and deletes,
all applied in one transaction or none at all."""

from __future__ import annotations

import json
from functools import wraps

from flask import request
from flask.views import MethodView
from flask_jwt_extended import current_user
from sqlalchemy import delete, func, select
from sqlalchemy.orm import joinedload, selectinload

from core import stock
from core.errors import abort
from core.http import public_cache
from core.permissions import require_fresh, store_owner_required
from core.smorest import Blueprint
from db import db, unicode_lower
from models import Item, Store
from resources.common import commit, get_or_404
from schemas import BatchResultSchema, BatchSchema

blp = Blueprint(
    "batch", __name__, url_prefix="/stores", description="Batch changes to a store's items"
)
blp.after_request(public_cache)


def _store(store_id: int) -> tuple[Store, Store]:
    """The store, locked until the request commits: batches of one store take turns,
    so the names each one checks are still the ones there when it writes."""
    store = get_or_404(Store, store_id, for_update=True)
    return store, store


def _fresh_for_deletes(func):
    """A batch that deletes needs a fresh token, like DELETE; known from the body,
    looked at before it is validated (so a stale token is told so first)."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            body = json.loads(request.get_data(cache=True))
        except (ValueError, RecursionError):
            body = None
        if isinstance(body, dict) and body.get("delete"):
            require_fresh()
        return func(*args, **kwargs)

    return wrapper


class Plan:
    """A validated batch, checked against the database: the rows it touches, and
    the errors by list and position (``update.3.id``) if any."""

    def __init__(self, store: Store, data: dict) -> None:
        self.store = store
        self.creates: list[dict] = data.get("create") or []
        self.updates: list[dict] = data.get("update") or []
        self.deletes: list[int] = data.get("delete") or []
        self.errors: dict[str, dict] = {}
        ids = {*self.deletes, *(u["id"] for u in self.updates)}
        found = ids and db.session.scalars(
            select(Item)
            .where(Item.id.in_(ids))
            .options(joinedload(Item.store), selectinload(Item.tags))
        )
        self.items = {item.id: item for item in found or () if item.store_id == store.id}
        self._check_ids()

    def _error(self, where: str, position: int, field: str | None, message: str) -> None:
        entry = self.errors.setdefault(where, {})
        if field is None:
            entry.setdefault(position, []).append(message)
        else:
            entry.setdefault(position, {}).setdefault(field, []).append(message)

    def _check_ids(self) -> None:
        seen: set[int] = set()
        named: list[tuple[str, int, int, str | None]] = [
            *(("delete", position, item_id, None) for position, item_id in enumerate(self.deletes)),
            *(("update", position, u["id"], "id") for position, u in enumerate(self.updates)),
        ]
        for where, position, item_id, field in named:
            if item_id not in self.items:
                message = f"Store {self.store.id} has no item {item_id}."
                self._error(where, position, field, message)
            elif item_id in seen:
                self._error(where, position, field, f"Item {item_id} is named twice.")
            seen.add(item_id)

    def duplicate_name(self) -> str | None:
        """A name the batch would give two items of the store, if any."""
        deleted = set(self.deletes)
        # Lowercased as the database does (db.unicode_lower), to compare with lower(name).
        renamed = {u["id"]: unicode_lower(u["name"]) for u in self.updates if "name" in u}
        wanted = [*renamed.values(), *(unicode_lower(c["name"]) for c in self.creates)]
        if len(set(wanted)) < len(wanted):
            return next(name for name in wanted if wanted.count(name) > 1)
        if not wanted:
            return None
        holders = db.session.execute(
            select(Item.id, func.lower(Item.name)).where(
                Item.store_id == self.store.id, func.lower(Item.name).in_(wanted)
            )
        ).all()
        for item_id, name in holders:
            # Kept by an item the batch neither deletes nor renames, and wanted by another.
            if item_id not in deleted and item_id not in renamed:
                return name
        return None

    def apply(self) -> dict:
        if self.deletes:
            db.session.execute(
                delete(Item).where(Item.id.in_(self.deletes)),
                execution_options={"synchronize_session": False},
            )
            for item_id in self.deletes:
                db.session.expunge(self.items[item_id])
        updated = []
        for entry in self.updates:
            item = self.items[entry["id"]]
            for key, value in entry.items():
                if key != "id":
                    setattr(item, key, value)
            updated.append(item)
        created = []
        for entry in self.creates:
            initial = entry.pop("stock", None)
            item = Item(**entry, store=self.store, tags=[])
            db.session.add(item)
            if initial is not None:
                stock.initial_count(item, initial, user_id=current_user.id)
            created.append(item)
        return {"created": created, "updated": updated, "deleted": self.deletes}


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
    def post(self, store, data):
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
            )
        result = plan.apply()
        commit(
            conflict=f"An item name in the batch is taken in store {store.id}; nothing was applied."
        )
        return result
