"""The ``flask`` commands: accounts.py (admins, purges), catalog.py (import, seed).

Each of them, when the database is missing, unreachable or not migrated, ends with one
line saying what is wrong and what to run (``database_problem``), not a traceback —
a traceback of a failed INSERT would also print the values, a password hash among them.
Flask-Migrate's ``flask db`` commands end the same way when the database is missing or
unreachable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from flask import Flask
from sqlalchemy.exc import OperationalError, ProgrammingError

from core.commands.accounts import audit_cli, blocklist_cli, create_admin, idempotency_cli
from core.commands.catalog import import_items_command, seed_command
from db import db

MIGRATE = "run `flask db upgrade` (or `make migrate`)"
# What the drivers say when the schema is not there, or not all of it (SQLite's
# messages, PostgreSQL's SQLSTATE: undefined_table, undefined_column).
NOT_MIGRATED_SQLITE = ("no such table", "no such column")
NOT_MIGRATED_PG = {"42P01", "42703"}


def database_problem(
    exc: OperationalError | ProgrammingError, *, schema: bool = True
) -> str | None:
    """One line for a database that is not there or (``schema``) not migrated; None for
    any other failure (a bug: its traceback is the useful answer)."""
    where = db.engine.url.render_as_string(hide_password=True)
    reason = str(exc.orig).strip()
    if schema and (
        getattr(exc.orig, "sqlstate", None) in NOT_MIGRATED_PG
        or reason.startswith(NOT_MIGRATED_SQLITE)
    ):
        return f"The database {where} has no tables, or older ones: {MIGRATE} first."
    if isinstance(exc, OperationalError) and getattr(exc.orig, "sqlstate", None) is None:
        # Not a statement's failure: the connection itself (no SQLSTATE from a server).
        detail = reason.splitlines()[0] if reason else type(exc.orig).__name__
        detail = detail.rsplit("FATAL:", 1)[-1].strip()
        if "does not exist" in detail:
            name = db.engine.url.database
            return (
                f"Cannot use the database {where}: {detail}. "
                f"Create it (`createdb {name}`), then {MIGRATE}."
            )
        return (
            f"Cannot connect to the database {where}: {detail}. "
            "Check DATABASE_URL and that the server is running."
        )
    return None


def _explained(callback: Callable[..., Any], schema: bool) -> Callable[..., Any]:
    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except (OperationalError, ProgrammingError) as exc:
            problem = database_problem(exc, schema=schema)
            if problem is None:
                raise
            raise click.ClickException(problem) from None

    return run


def _explain_database_problems(command: click.Command, schema: bool = True) -> None:
    """Wrap every callback of ``command`` once (the objects are shared by every app)."""
    if getattr(command, "explains_database_problems", False):
        return
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _explain_database_problems(sub, schema)
    elif command.callback is not None:
        command.callback = _explained(command.callback, schema)
    command.explains_database_problems = True  # type: ignore[attr-defined]


def init_app(app: Flask) -> None:
    for command in (
        create_admin,
        blocklist_cli,
        idempotency_cli,
        audit_cli,
        import_items_command,
        seed_command,
    ):
        _explain_database_problems(command)
        app.cli.add_command(command)
    # Flask-Migrate's group, added by migrate.init_app (create_app's init_database runs
    # before this): a missing or unreachable database in one line, as above. Not "run
    # `flask db upgrade`": a missing table inside a migration is the migration's bug.
    migrations = app.cli.commands.get("db")
    if migrations is not None:
        _explain_database_problems(migrations, schema=False)
