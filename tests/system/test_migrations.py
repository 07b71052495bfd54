"""The migration history builds exactly the models' schema, and unbuilds it."""

import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text

from db import db, include_object
from helpers import PASSWORD, PG_URL, client_of
from servers import postgres_database


@contextmanager
def reflecting() -> Iterator[Any]:
    # SQLite cannot reflect expression indexes; sqlite_schema() compares them instead.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*expression-based index.*")
        yield


def schema_difference(app: Flask) -> list[Any]:
    with app.app_context(), db.engine.connect() as conn, reflecting():
        options = {"include_object": include_object(conn.dialect.name)}
        difference: list[Any] = compare_metadata(
            MigrationContext.configure(conn, opts=options), db.metadata
        )
        return difference


def sqlite_schema(engine: Any) -> dict[str, str | bool]:
    """Every index's DDL, and whether each table uses AUTOINCREMENT."""
    query = text("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL")
    with engine.connect() as conn:
        return {
            name: re.sub(r'[\s"]+', " ", sql).strip().lower()
            if kind == "index"
            else "AUTOINCREMENT" in sql
            for kind, name, sql in conn.execute(query)
            if kind in ("index", "table") and name != "alembic_version"
        }


def constraint_names(engine: Any) -> dict[str, set[str]]:
    """Names of the check, foreign key and unique constraints, per table (Alembic's
    autogenerate does not compare check constraints)."""
    with reflecting():
        inspector = inspect(engine)
        return {
            table: {c["name"] for c in inspector.get_check_constraints(table)}
            | {c["name"] for c in inspector.get_foreign_keys(table)}
            | {c["name"] for c in inspector.get_unique_constraints(table)}
            for table in inspector.get_table_names()
            if table != "alembic_version"
        }


def check_round_trip(app: Flask, reference_url: str) -> None:
    with app.app_context():
        upgrade()
        tables = set(inspect(db.engine).get_table_names())
    assert tables == {t.name for t in db.metadata.sorted_tables} | {"alembic_version"}
    assert schema_difference(app) == []
    reference = create_engine(reference_url)
    db.metadata.create_all(reference)
    with app.app_context():
        assert constraint_names(db.engine) == constraint_names(reference)
        if db.engine.dialect.name == "sqlite":
            # Expression indexes and AUTOINCREMENT, which SQLite cannot reflect.
            assert sqlite_schema(db.engine) == sqlite_schema(reference)
    db.metadata.drop_all(reference)
    reference.dispose()
    with app.app_context():
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) == {"alembic_version"}
        upgrade()  # and back up again, cleanly
        assert set(inspect(db.engine).get_table_names()) >= {"items", "users"}


def test_sqlite(tmp_path: Path, make_app: Callable[..., Flask]) -> None:
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'migrated.db'}")
    check_round_trip(app, f"sqlite:///{tmp_path / 'reference.db'}")


@pytest.mark.postgres
def test_postgresql(make_app: Callable[..., Flask]) -> None:
    with (
        postgres_database(PG_URL, prefix="stores_migration_") as migrated,
        postgres_database(PG_URL, prefix="stores_reference_") as reference,
    ):
        app = make_app(SQLALCHEMY_DATABASE_URI=migrated)
        check_round_trip(app, reference)
        with app.app_context():
            db.engine.dispose()  # before DROP DATABASE


ROWS_AT_0001 = """
INSERT INTO users (id, username, email, password_hash, role, token_key, created_at)
  VALUES (1, 'owner', 'owner@example.com', 'x', 'user', 'k', '{t}');
INSERT INTO stores (id, name, owner_id, created_at, updated_at)
  VALUES (1, 'Old Shop', 1, '{t}', '{t}');
INSERT INTO items (id, name, description, price, store_id, created_at, updated_at) VALUES
  (1, 'Oak table', 'Solid wood, seats six', 120.00, 1, '{t}', '{t}'),
  (2, 'Pine shelf', 'Three boards of oak-coloured pine', 35.50, 1, '{t}', '{t}'),
  (3, 'Lamp', NULL, 19.99, 1, '{t}', '{t}');
INSERT INTO tags (id, name, store_id) VALUES
  (1, 'Wood', 1), (2, 'Oak|Pine', 1), (3, 'oak/pine', 1), (4, 'a|b|c', 1),
  (5, 'oak/pine 2', 1);
INSERT INTO item_tags (item_id, tag_id) VALUES (1, 1), (2, 1)
"""


def check_upgrade_with_rows(app: Flask) -> None:
    """The previous head with a catalog in it upgrades, and the catalog is searchable."""
    with app.app_context():
        upgrade(revision="0001")
        for statement in ROWS_AT_0001.format(t="2026-01-01 00:00:00.000000").split(";"):
            db.session.execute(text(statement))
        db.session.commit()
        upgrade()
        assert schema_difference(app) == []
    client = client_of(app)

    def names(url: str) -> list[str]:
        response = client.get(url)
        assert response.status_code == 200, response.json
        return [item["name"] for item in response.json]

    assert names("/items?search=oak") == ["Oak table", "Pine shelf"]
    assert names("/items?q=OAK&sort=-price") == ["Oak table", "Pine shelf"]
    assert names("/items?tag=wood&sort=name&page_size=1") == ["Oak table"]
    assert names("/items?sort=price") == ["Lamp", "Pine shelf", "Oak table"]
    # 0013: a store's items by name, from its unique name index alone.
    assert names("/stores/1/items?sort=-name") == ["Pine shelf", "Oak table", "Lamp"]
    item = client.get("/items/1").json
    assert item["tags"] == [{"id": 1, "name": "Wood"}] and item["store"]["name"] == "Old Shop"
    # 0008: no tag name keeps a `|` (§4); a repaired name that is taken gets its id,
    # and a count where that is taken too.
    tags = client.get("/stores/1/tags").json
    expected = ["Wood", "Oak/Pine 2-2", "oak/pine", "a/b/c", "oak/pine 2"]
    assert [tag["name"] for tag in tags] == expected


