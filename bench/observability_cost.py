"""What metrics, traces and the new logs cost a single read (issue 22): GET /items/{id}
with wrk, side by side in one run, against three gunicorns on one PostgreSQL database:

- ``before``: the commit before them (``--base``, default 59c2b0c), unpacked by
  ``git archive`` into a temporary folder;
- ``on``: this tree with metrics (a scrape token set), tracing (no exporter) and the
  new JSON logs;
- ``off``: this tree with METRICS_ENABLED=false and TRACING_ENABLED=false.

Rounds alternate the three (each round every build meets the same moments of a noisy
machine); the ratio is of the means. 10,000 items, seeded by SQL.

    .venv/bin/python bench/observability_cost.py --database-url postgresql://postgres@127.0.0.1/bench_obs
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from servers import Server, migrate, server_env, wait_until_up  # noqa: E402

WRK = shutil.which("wrk") or "wrk"
ITEMS = 10_000
SEED = """
INSERT INTO users (id, username, email, password_hash, role, token_key, created_at)
VALUES (1, 'bench', 'bench@example.com', 'x', 'admin', 'k', now());
INSERT INTO stores (id, name, owner_id, created_at, updated_at)
SELECT s, 'Store ' || s, 1, now(), now() FROM generate_series(1, 10) s;
INSERT INTO items (id, name, description, price, stock, store_id, created_at, updated_at)
SELECT i, 'widget ' || i, 'a widget', (i % 1000) / 10.0, 5, 1 + i % 10, now(), now()
FROM generate_series(1, 10000) i;
SELECT setval('users_id_seq', 1), setval('stores_id_seq', 10), setval('items_id_seq', 10000);
"""
LUA = f"""
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/items/" .. math.random(1, {ITEMS}))
end
"""


def wrk(url: str, seconds: int, script: Path) -> tuple[float, str]:
    out = subprocess.run(  # noqa: S603 - wrk on our own server
        [WRK, "-t2", "-c16", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(next(x for x in out.splitlines() if x.startswith("Requests/sec")).split()[1])
    p99 = next(line for line in out.splitlines() if line.strip().startswith("99%")).split()[1]
    return rate, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a database to create and drop")
    parser.add_argument("--base", default="59c2b0c", help="the commit to compare with")
    parser.add_argument("--seconds", type=int, default=10, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = make_url(args.database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    database = url.render_as_string(hide_password=False)
    base_tree = Path(tempfile.mkdtemp(prefix="stores_base_"))
    archive = subprocess.run(  # noqa: S603 - the commit to compare with
        ["git", "archive", args.base],  # noqa: S607
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    untar = ["tar", "-x", "-C", str(base_tree)]
    subprocess.run(untar, input=archive, check=True)  # noqa: S603
    script = base_tree / "random_item.lua"
    script.write_text(LUA)
    env = server_env(
        GUNICORN_MAX_REQUESTS="0",
        APP_ENV="production",
        DATABASE_URL=database,
        REDIS_URL="",
        RATE_LIMIT_DEFAULT="100000000 per minute",
        LOG_LEVEL="INFO",  # the access log is written, as in production
    )
    try:
        migrate(env)
        engine = create_engine(database.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            raw: Any = conn.connection.dbapi_connection  # psycopg: no parameters, % is modulo
            for statement in SEED.split(";\n"):
                if statement.strip():
                    raw.execute(statement)
        engine.dispose()
        builds = {
            "before": (env | {"PYTHONPATH": str(base_tree)}, base_tree),
            "on": (env | {"METRICS_TOKEN": "t" * 24}, ROOT),
            "off": (env | {"METRICS_ENABLED": "false", "TRACING_ENABLED": "false"}, ROOT),
        }
        results: dict[str, list[float]] = {name: [] for name in builds}
        with ExitStack() as stack:
            servers = {}
            for name, (build_env, tree) in builds.items():
                server = Server(build_env, workers=2, cwd=tree)
                stack.callback(server.stop)
                servers[name] = server
            for server in servers.values():  # a busy machine boots slowly
                wait_until_up(server.url, server.process, workers=2, timeout=180)
            for server in servers.values():  # warm-up
                wrk(server.url, 3, script)
            for round_ in range(1, args.rounds + 1):
                for name, server in servers.items():
                    rate, p99 = wrk(server.url, args.seconds, script)
                    results[name].append(rate)
                    print(f"round {round_} {name:6} {rate:8.0f} req/s  p99 {p99}", flush=True)
        means = {name: statistics.mean(rates) for name, rates in results.items()}
        print()
        for name, mean in means.items():
            print(f"{name:6} mean {mean:8.0f} req/s  ({mean / means['before']:.2f} x before)")
        print(f"on / off: {means['on'] / means['off']:.2f}")
    finally:
        shutil.rmtree(base_tree, ignore_errors=True)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
