"""What bounds the CSV import on PostgreSQL (issue 19): the INSERT of its new items
alone, with the schema's indexes and without, and the settings a load may change.

A new database at the head migration, one store, and N staged rows shaped as
bench/import_copy.py writes them (name, description, price, stock, SKU, status). Then
each variant inserts them all into ``items`` in one transaction, as the importer's
INSERT ... SELECT does (file order), and rolls back; the table is emptied and a
CHECKPOINT taken before each, so that every variant starts alike. Prints the time,
rows/s and the WAL written. The variants that leave out an index or a constraint
drop it inside their transaction (rolled back with it): a measurement, not a way to
load (other stores keep writing).

    .venv/bin/python bench/import_insert.py --database-url postgresql://postgres@127.0.0.1/bench_insert
    .venv/bin/python bench/import_insert.py --database-url ... --rows 200000 --only all,no-gin
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import psycopg  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from core.catalog.csv_copy import NEW_IDS, NEW_ITEMS  # noqa: E402
from servers import BIN, server_env  # noqa: E402

STAGE = """
CREATE UNLOGGED TABLE staged AS
SELECT g AS line, 'Imported ' || g AS name, 'Item number ' || g || ', imported' AS description,
       ((g %% 10000) || '.' || lpad((g %% 100)::text, 2, '0'))::numeric(12, 2) AS price,
       g %% 50 AS stock, 'IMP-' || g AS sku,
       CASE WHEN g %% 1000 = 0 THEN 'archived' ELSE 'active' END AS status
FROM generate_series(1, %(rows)s) g
"""
OWNER = """
INSERT INTO users (username, email, password_hash, role, token_key, created_at)
VALUES ('bench', 'bench@example.com', 'x', 'user', 'k', now()) RETURNING id
"""
STORE = """
INSERT INTO stores (name, owner_id, created_at, updated_at) VALUES ('Import', %s, now(), now())
RETURNING id
"""
COLUMNS = "name, price, description, stock, store_id, sku, status, created_at, updated_at"
INSERT = f"""
INSERT INTO items ({COLUMNS})
SELECT name, price, description, stock, %(store)s, sku, status, now(), now()
FROM staged ORDER BY line
"""  # noqa: S608 - our own text
# The rows in the order of the store's name index, their ids still in file order.
INSERT_BY_NAME = f"""
INSERT INTO items (id, {COLUMNS})
SELECT id, name, price, description, stock, %(store)s, sku, status, now(), now()
FROM (SELECT nextval('items_id_seq') AS id, * FROM staged ORDER BY line) s
ORDER BY lower(name)
"""  # noqa: S608 - our own text
# As the importer runs it (core/catalog/csv_copy.py NEW_ITEMS): from its temporary
# plan, each new id written back into the plan by the same statement.
PLAN = """
CREATE TEMP TABLE import_plan ON COMMIT DROP AS
SELECT line, name, lower(name) AS lname, price, description, stock, sku, status,
       NULL::integer AS low_stock_threshold, NULL::integer AS item_id,
       NULL::integer AS old_stock
FROM staged
"""
AS_IMPORT = f"""
WITH created AS (
    INSERT INTO items ({COLUMNS})
    SELECT name, price, description, stock, %(store)s, sku, status, now(), now()
    FROM import_plan WHERE item_id IS NULL ORDER BY line
    RETURNING id, lower(name) AS lname
)
UPDATE import_plan p SET item_id = c.id, old_stock = NULL
FROM created c WHERE p.item_id IS NULL AND p.lname = c.lname
"""  # noqa: S608 - our own text
# The importer since (its own statements): the new ids drawn first, in file order,
# into a narrow table of their own, then the INSERT gives each row its id.
IDS_FIRST = [*NEW_IDS.strip().split(";"), NEW_ITEMS]
# What the search document costs to compute, without a write.
DOCUMENT = """
SELECT count(setweight(to_tsvector('english', name), 'A') ||
             setweight(to_tsvector('english', coalesce(description, '')), 'B'))
