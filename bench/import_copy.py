"""The CSV import job on PostgreSQL (§9, §12, issue 19): rows/s and where the time goes.

For each size (100,000 then 1,000,000 rows by default): a new database at the head
migration, a user and a store, a CSV file of new items (name, description, price,
stock, two of 50 tags, a SKU, a status) stored as an import job's input, then the
job run by the worker's own function (core/jobs/work.py ``run``) in this process;
then the same file again (every row matched, none changed), then a file that changes
every row's description (every row matched and updated). Prints rows/s, this
process's peak RSS and the time of each phase the importer logs (core/catalog/
csv_copy.py, logger ``stores.import``); "job commit" is what follows the last phase
(the job's result, the commit: before f062a2e, the events' INSERT too). The jobs run
in a trace, as a worker's do (each event keeps its ``traceparent``); ``--untraced``
runs them outside one, as this bench did before events kept it.

    .venv/bin/python bench/import_copy.py --database-url postgresql://postgres@127.0.0.1/bench_copy
    .venv/bin/python bench/import_copy.py --database-url ... --rows 100000
"""

from __future__ import annotations

import argparse
import csv
import logging
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator  # noqa: E402
from opentelemetry.trace import NonRecordingSpan, SpanContext  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app import create_app  # noqa: E402
from core.jobs import engine, files, work  # noqa: E402
from core.web.config import ProductionConfig  # noqa: E402
from db import db  # noqa: E402
from models import Event, Item, Job, StockMovement, Store, User  # noqa: E402
from servers import BIN, server_env  # noqa: E402

TAGS = 50  # distinct tag names in the file


class Phases(logging.Handler):
    """The importer's ``import phase <name>: <seconds> s`` lines, in order."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.found: list[tuple[str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "import phase %s: %.3f s":
            name, seconds = record.args  # type: ignore[misc]
            self.found.append((str(name), float(str(seconds))))


def write_csv(path: Path, rows: int, *, edited: bool = False) -> None:
    """``edited``: every description changed (a re-import that updates every row)."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["name", "description", "price", "stock", "tags", "sku", "status"])
        for i in range(1, rows + 1):
            writer.writerow(
                [
                    f"Imported {i}",
                    f"Item number {i}, imported" + (", edited" if edited else ""),
                    f"{i % 10_000}.{i % 100:02}",
                    i % 50,
                    f"tag{i % TAGS}|tag{(i * 7 + 1) % TAGS}",
                    f"IMP-{i}",
                    "archived" if i % 1000 == 0 else "active",
                ]
            )


def fresh_database(admin: Any, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))


@contextmanager
def in_a_trace(traced: bool) -> Iterator[None]:
    """As a worker runs a job (``traced``): in the trace of the request that queued it,
    an unrecorded span, whose ``traceparent`` each event keeps (55 bytes a row)."""
    if not traced:
        yield
        return
    ids = RandomIdGenerator()
    span = NonRecordingSpan(SpanContext(ids.generate_trace_id(), ids.generate_span_id(), False))
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


def import_job(
    path: Path, store_id: int, user_id: int, phases: Phases, traced: bool
) -> tuple[float, Job]:
    """The file as an import job's input, then the job run as a worker runs it."""
    job = engine.create("import", user_id, store_id=store_id, params={})
    with path.open("rb") as file:
        seq = 0
        while piece := file.read(files.CHUNK_BYTES):
            files.add_chunk(job.id, "input", seq, piece)
            seq += 1
    job.total = path.stat().st_size
    db.session.commit()
    job_id = job.id
    db.session.expunge_all()
    phases.found.clear()
    start = time.perf_counter()
    with in_a_trace(traced):
        work.run(job_id)
    took = time.perf_counter() - start
    db.session.rollback()
    done = db.session.get(Job, job_id)
    assert done is not None
    return took, done


def measure(url: Any, rows: int, phases: Phases, traced: bool) -> None:
    database = url.render_as_string(hide_password=False)
    env = server_env(APP_ENV="production", DATABASE_URL=database, REDIS_URL="")
    subprocess.run(  # noqa: S603 - our own command line
        [BIN / "flask", "--app", "app", "db", "upgrade"], cwd=ROOT, env=env, check=True
    )
    app = create_app(ProductionConfig(env))
    path = Path(tempfile.mkdtemp(prefix="bench-import-")) / f"{rows}.csv"
    write_csv(path, rows)
    edited = path.with_name(f"{rows}-edited.csv")
    write_csv(edited, rows, edited=True)
    size = path.stat().st_size / 2**20
    with app.app_context():
        user = User(username="bench", email="bench@example.com", password_hash="x" * 60)
        db.session.add(user)
        db.session.flush()
        store = Store(name="Import", owner_id=user.id)
        db.session.add(store)
        db.session.commit()
        store_id, user_id = store.id, user.id
        runs = [("new items", path), ("same file again (unchanged)", path)]
        for label, source in [*runs, ("every row edited (updated)", edited)]:
            took, job = import_job(source, store_id, user_id, phases, traced)
            assert job.status == "succeeded", (job.status, job.error, job.result)
            counts = {k: v for k, v in (job.result or {}).items() if k != "errors"}
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"\n{rows:,} rows ({size:.0f} MiB), {label}: {took:.1f} s, "
                f"{rows / took:,.0f} rows/s; {counts}; peak RSS {peak:.0f} MiB",
                flush=True,
            )
            for name, seconds in phases.found:
                print(f"  {name:44} {seconds:8.2f} s  {seconds / took:4.0%}")
            rest = took - sum(seconds for _, seconds in phases.found)
            last = "the job's end and commit"
            print(f"  {last:44} {rest:8.2f} s  {rest / took:4.0%}")
        counted = {
            "items": db.session.scalar(select(func.count()).select_from(Item)),
            "movements": db.session.scalar(select(func.count()).select_from(StockMovement)),
            "events": db.session.scalar(select(func.count()).select_from(Event)),
        }
        print(f"  rows written: {counted}", flush=True)
        db.session.remove()
        db.engine.dispose()
    path.unlink()
    edited.unlink()
    path.parent.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a database to create (bench_*)")
    parser.add_argument(
        "--rows", type=int, action="append", help="rows per file (repeatable; 100k and 1M)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the last database")
    parser.add_argument(
        "--untraced", action="store_true", help="run the jobs outside a trace (no traceparent)"
    )
    args = parser.parse_args()
    url = make_url(args.database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    phases = Phases()
    log = logging.getLogger("stores.import")
    log.addHandler(phases)
    log.setLevel(logging.INFO)
    try:
        for rows in args.rows or [100_000, 1_000_000]:
            fresh_database(admin, str(url.database))
            measure(url, rows, phases, traced=not args.untraced)
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
