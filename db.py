"""The SQLAlchemy instance and how it talks to the database: the declarative base,
pool settings (engine_options), one snapshot per read on PostgreSQL, SQLite's
per-connection settings, case-insensitive comparisons (lower, iequals, icontains),
and a session teardown that survives a lost connection."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import current_app, has_request_context, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ColumnElement, Engine, Index, MetaData, Select, event, func, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.expression import ClauseElement, Executable
from sqlalchemy.sql.visitors import InternalTraversal

log = logging.getLogger("stores.db")

# Named constraints make migrations deterministic and let Alembic alter them later.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# PostgreSQL advisory lock taken by `flask db upgrade` (migrations/env.py), so that
# replicas starting together and each running it (docker-entrypoint.sh) take turns.
MIGRATION_LOCK_ID = 0x53544F5245  # "STORE"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Objects stay readable after commit: a view returns what it just saved without
# reloading it (every value is set by the application, none by the database).
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})

# The models' base class. mypy cannot follow a class built at run time (``db.Model``,
# python/mypy#8603), so it is told the declarative base that class derives from.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model


class Explain(Executable, ClauseElement):
    """``EXPLAIN (FORMAT JSON) <select>`` (PostgreSQL): the plan, with the planner's row
    estimate (core/lists/counting.py)."""

    # Cached by its statement, as a SELECT is: compiled once per shape of query, not
    # per request. Its one column comes back as the statement's one column does.
    inherit_cache = False
    _traverse_internals = [("statement", InternalTraversal.dp_clauseelement)]

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement

    @property
    def _all_selected_columns(self) -> Any:
        return self.statement._all_selected_columns


@compiles(Explain, "postgresql")
def _explain(element: Explain, compiler: Any, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + str(compiler.process(element.statement, **kw))


def postgresql_only(index: Index) -> Index:
    """An index only PostgreSQL builds (GIN: trigrams, full text): SQLite neither
    creates it nor is compared against it (``include_object``)."""
    index.info["dialect"] = "postgresql"
    return index.ddl_if(dialect="postgresql")


def include_object(dialect: str) -> Any:
    """Alembic's ``include_object`` for a database of ``dialect``: leaves out what the
    models declare for another database only."""

    def include(obj: Any, _name: Any, _type: str, reflected: bool, _compare_to: Any) -> bool:
        return reflected or obj.info.get("dialect", dialect) == dialect

    return include


def reads_one_snapshot(view: Any) -> Any:
    """Marks a view whose statements must all see one snapshot (a list: its count,
    its rows and their tags). flask-smorest's decorators copy the mark outwards."""
    view.reads_one_snapshot = True
    return view


def _view_reads_one_snapshot() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    view_class = getattr(view, "view_class", None)
    if view_class is not None:  # a MethodView answers HEAD with its get()
        view = getattr(view_class, request.method.lower(), None) or getattr(view_class, "get", None)
    return bool(getattr(view, "reads_one_snapshot", False))


@event.listens_for(db.session, "after_begin")
def _reads_see_one_snapshot(_session: Any, _transaction: Any, connection: Any) -> None:
    """A list runs several statements (count, rows, their tags): on PostgreSQL they
    share one snapshot, so an answer never mixes states from before and after another
    request's commit. A single-resource read is one statement, which is one snapshot
    already: it needs no transaction setting (and saves its round trip).
    (SQLite serializes writes; it is for development.)"""
    if (
        connection.dialect.name == "postgresql"
        and has_request_context()
        and request.method in ("GET", "HEAD")
        and _view_reads_one_snapshot()
    ):
        connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")


# Where Python's str.lower (Unicode's full mapping) differs from the simple,
# one-character mapping that PostgreSQL's lower applies: "İ" becomes "i̇" (two
# characters) and a final "Σ" becomes "ς". Mapped first, the rest agrees.
_SIMPLE_LOWER = str.maketrans({"\u0130": "i", "\u03a3": "\u03c3"})


def unicode_lower(value: Any) -> Any:
    """``lower`` for SQLite, whose own folds ASCII letters only ("ÄPFEL" stayed
    "ÄPFEL"): every letter, character by character, as PostgreSQL's ``lower`` does."""
    return value.translate(_SIMPLE_LOWER).lower() if isinstance(value, str) else value


def lower(value: Any) -> ColumnElement[str]:
    """The one lowercasing of every case-insensitive comparison, applied to both
    sides: the column and the text compared with it. It is the database's ``lower``
    (Python's on SQLite, registered below), never ``str.lower`` on one side only,
    which disagrees with PostgreSQL's ("İ" is "i̇" to Python, "i" to PostgreSQL). The
    case-insensitive unique indexes use the same function."""
    return func.lower(value)


def iequals(column: Any, text: str) -> ColumnElement[bool]:
    """Case-insensitive equality."""
    return lower(column) == lower(text)


def icontains(column: Any, text: str) -> ColumnElement[bool]:
    """Case-insensitive substring match; ``%`` and ``_`` in ``text`` match themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return lower(column).like(lower(f"%{escaped}%"), escape="\\")


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """SQLite ignores foreign keys (and so their cascades) unless told otherwise,
    and lowercases only ASCII unless given a ``lower`` that knows Unicode (the
    case-insensitive indexes and comparisons all use it; see lower() above)."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.create_function("lower", 1, unicode_lower, deterministic=True)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()


def engine_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """Pool settings: connections are checked before use, nothing waits forever."""
    options: dict[str, Any] = {"pool_pre_ping": True}
    if config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        options |= {
            "pool_size": config["DB_POOL_SIZE"],
            "max_overflow": config["DB_MAX_OVERFLOW"],
            "pool_timeout": config["DB_POOL_TIMEOUT"],
            "connect_args": {
                "connect_timeout": config["DB_CONNECT_TIMEOUT"],
                "options": f"-c statement_timeout={config['DB_STATEMENT_TIMEOUT_MS']}",
            },
        }
    return options


# What a seed or an import writes in bulk.
BULK_TABLES = ("items", "tags", "item_tags", "stock_movements")


def analyze(*tables: str) -> None:
    """Refresh PostgreSQL's statistics of ``tables`` after a bulk write (seed, import):
    the planner's row estimates (and the list counts estimated from them, core/lists/
    counting.py) are right at once, not after autovacuum's next pass. Commits."""
    db.session.commit()
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text(f"ANALYZE {', '.join(tables)}"))
        db.session.commit()


def close_session(_exc: BaseException | None = None) -> None:
    """End the request's session even if the server dropped its connection while a
    transaction was open (a restart, a failover): the response is decided by then,
    and the failed rollback must not replace it with a 500. The first attempt
    invalidates the dead connection; the second only lets go of it."""
    try:
        db.session.remove()
    except DBAPIError as exc:
        log.warning("connection lost at the end of a request: %s", str(exc.orig).strip())
        db.session.remove()