FROM staged
"""
GIN = ("ix_items_search_vector", "ix_items_text_trgm")
SECONDARY = """
SELECT string_agg(quote_ident(c.relname), ', ') FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = 'items'::regclass AND NOT i.indisprimary
"""

# name -> (statements before the INSERT, the INSERT or the statements timed with it)
VARIANTS: dict[str, tuple[list[str], str | list[str]]] = {
    "all": ([], INSERT),
    **{
        f"all+gin-pending-{size}": ([f"SET LOCAL gin_pending_list_limit = '{size}'"], INSERT)
        for size in ("16MB", "64MB", "256MB")
    },
    "all+gin-fastupdate-off": (
        [f"ALTER INDEX {name} SET (fastupdate = off)" for name in GIN],
        INSERT,
    ),
    "all-by-name": ([], INSERT_BY_NAME),  # the store's name index's order, ids in file order
    "as-import": ([PLAN, "CREATE INDEX ON import_plan (line)", "ANALYZE import_plan"], AS_IMPORT),
    "ids-first": (
        [PLAN, "CREATE INDEX ON import_plan (line)", "ANALYZE import_plan"],
        IDS_FIRST,
    ),
    "no-gin": ([f"DROP INDEX {name}" for name in GIN], INSERT),
    "no-trgm": (["DROP INDEX ix_items_text_trgm"], INSERT),
    "no-secondary": (["secondary"], INSERT),
    "no-secondary-no-fk": (
        ["secondary", "ALTER TABLE items DROP CONSTRAINT fk_items_store_id_stores"],
        INSERT,
    ),
}


def wal_bytes(cursor: psycopg.Cursor, since: str) -> float:
    cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (since,))
    row = cursor.fetchone()
    assert row is not None
    return float(row[0])


def measure(conn: psycopg.Connection, store: int, name: str, rows: int) -> None:
    before, statement = VARIANTS[name]
    with conn.cursor() as cursor:
        conn.autocommit = True
        cursor.execute("TRUNCATE items CASCADE")
        cursor.execute("CHECKPOINT")
        cursor.execute("SELECT checkpoints_req + checkpoints_timed FROM pg_stat_bgwriter")
        checkpoints = cursor.fetchone()[0]  # type: ignore[index]
        conn.autocommit = False
        cursor.execute("SET LOCAL work_mem = '256MB'")
        for setting in before:
            if setting == "secondary":
                cursor.execute(SECONDARY)
                setting = f"DROP INDEX {cursor.fetchone()[0]}"  # type: ignore[index]
            cursor.execute(setting)
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        lsn = cursor.fetchone()[0]  # type: ignore[index]
        start = time.perf_counter()
        for each in [statement] if isinstance(statement, str) else statement:
            cursor.execute(each, {"store": store, "now": datetime.now(UTC)})
        took = time.perf_counter() - start
        wal = wal_bytes(cursor, lsn)
        conn.rollback()
        cursor.execute("SELECT checkpoints_req + checkpoints_timed FROM pg_stat_bgwriter")
        during = cursor.fetchone()[0] - checkpoints  # type: ignore[index]
        conn.rollback()
    print(
        f"{name:24} {took:7.1f} s {rows / took:9,.0f} rows/s  WAL {wal / 2**20:7,.0f} MiB"
        f"  checkpoints {during}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a database to create (bench_*)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", help="variants, comma-separated (default: all of them)")
    args = parser.parse_args()
    url = make_url(args.database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{url.database}"'))
    database = url.render_as_string(hide_password=False)
    env = server_env(APP_ENV="production", DATABASE_URL=database, REDIS_URL="")
    subprocess.run(  # noqa: S603 - our own command line
        [BIN / "flask", "--app", "app", "db", "upgrade"], cwd=ROOT, env=env, check=True
    )
    names = args.only.split(",") if args.only else list(VARIANTS)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
            owner = cursor.execute(OWNER).fetchone()[0]  # type: ignore[index]
            store = cursor.execute(STORE, (owner,)).fetchone()[0]  # type: ignore[index]
            cursor.execute(STAGE, {"rows": args.rows})
            cursor.execute("ANALYZE staged")
            start = time.perf_counter()
            cursor.execute(DOCUMENT)
            took = time.perf_counter() - start
            print(f"{args.rows:,} rows; the search document alone (no write): {took:.1f} s")
            for name in names:
                measure(conn, store, name, args.rows)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
