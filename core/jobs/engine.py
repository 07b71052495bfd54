"""The life of a job (§12): made by a request, claimed by a worker under a lease,
the lease renewed by a heartbeat while the run lasts, its progress written at every
batch, finished once. The sweep queues again the jobs whose worker died (or that no
worker took); the purge forgets finished ones.

Every step is one conditional UPDATE, so a task delivered twice (a redelivery after
its worker died, and the sweep's) runs once at a time, and a canceled job stays
canceled whatever its worker was doing. A run's writes name its claim (``Lease``): a
run whose job finished, or was taken over after its lease expired, writes nothing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from flask import current_app
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import ColumnElement, Connection, CursorResult, and_, delete, or_, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.exc import SQLAlchemyError

from core.jobs import events, files
from core.web import metrics
from db import db
from models import Job, JobChunk
from models.types import utcnow

log = logging.getLogger("stores.jobs")


class JobCanceledError(Exception):
    """The job is no longer this run's (canceled, or finished or taken over by another
    run after this one's lease expired): stop, write nothing more."""


@dataclass(frozen=True)
class Lease:
    """A run's hold on its job: the job, and the claim that took it (its attempt)."""

    job_id: int
    attempt: int

    @classmethod
    def of(cls, job: Job) -> Lease:
        return cls(job.id, job.attempts)

    def mine(self) -> ColumnElement[bool]:
        """The job's row, while it is this run's: running, under this claim."""
        return and_(Job.id == self.job_id, Job.status == "running", Job.attempts == self.attempt)


def create(kind: str, user_id: int, **fields: Any) -> Job:
    """A queued job in the session (the caller commits, then ``enqueue``s it)."""
    job = Job(type=kind, user_id=user_id, status="queued", done=0, attempts=0, **fields)
    job.params = job.params or {}
    db.session.add(job)
    db.session.flush()
    return job


