"""Benchmark at scale: 1,000,000 items in 1,000 stores, 10 tags per store, ~1.8 links
per item, on a new PostgreSQL database (dropped at the end unless --keep).

Seeds with SQL (generate_series) at the first migration, upgrades it with the real
migrations, serves the app under gunicorn (2 sync workers) and prints, per request:
p50/p95 of N requests sent one at a time (in rounds of one request per row, so that
every row meets the same moments of a noisy machine), the SQL statements it runs and
the plan of its page; the cursor walk's first and 5,000th page; GET /items/{id}
throughput with wrk beside a hand-written Flask + one-SQL endpoint (bench/minimal.py)
in the same run; and the deletion of a 1,000,000-item store by a job (a Celery worker
beside gunicorn, its broker CELERY_BROKER_URL or Redis db 15) while another store's
items are read;
and `flask import-items` of a CSV file of 1,000,000 new items, then of the
same file again (rows/s, peak RSS).

    .venv/bin/python bench/scale.py --database-url postgresql://postgres@127.0.0.1/bench_scale
    .venv/bin/python bench/scale.py --database-url ... --import-only --import-rows 100000
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from flask import Flask  # noqa: E402
from sqlalchemy import create_engine, event, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app import create_app  # noqa: E402
from core.lists import cursors  # noqa: E402
from core.web.config import ProductionConfig  # noqa: E402
from db import db  # noqa: E402
from servers import BIN, free_port, gunicorn, serve, server_env  # noqa: E402

WRK = shutil.which("wrk") or "wrk"  # apt-get install wrk
PASSWORD = "bench password 1"  # noqa: S105 - a throwaway database
# The stores' owner (user 1) is a row of its own: the admin is made at the head by
# `flask create-admin`, which needs the schema it writes (the audit log, 0011).
SEED = """
INSERT INTO users (id, username, email, password_hash, role, token_key, created_at)
  VALUES (1, 'owner', 'owner@example.com', '!', 'user', 'seed', now());
SELECT setval('users_id_seq', 1);
INSERT INTO stores (id, name, owner_id, created_at, updated_at)
  SELECT s, 'Store ' || s, 1, now(), now() FROM generate_series(1, 1000) s;
INSERT INTO tags (id, name, store_id)
  SELECT (s - 1) * 10 + t + 1, 'tag' || t, s
  FROM generate_series(1, 1000) s, generate_series(0, 9) t;
-- 30 % of the items in store 1 (the big store), the rest spread over the others.
INSERT INTO items (id, name, description, price, store_id, created_at, updated_at)
  SELECT i, 'widget ' || i,
         w.words[1 + i % 10] || ' ' || w.words[1 + (i / 10) % 10] || ' widget number ' || i,
         ((i::bigint * 7919) % 100000) / 100.0,
         CASE WHEN i % 10 < 3 THEN 1 ELSE 2 + i % 999 END,
         timestamptz '2026-01-01' + (i / 2) * interval '1 second',
         timestamptz '2026-01-01' + (i / 2) * interval '1 second'
  FROM generate_series(1, 1000000) i,
       (SELECT '{red,green,blue,steel,oak,cotton,organic,large,small,classic}'::text[] AS words) w;
-- Every item carries tag (i % 10) of its store, 80 % of them a second one too.
INSERT INTO item_tags (item_id, tag_id)
  SELECT i.id, (i.store_id - 1) * 10 + i.id % 10 + 1 FROM items i
  UNION ALL
  SELECT i.id, (i.store_id - 1) * 10 + (i.id % 10 + 1 + (i.id / 10) % 9) % 10 + 1
  FROM items i WHERE i.id % 5 <> 0;
SELECT setval('stores_id_seq', 1000), setval('tags_id_seq', 10000),
       setval('items_id_seq', 1000000);
