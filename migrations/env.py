"""Alembic environment, run by Flask-Migrate inside the application."""

import logging

from alembic import context
from flask import current_app
from sqlalchemy import text

from db import MIGRATION_LOCK_ID, include_object
from models.types import UTCDateTime

# No fileConfig(): migration logs go through the application's JSON logging.
config = context.config
logger = logging.getLogger("alembic.env")

db = current_app.extensions["migrate"].db


def render_item(type_, obj, autogen_context):
    """Write UTCDateTime columns as plain timezone-aware DateTime in migrations."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        autogen_context.imports.add("import sqlalchemy as sa")
        return "sa.DateTime(timezone=True)"
    return False


def skip_empty_autogenerate(_context, _revision, directives):
    """`flask db migrate` with no model change writes no empty revision."""
    if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
        directives[:] = []
        logger.info("No changes in schema detected.")


def run_migrations_offline():
    url = db.engine.url.render_as_string(hide_password=False)
    context.configure(url=url, target_metadata=db.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    options = dict(current_app.extensions["migrate"].configure_args)
    options.setdefault("process_revision_directives", skip_empty_autogenerate)
    options.setdefault("render_item", render_item)
    with db.engine.connect() as connection:
        # Indexes the models declare for PostgreSQL only are not SQLite's to have.
        options.setdefault("include_object", include_object(connection.dialect.name))
        context.configure(connection=connection, target_metadata=db.metadata, **options)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # A request-sized statement_timeout does not fit a migration (or
                # the wait for another replica's).
                connection.execute(text("SET LOCAL statement_timeout = 0"))
                # Replicas starting together take turns: held until the transaction
                # ends, after which the next one finds nothing left to do.
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID}
                )
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