def test_sqlite_upgrade_with_rows(tmp_path: Path, make_app: Callable[..., Flask]) -> None:
    check_upgrade_with_rows(make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'old.db'}"))


@pytest.mark.postgres
def test_postgresql_upgrade_with_rows(make_app: Callable[..., Flask]) -> None:
    with postgres_database(PG_URL, prefix="stores_upgrade_") as url:
        app = make_app(SQLALCHEMY_DATABASE_URI=url)
        check_upgrade_with_rows(app)
        with app.app_context():
            # The search document was computed for the rows already there.
            documents = db.session.scalar(text("SELECT count(search_vector) FROM items"))
            db.session.remove()  # its connection back to the pool, then closed
            db.engine.dispose()  # before DROP DATABASE
        assert documents == 3


def check_catalog_identity_upgrade(app: Flask) -> None:
    """0005 with a catalog in it upgrades to §13's schema: every item active, without
    SKU, with empty metadata; tags with timestamps; the new sorts and filters work."""
    with app.app_context():
        upgrade(revision="0005")
        for statement in ROWS_AT_0001.format(t="2026-01-01 00:00:00.000000").split(";"):
            db.session.execute(text(statement))
        db.session.commit()
        upgrade()
        assert schema_difference(app) == []
    client = client_of(app)
    item = client.get("/items/1").json
    assert (item["sku"], item["status"], item["metadata"]) == (None, "active", {})
    assert item["low_stock_threshold"] is None
    assert client.get("/stores/1").json["metadata"] == {}
    tag = client.get("/tags/1").json
    assert tag["created_at"] > "2026-01-01" and tag["updated_at"] == tag["created_at"]
    response = client.get("/items?sort=-updated_at&updated_after=2025-12-31T00:00:00Z")
    assert [i["id"] for i in response.json] == [3, 2, 1]
    assert client.get("/items?status=active&sku=none").json == []


def test_sqlite_catalog_identity_upgrade(tmp_path: Path, make_app: Callable[..., Flask]) -> None:
    check_catalog_identity_upgrade(
        make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'old.db'}")
    )


@pytest.mark.postgres
def test_postgresql_catalog_identity_upgrade(make_app: Callable[..., Flask]) -> None:
    with postgres_database(PG_URL, prefix="stores_upgrade_") as url:
        app = make_app(SQLALCHEMY_DATABASE_URI=url)
        check_catalog_identity_upgrade(app)
        with app.app_context():
            # The triggers came with it: plain SQL keeps updated_at.
            db.session.execute(text("UPDATE items SET price = 1 WHERE id = 1"))
            db.session.commit()
            touched = db.session.scalar(
                text("SELECT updated_at > '2026-01-02' FROM items WHERE id = 1")
            )
            db.session.remove()
            db.engine.dispose()
        assert touched is True


def check_composed_emails_upgrade(app: Flask) -> None:
    """0014 composes the stored addresses (NFC), except one whose composed form another
    account already has: both accounts stay as they were."""
    users = [
        (1, "jose", "jose\u0301@example.com"),  # decomposed: composed by the upgrade
        (2, "rene_nfd", "rene\u0301@example.com"),  # decomposed, but taken composed by 3
        (3, "rene_nfc", "REN\u00c9@example.com"),
        (4, "plain", "plain@example.com"),
        # Two spellings, neither composed, that compose alike: the older one is composed.
        (5, "older", "a\u0323\u0302@example.com"),
        (6, "newer", "a\u0302\u0323@example.com"),
    ]
    with app.app_context():
        upgrade(revision="0013_one_store_name_index")
        for id_, username, email in users:
            db.session.execute(
                text(
                    "INSERT INTO users (id, username, email, password_hash, role, token_key,"
                    " created_at) VALUES (:id, :username, :email, 'x', 'user', 'k',"
                    " '2026-01-01 00:00:00')"
                ),
                {"id": id_, "username": username, "email": email},
            )
        db.session.commit()
        upgrade()
        emails: dict[int, str] = dict(db.session.execute(text("SELECT id, email FROM users")).all())
        db.session.remove()
    assert emails == {
        1: "jos\u00e9@example.com",
        2: "rene\u0301@example.com",
        3: "REN\u00c9@example.com",
        4: "plain@example.com",
        5: "\u1ead@example.com",
        6: "a\u0302\u0323@example.com",
    }
    # The upgraded address is the account's: its decomposed spelling is taken.
    taken = {"username": "newcomer", "email": "JOSE\u0301@example.com", "password": PASSWORD}
    assert client_of(app).post("/register", json=taken).status_code == 409


def test_sqlite_composed_emails_upgrade(tmp_path: Path, make_app: Callable[..., Flask]) -> None:
    check_composed_emails_upgrade(
        make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'old.db'}")
    )


@pytest.mark.postgres
def test_postgresql_composed_emails_upgrade(make_app: Callable[..., Flask]) -> None:
    with postgres_database(PG_URL, prefix="stores_upgrade_") as url:
        app = make_app(SQLALCHEMY_DATABASE_URI=url)
        check_composed_emails_upgrade(app)
        with app.app_context():
            db.engine.dispose()  # before DROP DATABASE