"""
ROWS = [
    "/items?page_size=100",
    "/items?page_size=100&page=100",
    "/items?page_size=100&sort=-price",
    "/items?page_size=100&sort=name",
    "/items?page_size=100&tag=tag1&tag=tag2",
    "/items?page_size=100&q=widget%204242",
    "/items?page_size=100&search=steel%20oak",
    "/items?page_size=100&search=nothingmatches&sort=price",  # few matches, another order
    "/stores/7/items?page_size=100&sort=-created_at",
    "/stores?page_size=100",
    "/items/424242",
    # §13: a SKU, the most recently changed first, the archived items (as their owner).
    "/items?sku=SKU-424242",
    "/items?page_size=100&sort=-updated_at",
    "/items?page_size=100&status=archived",
]
# Every item gets a SKU; 1 in 1,000 is archived, 1 in 500 a draft; some were changed.
SEED_13 = """
UPDATE items SET sku = 'SKU-' || id,
  status = CASE WHEN id % 1000 = 0 THEN 'archived' WHEN id % 500 = 0 THEN 'draft'
           ELSE 'active' END,
  updated_at = CASE WHEN id % 7 = 0 THEN updated_at + interval '90 days' ELSE updated_at END
"""
IMPORT_TAGS = 50  # distinct tag names in the imported file


def flask(env: dict[str, str], *args: str) -> None:
    subprocess.run(  # noqa: S603 - our own command line
        [BIN / "flask", "--app", "app", *args], cwd=ROOT, env=env, check=True, timeout=1800
    )


def timed(label: str, action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    seconds = time.perf_counter() - start
    print(f"{label}: {seconds:.1f} s", flush=True)
    return seconds


def fetch(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[float, object]:
    request = urllib.request.Request(url, method=method, headers=headers or {})  # noqa: S310
    start = time.perf_counter()
    with urllib.request.urlopen(request) as response:  # noqa: S310 - our loopback server
        response.read()
        return (time.perf_counter() - start) * 1000, response.headers


def percentiles(timings: list[float]) -> tuple[float, float]:
    timings = sorted(timings)
    return statistics.median(timings), timings[max(int(len(timings) * 0.95) - 1, 0)]


def statements_and_plan(app: Flask, path: str) -> tuple[int, str]:
    """The statements ``path`` runs (in process), and the plan of its page query."""
    sent: list[tuple[str, Any]] = []
    with app.app_context():
        engine = db.engine

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert app.test_client().get(path, headers=headers_for(path)).status_code == 200, path
    finally:
        event.remove(engine, "before_cursor_execute", record)
    page = next((s for s in sent if "FROM items" in s[0] and "LIMIT" in s[0]), None)
    page = page or next((s for s in sent if s[0].startswith("SELECT")), None)
    plan = ""
    if page:
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            raw.execute("EXPLAIN (FORMAT JSON) " + page[0], page[1])
            row: Any = raw.fetchone()
            plan = " / ".join(scans(row[0][0]["Plan"]))
    return len(sent), plan


def scans(node: dict[str, Any]) -> list[str]:
    found = []
    if "Scan" in node["Node Type"] and node.get("Relation Name") in ("items", "stores"):
        found.append(f"{node['Node Type']} {node.get('Index Name', node['Relation Name'])}")
    for child in node.get("Plans", []):
        found += scans(child)
    return found[:2]


def walk(base: str, path: str, pages: int) -> tuple[str, set[int]]:
    """Follows rel="next" ``pages`` - 1 times; returns the last URL and the ids seen."""
    url, seen = path, set[int]()
    for _ in range(pages - 1):
        with urllib.request.urlopen(base + url) as response:  # noqa: S310
            seen.update(item["id"] for item in json.loads(response.read()))
            link = response.headers["Link"]
        url = link.split('>; rel="next"')[0].rsplit("<", 1)[-1]
    return url, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a database to create (bench_*)")
    parser.add_argument("--requests", type=int, default=60, help="requests per row")
    parser.add_argument("--wrk-seconds", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="measure a kept database again")
    parser.add_argument(
        "--broker",
        default=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15"),
        help="the deletion job's Celery broker",
    )
    parser.add_argument("--only-delete", action="store_true", help="skip the request rows")
    parser.add_argument(
        "--import-rows",
        type=int,
        default=1_000_000,
        help="rows of the CSV import (0: no import)",
    )
    parser.add_argument(
        "--import-only",
        action="store_true",
        help="only the import, into a new empty database (no seed, no server)",
    )
    args = parser.parse_args()
    url = make_url(args.database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    if not args.reuse:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    database = url.render_as_string(hide_password=False)
    env = server_env(
        GUNICORN_MAX_REQUESTS="0",  # no worker recycling in the middle of a measurement
        APP_ENV="production",
        DATABASE_URL=database,
        REDIS_URL="",
        RATE_LIMIT_DEFAULT="100000000 per minute",
        WEB_CONCURRENCY="2",
        CELERY_BROKER_URL=args.broker,
    )
    try:
        run(args, env, database)
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()


def run(args: argparse.Namespace, env: dict[str, str], database: str) -> None:
    if args.import_only:
        flask(env, "db", "upgrade")
        admin(env)
        import_csv(env, database, args.import_rows)
        return
    if not args.reuse:
        seed(env, database)
    app = create_app(ProductionConfig(env))
    with gunicorn(env, workers=2) as base:
        if not args.only_delete:
            AS_ADMIN["Authorization"] = f"Bearer {sign_in(base)}"
            print(f"\n{'request':48} {'p50 ms':>7} {'p95 ms':>7} {'SQL':>4}  plan of the page")
            report(base, ROWS, app, args.requests)
            cursor_walk(base, app, args.requests)
            throughput(base, env, args.wrk_seconds)
        delete_million_store(base, env, database)
    if args.import_rows:
        import_csv(env, database, args.import_rows)
    with app.app_context():
        db.engine.dispose()


def admin(env: dict[str, str]) -> None:
    flask(
        env,
        "create-admin",
        "--username",
        "bench",
        "--email",
        "bench@example.com",
        "--password",
        PASSWORD,
    )


def seed(env: dict[str, str], database: str) -> None:
    flask(env, "db", "upgrade", "0001")
    engine = create_engine(database.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        raw: Any = conn.connection.dbapi_connection  # psycopg: no parameters, % is modulo
        seed = lambda: [raw.execute(s) for s in SEED.split(";\n") if s.strip()]  # noqa: E731
        timed("seed 1,000,000 items, 1,800,000 links (SQL, schema 0001)", seed)
    timed(
        "flask db upgrade to head (catalog scale: indexes, search document)",
        lambda: flask(env, "db", "upgrade"),
    )
    admin(env)  # at the head: create-admin refuses an older schema
    with engine.begin() as conn:
        timed(
            "§13: SKUs, statuses, updated_at of 1,000,000 items",
            lambda: conn.execute(text(SEED_13)),
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        timed("VACUUM ANALYZE", lambda: conn.exec_driver_sql("VACUUM ANALYZE"))
    engine.dispose()


def write_csv(path: Path, rows: int) -> None:
    """``rows`` items of the export's columns: a SKU each, 2 of IMPORT_TAGS tags, stock."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["name", "description", "price", "stock", "tags", "sku", "status"])
        for i in range(1, rows + 1):
            tags = f"tag{i % IMPORT_TAGS}|tag{(i * 7 + 1) % IMPORT_TAGS}"
            status = "archived" if i % 1000 == 0 else "active"
            writer.writerow(
                [
                    f"Imported {i}",
                    f"Item number {i}, imported",
                    f"{i % 10_000}.{i % 100:02}",
                    i % 50,
                    tags,
                    f"IMP-{i}",
                    status,
                ]
            )


