"""Benchmark: listing items from a catalog of 10,000 items in 20 stores.

Seeds a fresh database (SQLite file by default; PostgreSQL with --database-url),
then, through a real gunicorn server, times GET /items at page sizes 10 and 100,
with and without filters, and counts the SQL statements each request issues.

    .venv/bin/python bench/list_items.py [--database-url postgresql://...] [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from flask import Flask  # noqa: E402
from sqlalchemy import event, insert  # noqa: E402

from app import create_app  # noqa: E402
from core.web.config import DevelopmentConfig  # noqa: E402
from db import db  # noqa: E402
from models import Item, Store, Tag, User, item_tags  # noqa: E402
from servers import gunicorn, migrate, server_env  # noqa: E402

STORES, ITEMS_PER_STORE, TAGS_PER_STORE = 20, 500, 5
PATHS = [
    "/items?page_size=10",
    "/items?page_size=100",
    "/items?page_size=100&page=50&sort=-price",
    "/items?page_size=100&tag=tag1&tag=tag2",
    "/items?page_size=100&q=item%201&min_price=10",
    "/stores/7/items?page_size=100&sort=name",
]


def seed(app: Flask) -> None:
    """Bulk inserts: 20 stores, 100 tags, 10,000 items, 20,000 links."""
    with app.app_context():
        db.session.execute(
            insert(User),
            [
                {
                    "id": 1,
                    "username": "bench",
                    "email": "b@example.com",
                    "password_hash": "x",
                    "role": "user",
                }
            ],
        )
        db.session.execute(
            insert(Store),
            [{"id": s, "name": f"Store {s}", "owner_id": 1} for s in range(1, STORES + 1)],
        )
        db.session.execute(
            insert(Tag),
            [
                {"id": (s - 1) * TAGS_PER_STORE + t, "name": f"tag{t}", "store_id": s}
                for s in range(1, STORES + 1)
                for t in range(1, TAGS_PER_STORE + 1)
            ],
        )
        items: list[dict[str, object]] = []
        links: list[dict[str, int]] = []
        for s in range(1, STORES + 1):
            for i in range(ITEMS_PER_STORE):
                item_id = len(items) + 1
                items.append(
                    {
                        "id": item_id,
                        "name": f"item {s}-{i}",
                        "store_id": s,
                        "price": Decimal(i % 97) + Decimal("0.99"),
                        "description": f"Item number {i} of store {s}",
                    }
                )
                base = (s - 1) * TAGS_PER_STORE
                links += [
                    {"item_id": item_id, "tag_id": base + 1 + i % TAGS_PER_STORE},
                    {"item_id": item_id, "tag_id": base + 1 + (i + 1) % TAGS_PER_STORE},
                ]
        db.session.execute(insert(Item), items)
        db.session.execute(insert(item_tags), links)
        db.session.commit()


def count_statements(app: Flask, path: str) -> int:
    statements: list[str] = []
    with app.app_context():
        engine = db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        assert app.test_client().get(path).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return len(statements)


def time_requests(url: str, n: int) -> list[float]:
    timings = []
    for _ in range(n):
        start = time.perf_counter()
        with urllib.request.urlopen(url) as response:  # noqa: S310 - our own loopback server
            response.read()
        timings.append((time.perf_counter() - start) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite)")
    parser.add_argument("--requests", type=int, default=200, help="requests per path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        # Production refuses SQLite; development differs from it only in that refusal.
        app_env = "production" if args.database_url else "development"
        env = server_env(APP_ENV=app_env, DATABASE_URL=url, RATE_LIMIT_DEFAULT="1000000 per minute")
        migrate(env)
        app = create_app(DevelopmentConfig(env))
        seed(app)
        items = STORES * ITEMS_PER_STORE
        print(f"{items} items in {STORES} stores; {args.requests} requests per path")
        print(f"{'path':48} {'SQL':>4} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
        with gunicorn(env, workers=2) as base:
            for path in PATHS:
                time_requests(base + path, 5)  # warm up both workers
                timings = sorted(time_requests(base + path, args.requests))
                p95 = timings[int(len(timings) * 0.95) - 1]
                print(
                    f"{path:48} {count_statements(app, path):>4} "
                    f"{statistics.median(timings):>10.1f} {p95:>8.1f} {timings[-1]:>8.1f}"
                )
        with app.app_context():
            db.engine.dispose()


if __name__ == "__main__":
    main()
