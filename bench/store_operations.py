"""Benchmark of the store operations at scale, on PostgreSQL (issue 11):

- CSV export: 1,000,000 items (seeded by SQL generate_series), GET /items.csv through
  a real gunicorn worker: items per second, and how much the worker's resident
  memory (RSS) grows while it streams them.
- CSV import: 100,000 rows through `flask import-items`, timed.

Runs in a database of its own (bench_store_ops_<random>), dropped at the end.

    .venv/bin/python bench/store_operations.py --database-url postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sqlalchemy import create_engine, text  # noqa: E402

from core.web.env import normalize_database_url  # noqa: E402
from servers import BIN, gunicorns, migrate, postgres_database, server_env  # noqa: E402

SEED = """
INSERT INTO users (id, username, email, password_hash, role, token_key, created_at)
VALUES (1, 'bench', 'bench@example.com', 'x', 'admin', 'k', now());
INSERT INTO stores (id, name, owner_id, created_at, updated_at)
SELECT s, 'Store ' || s, 1, now(), now() FROM generate_series(1, 100) s;
INSERT INTO tags (id, name, store_id)
SELECT t, 'tag' || (t % 5), (t - 1) / 5 + 1 FROM generate_series(1, 500) t;
INSERT INTO items (id, name, description, price, stock, store_id, created_at, updated_at)
SELECT i, 'Item ' || i, 'A description of item ' || i || ', with a comma',
       (i % 10000) / 100.0, i % 50, (i - 1) % 100 + 1, now(), now()
FROM generate_series(1, :items) i;
INSERT INTO item_tags (item_id, tag_id)
SELECT i, ((i - 1) % 100) * 5 + 1 + (i % 5) FROM generate_series(1, :items) i;
SELECT setval('users_id_seq', 1), setval('stores_id_seq', 100), setval('tags_id_seq', 500),
       setval('items_id_seq', :items);
ANALYZE;
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def export(url: str, worker: int) -> dict[str, Any]:
    """Stream /items.csv, sampling the worker's RSS every 50 ms."""
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(rss_kib(worker))
            time.sleep(0.05)

    before = rss_kib(worker)
    sampler = threading.Thread(target=sample)
    sampler.start()
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    start = time.perf_counter()
    conn.request("GET", "/items.csv")
    response = conn.getresponse()
    size = rows = 0
    while chunk := response.read(1 << 16):
        size += len(chunk)
        rows += chunk.count(b"\n")  # no line breaks inside these descriptions
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    conn.close()
    return {
        "rows": rows - 1,
        "seconds": seconds,
        "per_second": (rows - 1) / seconds,
        "megabytes": size / 1e6,
        "rss_before_mib": before / 1024,
        "rss_peak_growth_mib": (max(samples) - before) / 1024,
    }


def import_rows(env: dict[str, str], rows: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False, newline="") as f:
        f.write("name,price,description,stock,tags\r\n")
        for n in range(rows):
            f.write(f'Imported {n},{n % 1000}.25,"Row {n}, quoted",{n % 9},fresh|t{n % 7}\r\n')
    try:
        start = time.perf_counter()
        subprocess.run(  # noqa: S603 - our own command line
            [BIN / "flask", "--app", "app", "import-items", "100", f.name],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=600,
        )
        return time.perf_counter() - start
    finally:
        os.unlink(f.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--import-rows", type=int, default=100_000)
    args = parser.parse_args()
    postgres = normalize_database_url(args.database_url)
    with postgres_database(postgres, prefix="bench_store_ops_") as url:
        env = server_env(
            APP_ENV="production",
            DATABASE_URL=url,
            REDIS_URL="",
            RATE_LIMIT_DEFAULT="100000 per minute",
            GUNICORN_TIMEOUT="120",
        )
        migrate(env)
        engine = create_engine(url)
        started = time.perf_counter()
        with engine.begin() as conn:
            for statement in SEED.split(";\n"):
                if statement.strip():
                    conn.execute(text(statement), {"items": args.items})
        print(f"seeded {args.items:,} items in {time.perf_counter() - started:.1f} s")
        engine.dispose()
        with gunicorns(env, count=1, workers=1) as (server,):
            [worker] = server.workers()
            for run in (1, 2):
                result = export(server.url, worker)
                print(f"export run {run}: " + ", ".join(f"{k} {v:,.1f}" for k, v in result.items()))
        seconds = import_rows(env, args.import_rows)
        print(
            f"import of {args.import_rows:,} rows: {seconds:.1f} s "
            f"({args.import_rows / seconds:,.0f} rows/s)"
        )


if __name__ == "__main__":
    main()