def enqueue(job_id: int) -> None:
    """Hand the job to a worker, after the commit that made it. A broker that is down
    loses nothing: the job stays queued and the sweep hands it over later."""
    # This Flask app's own Celery app (tests make several apps in one process).
    run_job = current_app.extensions["celery"].tasks["jobs.run"]
    try:
        run_job.delay(job_id)
    except BrokerError:
        log.warning("job %s: broker unavailable; the sweep will queue it", job_id)


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def claim(job_id: int) -> Job | None:
    """Take the job: queued, or running under a lease that expired (its worker died).
    None when another worker holds it or it is finished."""
    now = utcnow()
    stale = now - timedelta(seconds=current_app.config["JOB_STALE_SECONDS"])
    claimed = db.session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            or_(Job.status == "queued", and_(Job.status == "running", Job.heartbeat_at < stale)),
        )
        .values(status="running", heartbeat_at=now, attempts=Job.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(claimed) == 0:
        db.session.rollback()
        return None
    job = db.session.execute(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).scalar_one()
    if job.started_at is None:
        job.started_at = now
    db.session.commit()
    return job


def renew(lease: Lease, done: int) -> None:
    """Write progress and renew the lease, in the caller's transaction; raises
    JobCanceledError when the job is no longer this run's."""
    renewed = db.session.execute(
        update(Job)
        .where(lease.mine())
        .values(done=done, heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if _rowcount(renewed) == 0:
        raise JobCanceledError


def renew_apart(lease: Lease, done: int) -> None:
    """Progress and lease written on a connection of their own (committed now), for
    an import, which keeps its rows in one long transaction; raises JobCanceledError
    when the job is no longer this run's (canceled meanwhile). SQLite (one writer at
    a time, development only) cannot write beside the import's open transaction:
    there the job is only checked."""
    with db.engine.begin() as connection:
        if connection.dialect.name != "sqlite":
            hold(lease, connection, done=done)
        elif connection.execute(select(Job.id).where(lease.mine())).first() is None:
            raise JobCanceledError


def hold(lease: Lease, connection: Connection, **values: Any) -> None:
    """Write ``values`` (progress) on ``connection`` with a renewed lease, if the job
    is still this run's (else JobCanceledError): what the run then writes in the same
    transaction (an export's chunk) commits only if the job was its own, the job's row
    locked until then."""
    renewed = connection.execute(
        update(Job).where(lease.mine()).values(heartbeat_at=utcnow(), **values)
    )
    if _rowcount(renewed) == 0:
        raise JobCanceledError


class Heartbeat:
    """The lease renewed from a thread of the worker, on a connection of its own,
    every third of JOB_STALE_SECONDS while the run lasts: a live job's lease does not
    depend on how long one of its statements takes (an import's set-based phase runs
    for minutes without a batch). It stops with the run, or at once when the job is no
    longer the run's. Not on SQLite (development): one writer at a time, a write
    beside an import's open transaction would wait for it; there the lease is renewed
    at each batch only."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.every = current_app.config["JOB_STALE_SECONDS"] / 3
        self.engine = db.engine
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self.engine.dialect.name != "sqlite":
            name = f"job-{self.lease.job_id}-heartbeat"
            self.thread = threading.Thread(target=self._beat, name=name, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopped.set()
        if self.thread is not None:
            # Bounded: a beat waiting for the job's row (locked by the run's own open
            # transaction) ends on its own, writing nothing once the job has finished.
            self.thread.join(timeout=5)

    def _beat(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                with self.engine.begin() as connection:
                    renewed = connection.execute(
                        update(Job).where(self.lease.mine()).values(heartbeat_at=utcnow())
                    )
            except SQLAlchemyError:  # the database away a moment: the next beat tries
                log.warning("job %s: lease not renewed", self.lease.job_id, exc_info=True)
                continue
            if _rowcount(renewed) == 0:
                return  # finished, canceled, or taken over: nothing of this run's to renew


def finish(
    lease: Lease,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> bool:
    """Mark the job finished in the caller's transaction, unless it is no longer this
    run's (canceled, or finished or taken over by another run): False then, and
    nothing written. Its input file goes with it, and its event (job.succeeded,
    job.failed) is written in the same transaction."""
    now = utcnow()
    finished = db.session.execute(
        update(Job)
        .where(lease.mine())
        .values(status=status, result=result, error=error, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(finished) == 0:
        return False
    files.drop(lease.job_id, "input")
    job = db.session.get_one(Job, lease.job_id, populate_existing=True)
    events.job_finished(job)
    _measure(job.type, status, job.started_at or now, now)
    return True


FINISHED = "jobs_finished"  # db.session.info: (kind, outcome, seconds), counted at commit


def _measure(kind: str, outcome: str, started: datetime, ended: datetime) -> None:
    """The job's duration, for /metrics once the transaction that ends it commits."""
    seconds = max((ended - started).total_seconds(), 0.0)
    db.session.info.setdefault(FINISHED, []).append((kind, outcome, seconds))


@sa_event.listens_for(db.session, "after_commit")
def _jobs_committed(session: Any) -> None:
    for kind, outcome, seconds in session.info.pop(FINISHED, ()):
        metrics.job_finished(kind, outcome, seconds)


@sa_event.listens_for(db.session, "after_rollback")
def _jobs_rolled_back(session: Any) -> None:
    session.info.pop(FINISHED, None)


def cancel(job: Job) -> bool:
    """Cancel a queued or running job in the caller's transaction; a running one
    stops at its next batch. Its input file goes with it, as with every end (a
    queued job never runs to drop it). False when it had finished already."""
    now = utcnow()
    canceled = db.session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_(("queued", "running")))
        .values(status="canceled", finished_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.refresh(job)
    if _rowcount(canceled) != 1:
        return False
    files.drop(job.id, "input")
    _measure(job.type, "canceled", job.started_at or now, now)
    return True


def sweep() -> list[int]:
    """Queue again the jobs whose worker died (lease expired) and those queued long
    ago that no worker took (a broker that was down at their commit). Their claim
    decides who runs them, so a job queued twice still runs once at a time."""
    config = current_app.config
    stale = utcnow() - timedelta(seconds=config["JOB_STALE_SECONDS"])
    lost = select(Job.id).where(
        or_(
            and_(Job.status == "running", Job.heartbeat_at < stale),
            and_(Job.status == "queued", Job.created_at < stale),
        )
    )
    ids = list(db.session.execute(lost.order_by(Job.id).limit(1000)).scalars())
    db.session.rollback()
    for job_id in ids:
        log.info("job %s: queued again by the sweep", job_id)
        enqueue(job_id)
    return ids


def purge() -> dict[str, int]:
    """Export files past JOB_FILE_TTL, and jobs finished more than
    JOB_RETENTION_SECONDS ago (with whatever they still hold)."""
    config = current_app.config
    now = utcnow()
    expired_files = select(Job.id).where(
        Job.finished_at < now - timedelta(seconds=config["JOB_FILE_TTL"])
    )
    files = db.session.execute(
        delete(JobChunk).where(JobChunk.job_id.in_(expired_files.scalar_subquery())),
        execution_options={"synchronize_session": False},
    )
    old = now - timedelta(seconds=config["JOB_RETENTION_SECONDS"])
    jobs = db.session.execute(
        delete(Job).where(Job.finished_at < old),
        execution_options={"synchronize_session": False},
    )
    db.session.commit()
    return {"chunks": _rowcount(files), "jobs": _rowcount(jobs)}
