"""Where a single read's time goes (issue 22): py-spy samples one gunicorn worker
serving GET /items/{id} under wrk, and the share of samples spent in each part is
printed: the rate limiter, the pool's pre-ping, the access log, metrics, tracing.

    .venv/bin/python bench/profile_read.py --database-url postgresql://postgres@127.0.0.1/bench_profile

Needs wrk and py-spy (requirements-dev.txt), and the right to trace a process (root,
or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from observability_cost import LUA, SEED  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from servers import BIN, Server, migrate, server_env, wait_until_up  # noqa: E402

WRK = shutil.which("wrk") or "wrk"
# A sample belongs to the part of its innermost frame that matches (listed from the
# most specific): the limiter wraps views, so everything a view does has the limiter
# further out on its stack; only what the limiter does itself is the limiter's.
PARTS = {
    "SQL on the wire (psycopg)": ("psycopg",),
    "pool checkout + pre-ping": ("_do_ping", "pre_ping", "_checkout", "pool/"),
    "rate limiter (flask_limiter, limits)": ("flask_limiter", "/limits/"),
    "access log (request_log)": ("request_log",),
    "logging (format + write)": ("logging/__init__.py", "pythonjsonlogger"),
    "metrics (prometheus_client, core/web/metrics)": ("prometheus_client", "core/web/metrics"),
    "tracing (opentelemetry)": ("opentelemetry",),
    "SQLAlchemy (compile, rows)": ("sqlalchemy",),
    "the app's own code (views, core/, db.py)": ("resources/", "/core/", "/db.py", "models/"),
    "JSON out (marshmallow, json)": ("marshmallow", "json/"),
    "Flask, Werkzeug (routing, request, response)": ("flask/", "werkzeug"),
    "gunicorn (socket, parsing)": ("gunicorn",),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a database to create and drop")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--off", action="store_true", help="metrics and tracing off")
    parser.add_argument("--keep", type=Path, help="copy py-spy's raw stacks to this file")
    args = parser.parse_args()
    url = make_url(args.database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    database = url.render_as_string(hide_password=False)
    folder = Path(tempfile.mkdtemp(prefix="stores_profile_"))
    env = server_env(
        GUNICORN_MAX_REQUESTS="0",
        APP_ENV="production",
        DATABASE_URL=database,
        REDIS_URL="",
        RATE_LIMIT_DEFAULT="100000000 per minute",
        LOG_LEVEL="INFO",
        METRICS_TOKEN="t" * 24,
    )
    if args.off:
        env |= {"METRICS_ENABLED": "false", "TRACING_ENABLED": "false"}
    try:
        migrate(env)
        engine = create_engine(database.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            raw: Any = conn.connection.dbapi_connection
            for statement in SEED.split(";\n"):
                if statement.strip():
                    raw.execute(statement)
        engine.dispose()
        script = folder / "random_item.lua"
        script.write_text(LUA)
        server = Server(env, workers=1)
        try:
            wait_until_up(server.url, server.process, workers=1, timeout=180)
            [worker] = server.workers()
            load = subprocess.Popen(  # noqa: S603 - wrk on our own server
                [WRK, "-t1", "-c4", f"-d{args.seconds + 5}s", "-s", str(script), server.url],
                stdout=subprocess.DEVNULL,
            )
            stacks = folder / "stacks.txt"
            subprocess.run(  # noqa: S603 - py-spy on our own worker
                [
                    str(BIN / "py-spy"),
                    "record",
                    "--pid",
                    str(worker),
                    "--duration",
                    str(args.seconds),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(stacks),
                    "--nonblocking",
                ],
                check=True,
                capture_output=True,
            )
            load.wait()
        finally:
            server.stop()
        report(stacks)
        if args.keep:
            shutil.copy(stacks, args.keep)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()


def report(stacks: Path) -> None:
    total = 0
    busy = 0
    shares: collections.Counter[str] = collections.Counter()
    for line in stacks.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        if "handle_request" not in stack:  # waiting for the next connection
            continue
        busy += count
        shares[owner(stack)] += count
    print(f"{total} samples, {busy} inside a request ({busy / max(total, 1):.0%})")
    for part in [*PARTS, "other"]:
        print(f"  {part:48} {shares[part] / max(busy, 1):6.1%} of a request's samples")


def owner(stack: str) -> str:
    """The part of the innermost frame (py-spy's raw stacks list the root first)."""
    for frame in reversed(stack.split(";")):
        for part, needles in PARTS.items():
            if any(needle in frame for needle in needles):
                return part
    return "other"


if __name__ == "__main__":
    main()
