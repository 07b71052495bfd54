"""Helpers the resources share: lookups that 404, commits that 409."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core.events.outbox import as_json, changes, hold_stores, record
from core.web.errors import abort
from db import db
from models import Item, Tag

T = TypeVar("T")


# A row held as a row that references it holds it (its foreign key's check): a
# deletion of it under way finishes first, and the reader finds it gone; one that
# comes later waits for the reader's commit. Other holders go on.
KEY_SHARE = {"read": True, "key_share": True}


def get_or_404(
    model: type[T], ident: int, *options: Any, for_update: bool = False, held: bool = False
) -> T:
    """The row, or 404. ``for_update`` locks it until the request commits, so that a
    check made on it (ownership, If-Match) still holds when the change is written.

    The lock is an UPDATE's own, FOR NO KEY UPDATE (on PostgreSQL): requests that lock
    the row take turns, but a foreign-key check of a row that references it (FOR KEY
    SHARE: an item created in a locked store, a movement of a locked item) goes
    through. FOR UPDATE made that check wait while holding the new row's unique
    entries, which the lock's holder could then wait for: a deadlock (a batch and a
    POST /items of the same name).

    ``held``: FOR KEY SHARE (``KEY_SHARE``), for a row the request's new rows will
    reference (a store, for its new tag): its deletion cannot commit in between, where
    the new row's foreign key would fail at the commit (a bare 409)."""
    lock = {"of": model, "key_share": True} if for_update else KEY_SHARE if held else None
    if for_update and (model is Item or model is Tag):
        # Its store first (FOR KEY SHARE, what the change's events would take later):
        # the order a store's deletion locks in, the store then its rows. Taken after
        # the row's lock, it deadlocked with a deletion waiting for that row.
        row: Any = model  # Item or Tag
        store_id = db.session.scalar(select(row.store_id).where(row.id == ident))
        if store_id is not None:
            hold_stores({store_id})
    obj = db.session.get(model, ident, options=options, with_for_update=lock)
    if obj is None:
        abort(404, message=f"{model.__name__} {ident} not found.")
    return obj


def is_unique_violation(exc: IntegrityError) -> bool:
    # psycopg: SQLSTATE 23505; SQLite: "UNIQUE constraint failed: ...".
    orig = exc.orig
    return getattr(orig, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(orig)


def violated(exc: IntegrityError) -> str:
    """What a unique violation names: the constraint (PostgreSQL) or the columns or
    index (SQLite's message), e.g. ``uq_items_sku_store_id`` or ``items.sku, ...``."""
    diag = getattr(exc.orig, "diag", None)
    return str(getattr(diag, "constraint_name", None) or exc.orig)


def commit(
    *, conflict: str | Callable[[str], str], events: Callable[[], None] | None = None
) -> None:
    """Commit the request's work. The database judges uniqueness, so that two racing
    requests cannot both win: a unique violation is a 409 ``already_exists`` with
    ``conflict`` as message (or ``conflict(what the violation names)``, where one row
    has two unique keys).
    ``events`` records the change's events once it is flushed (ids and timestamps
    set), in the same transaction.
    """

    def write() -> None:
        if events is not None:
            db.session.flush()
            events()
        db.session.commit()

    _judged(write, conflict)


def flush(*, conflict: str | Callable[[str], str]) -> None:
    """Send the request's writes so far (a new row gets its id), judged as ``commit``
    judges them; the transaction stays open for what goes with them (an audit entry)."""
    _judged(db.session.flush, conflict)


def _judged(write: Callable[[], None], conflict: str | Callable[[str], str]) -> None:
    try:
        write()
    except IntegrityError as exc:
        db.session.rollback()
        if is_unique_violation(exc):
            message = conflict if isinstance(conflict, str) else conflict(violated(exc))
            abort(409, message=message, error="already_exists")
        raise


def created(
    type_: str, obj: Any, *, store_id: int | None = None, owner_id: int | None = None
) -> Callable[[], None]:
    """The event of a creation: ``obj`` as its GET returns it (``store_id`` left out:
    a store, whose id is known once flushed)."""

    def write() -> None:
        record(type_, store_id=store_id or obj.id, obj=obj, owner_id=owner_id)

    return write


def updated(
    type_: str, obj: Any, before: dict[str, Any], *, store_id: int, owner_id: int | None = None
) -> Callable[[], None]:
    """The events of an update from ``before`` (``as_json`` of the object before it
    changed): none if nothing changed."""

    def write() -> None:
        after = as_json(obj)
        previous = changes(before, after)
        if previous:
            record(type_, store_id=store_id, obj=after, previous=previous, owner_id=owner_id)

    return write
