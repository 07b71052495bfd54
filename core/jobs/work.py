"""The work of each kind of job (§12), run by a worker (core/jobs/tasks.py).

Each is idempotent: run again after its worker died mid-way, it finishes the same
work. A store deletion resumes where the committed batches stopped; an import writes
its rows in one transaction with the job's result, so a run either wrote everything
and finished the job, or wrote nothing; an export writes its file again from the
start.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from werkzeug.exceptions import NotFound

from core.auth import audit
from core.catalog.csv_export import csv_text
from core.catalog.csv_import import ImportConflictError, UnreadableFileError, import_items
from core.catalog.queries import Viewer, item_search
from core.catalog.stores import count_items, delete_store
from core.events.outbox import acting_for
from core.jobs import engine, files
from core.jobs.engine import JobCanceledError
from core.web.errors import envelope
from db import BULK_TABLES, analyze, db
from models import Job, Store

log = logging.getLogger("stores.jobs")
LISTED_ERRORS = 1000  # invalid rows an import job lists (§12); its count covers all


def run(job_id: int) -> None:
    """Claim the job and do its work; a job another worker holds, or one finished
    already (a duplicate delivery), is left alone."""
    job = engine.claim(job_id)
    if job is None:
        return
    kind, lease = job.type, engine.Lease.of(job)
    with engine.Heartbeat(lease):
        try:
            WORK[job.type](job, lease)
        except JobCanceledError:
            db.session.rollback()
            status = db.session.scalar(select(Job.status).where(Job.id == job_id))
            if status == "canceled":  # an export's part (another run's file stays its own)
                files.drop(job_id, "output")
            db.session.commit()
            log.info("job %s: %s, no longer this run's: stopped", job_id, status)
        except Exception:
            db.session.rollback()
            if kind in RESUMED:
                # The store is gone for clients already: its rows must go. This run ends
                # as a dead worker's would; the sweep hands the job over again once its
                # lease is stale (JOB_STALE_SECONDS apart: a lock held for long, the
                # database away a while), and the next run resumes where this one
                # stopped.
                log.exception("job %s (%s): this run failed; it resumes later", job_id, kind)
                return
            log.exception("job %s (%s) failed", job_id, kind)
            error = envelope(500, f"Job {job_id} failed unexpectedly; it was logged.")
            engine.finish(lease, "failed", error=error)
            db.session.commit()


# Jobs that must finish (a deletion cannot be canceled, §16): a run that fails is
# tried again later, never finished as failed.
RESUMED = frozenset({"store_delete"})


def delete_store_job(job: Job, lease: engine.Lease) -> None:
    """The rows of a store marked deleted, in batches; progress commits with each."""
    config = current_app.config
    pause = config["STORE_DELETE_PAUSE_MS"] / 1000
    done = {"items": job.done}

    def on_batch(deleted: int) -> bool:
        done["items"] += deleted
        engine.renew(lease, done["items"])
        return True

    assert job.store_id is not None
    if job.total is None:  # the first run: what there is to delete
        job.total = count_items(job.store_id)
        db.session.commit()
    delete_store(job.store_id, config["STORE_DELETE_BATCH"], on_batch, pause=pause)
    engine.finish(lease, "succeeded", result={"store_id": job.store_id, "deleted": done["items"]})
    db.session.commit()


def import_job(job: Job, lease: engine.Lease) -> None:
    """The CSV body stored with the job, through the CLI's importer. The rows and the
    job's end commit together: a worker killed before that commit wrote nothing."""
    store = db.session.get(Store, job.store_id)
    if store is None:  # deleted since the request
        engine.finish(lease, "failed", error=envelope(404, f"Store {job.store_id} not found."))
        db.session.commit()
        return
    raw = files.ChunkReader(job.id, "input")
    # Read whole before the import: the file's chunks come through the session's
    # connection, which PostgreSQL's COPY holds while it runs (a local spool, at most
    # IMPORT_MAX_BYTES, on disk past 8 MiB).
    body = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115 - closed below
    shutil.copyfileobj(io.BufferedReader(raw), body)
    size = body.tell()
    body.seek(0)

    def progress(_rows: int) -> None:
        # The bytes of the file the importer has read so far (its reader's position).
        engine.renew_apart(lease, body.tell())

    params = job.params
    try:
        # The file's size is the total; a cancel drops the file: one that came while
        # it was read left part of it. (No transaction of the import is open yet.)
        with db.engine.begin() as connection:
            engine.hold(lease, connection, done=0, total=size)
        source = _origin(job)  # the request's caller: its events' and entries' actor
        actor = {"type": source.actor_type, "id": source.actor_id}
        with acting_for(actor, source.request_id):
            summary = import_items(
                store,
                body,
                dry_run=params.get("dry_run", False),
                skip_invalid=params.get("skip_invalid", False),
                progress=progress,
                listed=LISTED_ERRORS,
                commit=False,
                user_id=job.user_id,  # the caller's movements (§8)
                source=source,
            )
    except UnreadableFileError as exc:
        db.session.rollback()
        engine.finish(lease, "failed", error=envelope(422, str(exc)))
        db.session.commit()
        return
    except ImportConflictError as exc:
        db.session.rollback()
        engine.finish(lease, "failed", error=envelope(409, str(exc), error="already_exists"))
        db.session.commit()
        return
    except NotFound as exc:  # the store's deletion came first (hold_stores)
        db.session.rollback()
        message = getattr(exc, "data", {}).get("message") or f"Store {job.store_id} not found."
        engine.finish(lease, "failed", error=envelope(404, message))
        db.session.commit()
        return
    finally:
        body.close()
    result = summary.as_dict()
    refused = summary.invalid and not params.get("skip_invalid", False)
    engine.renew(lease, size)  # the whole file read
    if refused:
        message = f"{summary.invalid} invalid row(s): nothing was written (see result.errors)."
        finished = engine.finish(
            lease,
            "failed",
            result=result,
            error=envelope(422, message, errors=_by_line(summary.errors)),
        )
    else:
        finished = engine.finish(lease, "succeeded", result=result)
    if not finished:
        # Canceled after the last chunk's check (on PostgreSQL, while the set-based
        # statements ran), or ended by another run: the rows must not commit.
        raise JobCanceledError
    db.session.commit()
    if (summary.created or summary.updated) and not (refused or params.get("dry_run", False)):
        # As the CLI does: fresh statistics at once, for the list counts and for the
        # plans of the next import into the same catalog (not autovacuum's next pass).
        analyze(*BULK_TABLES)


