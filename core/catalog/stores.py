"""Store-wide work of the catalog: deleting a store of any size."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, delete, select

from core.events.catalog import store_deleted
from db import db
from models import Item, Store


def delete_store(store_id: int, batch: int) -> None:
    """A store and everything in it, whatever its size. Its items go in batches, each
    one short statement committed on its own (their links and any other rows of an
    item follow by ON DELETE CASCADE): no statement nears the statement timeout and
    no lock is held for long, so other stores' reads and writes go on meanwhile. Then
    the store, whose cascade takes its tags. Cut short (a timeout, a crash), the store
    is still there with fewer items, and the same DELETE finishes the work."""
    db.session.commit()  # the checks are done: from here each batch holds its own locks
    first_items = select(Item.id).where(Item.store_id == store_id).order_by(Item.id).limit(batch)
    while True:
        deleted = db.session.execute(
            delete(Item).where(Item.id.in_(first_items.scalar_subquery())),
            execution_options={"synchronize_session": False},
        )
        db.session.commit()
        if cast(CursorResult[Any], deleted).rowcount < batch:
            break
    store_deleted(store_id)  # one event, committed with the store's own delete
    db.session.execute(delete(Store).where(Store.id == store_id))
    db.session.commit()
