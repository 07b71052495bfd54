"""Helpers the resources share: lookups that 404, commits that 409, text matches."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import ColumnElement, func
from sqlalchemy.exc import IntegrityError

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


def commit(*, conflict: str) -> None:
    """Commit the request's work. The database judges uniqueness, so that two racing
    requests cannot both win: a unique violation is a 409 with ``conflict`` as message.
    """
    _judged(db.session.commit, conflict)


def flush(*, conflict: str) -> None:
    """Send the request's writes so far (a new row gets its id), judged as ``commit``
    judges them; the transaction stays open for what goes with them (an audit entry)."""
    _judged(db.session.flush, conflict)


def _judged(write, conflict: str) -> None:
    try:
        write()
    except IntegrityError as exc:
        db.session.rollback()
        if is_unique_violation(exc):
            abort(409, message=conflict)
        raise
