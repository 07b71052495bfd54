"""A batch of changes to one store's items (§9), checked against the database as a
whole before anything is written: the rows it touches, and the errors by list and
position (``update.3.id``) if any."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, cast, delete, func, select, update
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from core.catalog import stock
from core.catalog.metadata import TooManyKeysError, merged, replaced
from core.events.catalog import initial_stock
from core.events.outbox import as_json, changes, record
from db import db, unicode_lower
from models import Item, StockMovement, Store


class Plan:
    """A validated batch, checked against the database: the rows it touches, and
    the errors by list and position (``update.3.id``) if any."""

    def __init__(self, store: Store, data: dict[str, Any]) -> None:
        self.store = store
        self.creates: list[dict[str, Any]] = data.get("create") or []
        self.updates: list[dict[str, Any]] = data.get("update") or []
        self.deletes: list[int] = data.get("delete") or []
        self.errors: dict[str, dict[int, Any]] = {}
        ids = {*self.deletes, *(u["id"] for u in self.updates)}
        # Locked until the commit, as PATCH and DELETE lock the one item they change:
        # one committed meanwhile is read as it is now (its metadata merged into, its
        # deletion an unknown id), not lost or met as a row that went away.
        found = ids and db.session.scalars(
            select(Item)
            .where(Item.id.in_(ids))
            .options(joinedload(Item.store), selectinload(Item.tags))
            .with_for_update(of=Item)
        )
        self.items = {item.id: item for item in found or () if item.store_id == store.id}
        self._check_ids()
        self._metadata()

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

    def _metadata(self) -> None:
        """Metadata as it will be stored: an update's merged into the item's (§13)."""
        entries = [
            *(("create", position, None, c) for position, c in enumerate(self.creates)),
            *(("update", position, u["id"], u) for position, u in enumerate(self.updates)),
        ]
        for where, position, item_id, entry in entries:
            if "metadata_" not in entry:
                continue
            item = self.items.get(item_id) if item_id is not None else None
            try:
                if where == "create":
                    entry["metadata_"] = replaced(entry["metadata_"])
                elif item is not None:
                    entry["metadata_"] = merged(item.metadata_, entry["metadata_"])
            except TooManyKeysError as exc:
                self._error(where, position, "metadata", str(exc))

    def duplicate_sku(self) -> str | None:
        """A SKU the batch would give two items of the store, if any (case-sensitive,
        judged on the batch's final state, like names)."""
        deleted = set(self.deletes)
        changed = {u["id"]: u["sku"] for u in self.updates if "sku" in u}
        wanted = [sku for sku in changed.values() if sku is not None]
        wanted += [c["sku"] for c in self.creates if c.get("sku") is not None]
        if len(set(wanted)) < len(wanted):
            return str(next(sku for sku in wanted if wanted.count(sku) > 1))
        if not wanted:
            return None
        holders = db.session.execute(
            select(Item.id, Item.sku).where(Item.store_id == self.store.id, Item.sku.in_(wanted))
        ).all()
        for item_id, sku in holders:
            if item_id not in deleted and item_id not in changed:
                return str(sku)
        return None

    def duplicate_name(self) -> str | None:
        """A name the batch would give two items of the store, if any, as the batch
        spells it."""
        deleted = set(self.deletes)
        # Lowercased as the database does (db.unicode_lower), to compare with lower(name).
        sent = [
            *(u["name"] for u in self.updates if "name" in u),
            *(c["name"] for c in self.creates),
        ]
        spelled: dict[str, str] = {unicode_lower(n): n for n in reversed(sent)}  # first spelling
        renamed = {u["id"]: unicode_lower(u["name"]) for u in self.updates if "name" in u}
        wanted = [*renamed.values(), *(unicode_lower(c["name"]) for c in self.creates)]
        if len(set(wanted)) < len(wanted):
            return spelled[next(name for name in wanted if wanted.count(name) > 1)]
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
                return spelled.get(name, str(name))
        return None

    def _free_names(self) -> None:
        """Give every renamed item a placeholder name first (one statement; the
        store is locked, so nobody else sees it): the unique index, checked row by
        row, then judges only the final names, whatever order the rows are written
        in (two items may swap names). A name sent unchanged is left alone: written,
        it would move the item's ``updated_at`` with no change to tell (no event)."""
        renamed = [
            u["id"] for u in self.updates if "name" in u and u["name"] != self.items[u["id"]].name
        ]
        if renamed:
            db.session.execute(
                update(Item)
                .where(Item.id.in_(renamed))
                .values(name="\x1fbatch " + cast(Item.id, String)),
                execution_options={"synchronize_session": False},
            )
            for item_id in renamed:  # so that even an unchanged name is written back
                db.session.expire(self.items[item_id], ["name"])

    def apply(self, user_id: int | None) -> dict[str, Any]:
        # As GET returned them before the batch: the updates' `previous`.
        self.before = {entry["id"]: as_json(self.items[entry["id"]]) for entry in self.updates}
        if self.deletes:
            db.session.execute(
                delete(Item).where(Item.id.in_(self.deletes)),
                execution_options={"synchronize_session": False},
            )
            for item_id in self.deletes:
                db.session.expunge(self.items[item_id])
        # SKUs that change are first let go of, so that two items may swap theirs (the
        # unique index is checked per statement; the final state was checked above).
        moving = [
            u["id"] for u in self.updates if "sku" in u and u["sku"] != self.items[u["id"]].sku
        ]
        if moving:
            db.session.execute(
                update(Item).where(Item.id.in_(moving)).values(sku=None),
                execution_options={"synchronize_session": False},
            )
            for item_id in moving:
                set_committed_value(self.items[item_id], "sku", None)
        self._free_names()
        updated = []
        for entry in self.updates:
            item = self.items[entry["id"]]
            for key, value in entry.items():
                if key != "id":
                    setattr(item, key, value)
            updated.append(item)
        created = []
        self.first_counts: list[tuple[Item, StockMovement]] = []
        for entry in self.creates:
            initial = entry.pop("stock", None)
            item = Item(**entry, store=self.store, tags=[])
            db.session.add(item)
            if initial is not None:
                movement = stock.initial_count(item, initial, user_id=user_id)
                self.first_counts.append((item, movement))
            created.append(item)
        self.created: list[Item] = created
        self.updated: list[Item] = updated
        return {"created": created, "updated": updated, "deleted": self.deletes}

    def record_events(self) -> None:
        """One event per change, once the batch is flushed (contract §10)."""
        owner = self.store.owner_id
        for item_id in self.deletes:
            record("item.deleted", store_id=self.store.id, obj={"id": item_id}, owner_id=owner)
        for item in self.updated:
            after = as_json(item)
            previous = changes(self.before[item.id], after)
            if previous:
                record(
                    "item.updated",
                    store_id=self.store.id,
                    obj=after,
                    previous=previous,
                    owner_id=owner,
                )
        for item in self.created:
            record("item.created", store_id=self.store.id, obj=item, owner_id=owner)
        for item, movement in self.first_counts:
            initial_stock(item, movement)