def import_csv(env: dict[str, str], database: str, rows: int) -> None:
    """``flask import-items`` of ``rows`` new items into a new store, then the same file
    again (every row an update, unchanged): rows/s and the command's peak RSS."""
    engine = create_engine(database.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        store = conn.execute(
            text(
                "INSERT INTO stores (name, owner_id, created_at, updated_at) "
                "VALUES ('Import ' || now(), 1, now(), now()) RETURNING id"
            )
        ).scalar_one()
    engine.dispose()
    path = Path(tempfile.mkdtemp(prefix="bench-import-")) / f"{rows}.csv"
    try:
        timed(f"write a CSV of {rows:,} rows", lambda: write_csv(path, rows))
        size = path.stat().st_size / 2**20
        for label in ("new items", "the same file again (unchanged)"):
            command = [str(BIN / "flask"), "--app", "app", "import-items", str(store), str(path)]
            start = time.perf_counter()
            child = subprocess.Popen(command, cwd=ROOT, env=env)  # noqa: S603 - our own command
            _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
            took = time.perf_counter() - start
            child.returncode = os.waitstatus_to_exitcode(status)
            assert child.returncode == 0, f"the import failed ({child.returncode})"
            print(
                f"flask import-items, {rows:,} rows ({size:.0f} MiB), {label}: {took:.1f} s, "
                f"{rows / took:,.0f} rows/s; peak RSS {usage.ru_maxrss / 1024:.0f} MiB",
                flush=True,
            )
    finally:
        shutil.rmtree(path.parent)


# Sent with the rows that only a store's owner or an admin may ask (status=archived).
AS_ADMIN: dict[str, str] = {}


def headers_for(path: str) -> dict[str, str]:
    return AS_ADMIN if "status=" in path else {}


def rounds(base: str, paths: list[str], n: int) -> dict[str, list[float]]:
    """``n`` rounds of one request per path, so that every path meets the same moments
    of a noisy machine (after 3 rounds that warm both workers)."""
    timings: dict[str, list[float]] = {path: [] for path in paths}
    for round_ in range(n + 3):
        for path in paths:
            took = fetch(base + path, headers=headers_for(path))[0]
            if round_ >= 3:
                timings[path].append(took)
    return timings


def report(base: str, paths: list[str], app: Flask, n: int) -> None:
    for path, timings in rounds(base, paths, n).items():
        p50, p95 = percentiles(timings)
        count, plan = statements_and_plan(app, path)
        print(f"{path[:48]:48} {p50:>7.1f} {p95:>7.1f} {count:>4}  {plan}", flush=True)


def deep_cursor(app: Flask, path: str, sort: str, row: int) -> str:
    """The cursor a walk of ``path`` holds after ``row`` rows: the keys of that row,
    signed as the service signs them (walking there takes 5,000 requests)."""
    keys = {"id": "id", "-price": "price DESC, id DESC", "-updated_at": "updated_at DESC, id DESC"}[
        sort
    ]
    columns = {"id": "id", "-price": "price, id", "-updated_at": "updated_at, id"}[sort]
    with app.app_context():
        values = list(
            db.session.execute(
                text(f"SELECT {columns} FROM items ORDER BY {keys} OFFSET :n LIMIT 1"),  # noqa: S608
                {"n": row - 1},
            ).one()
        )
    with app.test_request_context(path):
        fingerprint = cursors.fingerprint({"sort": sort})
        payload = [fingerprint, 0, [cursors.encode(v) for v in values]]
        return str(cursors.serializer().dumps(payload))


def cursor_walk(base: str, app: Flask, n: int) -> None:
    for sort in ("id", "-price", "-updated_at"):
        start = f"/items?page_size=100&sort={sort}"
        began = time.perf_counter()
        _, seen = walk(base, start, 100)
        took = (time.perf_counter() - began) / 99 * 1000
        assert len(seen) == 9_900, "a walk visits every row once"
        deep = f"{start}&cursor={deep_cursor(app, start, sort, 499_900)}"
        timings = rounds(base, [start, deep], n)
        first, far = percentiles(timings[start]), percentiles(timings[deep])
        print(
            f"cursor sort={sort}: a walk of 100 pages, {took:.1f} ms a page, 9,900 distinct ids; "
            f"page 1 p50 {first[0]:.1f} ms, page 5,000 (rows 499,901-500,000) p50 "
            f"{far[0]:.1f} ms: {far[0] / first[0]:.2f}x",
            flush=True,
        )


def wrk(url: str, seconds: int) -> float:
    script = str(ROOT / "bench" / "random_item.lua")
    out = subprocess.run(  # noqa: S603 - wrk on our own server
        [WRK, "-t2", "-c16", f"-d{seconds}s", "-s", script, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(
        next(line for line in out.splitlines() if line.startswith("Requests/sec")).split()[1]
    )


def minimal(env: dict[str, str], seconds: int) -> float:
    port = free_port()
    command = [str(BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "bench.minimal:app"]
    with serve(command, env, port):
        return wrk(f"http://127.0.0.1:{port}", seconds)


def throughput(base: str, env: dict[str, str], seconds: int) -> None:
    """The service, the minimal endpoint as written (in a transaction) and in
    autocommit, the service again: the ratios use the mean of the service's two runs."""
    ours = wrk(base, seconds)
    plain = minimal(env, seconds)
    autocommit = minimal(env | {"MINIMAL_AUTOCOMMIT": "1"}, seconds)
    ours_again = wrk(base, seconds)
    mean = (ours + ours_again) / 2
    print(
        f"GET /items/{{id}} wrk 16 connections: service {ours:.0f} and {ours_again:.0f} req/s, "
        f"minimal Flask + 1 SQL {plain:.0f} req/s: ratio {mean / plain:.2f}; "
        f"the minimal one in autocommit {autocommit:.0f} req/s: ratio {mean / autocommit:.2f}",
        flush=True,
    )


# A store of its own with 1,000,000 items, each with one tag, added to the catalog
# (all indexes in place, as in production) just before it is deleted.
MILLION = """
INSERT INTO stores (id, name, owner_id, created_at, updated_at)
  VALUES (1001, 'Store 1001', 1, now(), now());
INSERT INTO tags (id, name, store_id) VALUES (10001, 'bulk', 1001);
INSERT INTO items (name, description, price, store_id, created_at, updated_at)
  SELECT 'bulk ' || i, 'one of a million', 1.00, 1001, now(), now()
  FROM generate_series(1, 1000000) i;
INSERT INTO item_tags (item_id, tag_id) SELECT id, 10001 FROM items WHERE store_id = 1001;
ANALYZE stores, items, item_tags
"""
OTHER_STORE = "/stores/2/items?page_size=100"


def sign_in(base: str) -> str:
    body = f'{{"username": "bench", "password": "{PASSWORD}"}}'.encode()
    request = urllib.request.Request(  # noqa: S310 - our loopback server
        base + "/login",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:  # noqa: S310
        return str(json.loads(response.read())["access_token"])


def get_json(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request) as response:  # noqa: S310
        return json.loads(response.read())


def delete_million_store(base: str, env: dict[str, str], database: str) -> None:
    """DELETE /stores/1001 (1,000,000 items) answers 202; a worker deletes the rows in
    batches. Its duration, and the p95 of another store's list before and meanwhile."""
    engine = create_engine(database.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        raw: Any = conn.connection.dbapi_connection
        seed = lambda: [raw.execute(s) for s in MILLION.split(";\n") if s.strip()]  # noqa: E731
        timed("add store 1001: 1,000,000 items, 1,000,000 links (SQL, indexes in place)", seed)
    engine.dispose()
    token = sign_in(base)
    before = [fetch(base + OTHER_STORE)[0] for _ in range(200)]
    worker = subprocess.Popen(  # noqa: S603 - our own command line
        [str(BIN / "celery"), "-A", "app", "worker", "--concurrency=1", "--loglevel=WARNING"],
        cwd=ROOT,
        env=env,
    )
    reads: list[float] = []
    done = threading.Event()

    def read_other_store() -> None:
        while not done.is_set():
            reads.append(fetch(base + OTHER_STORE)[0])

    reader = threading.Thread(target=read_other_store)
    try:
        reader.start()
        start = time.perf_counter()
        request = urllib.request.Request(  # noqa: S310
            base + "/stores/1001", method="DELETE", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request) as response:  # noqa: S310
            answered = (time.perf_counter() - start) * 1000
            status, job = response.status, json.loads(response.read())
        while job["status"] in ("queued", "running"):
            time.sleep(0.5)
            job = get_json(base + job["links"]["self"], token)
        took = time.perf_counter() - start
    finally:
        done.set()
        reader.join()
        worker.terminate()
        worker.wait(timeout=60)
    p50_before, p95_before = percentiles(before)
    p50, p95 = percentiles(reads)
    print(
        f"DELETE /stores/1001 (1,000,000 items, 1,000,000 links): {status} in {answered:.0f} ms; "
        f"job {job['status']} after {took:.1f} s ({job['progress']['done']:,} items); "
        f"{OTHER_STORE} before: p50 {p50_before:.1f} ms, p95 {p95_before:.1f} ms; meanwhile "
        f"({len(reads)} reads): p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {max(reads):.1f} ms",
        flush=True,
    )


if __name__ == "__main__":
    main()
