"""Store-wide work of the catalog: deleting a store of any size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select

from db import db
from models import Item, Store


def delete_store(store_id: int, batch: int, *, also: Callable[[], None] | None = None) -> None:
    """A store and everything in it, whatever its size. Its items go in batches, each
    one short statement committed on its own (their links and any other rows of an
    item follow by ON DELETE CASCADE): no statement nears the statement timeout and
    no lock is held for long, so other stores' reads and writes go on meanwhile. Then
    the store, whose cascade takes its tags. Cut short (a timeout, a crash), the store
    is still there with fewer items, and the same DELETE finishes the work. ``also``
    adds what must be written with the store's deletion (its audit entry)."""
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
    db.session.execute(delete(Store).where(Store.id == store_id))
    if also is not None:
        also()
    db.session.commit()
