"""The migration history builds exactly the models' schema, and unbuilds it."""

import re
import warnings

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text

from conftest import PG_URL
from db import db
from servers import postgres_database


def schema_difference(app) -> list:
    with app.app_context(), db.engine.connect() as conn, warnings.catch_warnings():
        # SQLite cannot reflect expression indexes; they are compared below instead.
        warnings.filterwarnings("ignore", message=".*expression-based index.*")
        return compare_metadata(MigrationContext.configure(conn), db.metadata)


def sqlite_indexes(engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        )
        return {name: re.sub(r'[\s"]+', " ", sql).strip().lower() for name, sql in rows}


def check_round_trip(app) -> None:
    with app.app_context():
        upgrade()
        tables = set(inspect(db.engine).get_table_names())
    assert tables == {t.name for t in db.metadata.sorted_tables} | {"alembic_version"}
    assert schema_difference(app) == []
    with app.app_context():
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) == {"alembic_version"}
        upgrade()  # and back up again, cleanly
        assert set(inspect(db.engine).get_table_names()) >= {"items", "users"}


def test_sqlite(tmp_path, make_app):
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'migrated.db'}")
    check_round_trip(app)
    # The expression indexes (case-insensitive uniqueness) match create_all's exactly.
    reference = create_engine(f"sqlite:///{tmp_path / 'reference.db'}")
    db.metadata.create_all(reference)
    with app.app_context():
        assert sqlite_indexes(db.engine) == sqlite_indexes(reference)
    reference.dispose()


@pytest.mark.postgres
def test_postgresql(make_app):
    with postgres_database(PG_URL, prefix="stores_migration_") as url:
        app = make_app(SQLALCHEMY_DATABASE_URI=url)
        check_round_trip(app)
        with app.app_context():
            db.engine.dispose()  # before DROP DATABASE
