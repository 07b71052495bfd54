"""Helpers the resources share: lookups that 404, commits that 409, text matches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, func
from sqlalchemy.exc import IntegrityError

from core.events.outbox import as_json, changes, record
from core.web.errors import abort
from db import db

T = TypeVar("T")


def lower(value) -> ColumnElement[str]:
    """The one lowercasing of every case-insensitive comparison, applied to both
    sides: the column and the text compared with it. It is the database's ``lower``
    (Python's on SQLite, registered in db.py), never ``str.lower`` on one side only,
    which disagrees with PostgreSQL's ("İ" is "i̇" to Python, "i" to PostgreSQL). The
    case-insensitive unique indexes use the same function."""
    return func.lower(value)


def iequals(column, text: str) -> ColumnElement[bool]:
    """Case-insensitive equality."""
    return lower(column) == lower(text)


def icontains(column, text: str) -> ColumnElement[bool]:
    """Case-insensitive substring match; ``%`` and ``_`` in ``text`` match themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return lower(column).like(lower(f"%{escaped}%"), escape="\\")


def get_or_404(model: type[T], ident: int, *options, for_update: bool = False) -> T:
    """The row, or 404. ``for_update`` locks it until the request commits, so that a
    check made on it (ownership, If-Match) still holds when the change is written."""
    lock = {"of": model} if for_update else None
    obj = db.session.get(model, ident, options=options, with_for_update=lock)
    if obj is None:
        abort(404, message=f"{model.__name__} {ident} not found.")
    return obj


def is_unique_violation(exc: IntegrityError) -> bool:
    # psycopg: SQLSTATE 23505; SQLite: "UNIQUE constraint failed: ...".
    orig = exc.orig
    return getattr(orig, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(orig)


def commit(*, conflict: str, events: Callable[[], None] | None = None) -> None:
    """Commit the request's work. The database judges uniqueness, so that two racing
    requests cannot both win: a unique violation is a 409 with ``conflict`` as message.
    ``events`` records the change's events once it is flushed (ids and timestamps
    set), in the same transaction.
    """
    try:
        if events is not None:
            db.session.flush()
            events()
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        if is_unique_violation(exc):
            abort(409, message=conflict)
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