def _origin(job: Job) -> audit.Origin:
    """Who asked for the import, from where: its rows' audit entries' (§15). A job
    queued before the request's origin was kept with it: its creator."""
    kept = job.params.get("origin")
    return audit.Origin(**kept) if kept else audit.Origin("user", job.user_id)


def _by_line(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """The listed invalid rows as an envelope's ``errors``: by location, line, column."""
    lines: dict[str, dict[str, list[str]]] = {}
    for error in errors:
        cells = lines.setdefault(str(error["line"]), {})
        cells.setdefault(error["column"] or "_row", []).append(error["message"])
    return {"csv": lines}


def export_job(job: Job, lease: engine.Lease) -> None:
    """The CSV of §9 for the job's filters, into the job's file a chunk at a time.
    The rows are read in one transaction (one snapshot on PostgreSQL); the file is
    written on a connection of its own, so the reading never holds a write."""
    config = current_app.config
    args = _filters(job.params.get("filters", {}))
    viewer = Viewer(**job.params["viewer"]) if "viewer" in job.params else None
    with db.engine.begin() as connection:
        files.drop(job.id, "output", on=connection)  # a previous run's part
    reading = db.session.connection()
    if reading.dialect.name == "postgresql":  # the count and every chunk: one snapshot
        reading.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    counting = select(func.count()).select_from(item_search(args, viewer).subquery())
    total = int(db.session.execute(counting).scalar_one())
    with db.engine.begin() as connection:
        engine.hold(lease, connection, total=total)
    buffer, seq, rows, size = io.BytesIO(), 0, 0, 0

    def flush() -> None:
        nonlocal buffer, seq
        with db.engine.begin() as connection:
            # The chunk is this run's only while the job is (not another run's file).
            engine.hold(lease, connection, done=rows)
            files.add_chunk(job.id, "output", seq, buffer.getvalue(), on=connection)
        seq += 1
        buffer = io.BytesIO()

    for text, count in csv_text(args, config["EXPORT_CHUNK_SIZE"], viewer):
        data = text.encode()
        buffer.write(data)
        rows += count
        size += len(data)
        if buffer.tell() >= files.CHUNK_BYTES:
            flush()
    flush()
    db.session.rollback()  # the reading transaction
    engine.renew(lease, rows)
    if not engine.finish(lease, "succeeded", result={"rows": rows, "bytes": size}):
        raise JobCanceledError  # run() drops the file of a canceled job
    db.session.commit()


def _filters(stored: dict[str, Any]) -> dict[str, Any]:
    """The filters as the request parsed them (prices and times were stored as text)."""
    args = dict(stored)
    for name in ("min_price", "max_price"):
        if args.get(name) is not None:
            args[name] = Decimal(args[name])
    if args.get("updated_after") is not None:
        args["updated_after"] = datetime.fromisoformat(args["updated_after"])
    return args


WORK = {"store_delete": delete_store_job, "import": import_job, "export": export_job}
