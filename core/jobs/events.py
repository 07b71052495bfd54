"""What a finished job tells the rest of the service: the one call site of the
``job.succeeded`` / ``job.failed`` events (§10, §16), written in the transaction that
finishes the job."""

from __future__ import annotations

from core.events.outbox import record
from models import Job


def job_finished(job: Job) -> None:
    """The event of a job that just succeeded or failed, for its creator (``job.*``
    events have no store and are shown to the job's owner). A job whose creator was
    deleted (user_id null) has nobody to tell."""
    if job.status not in ("succeeded", "failed") or job.user_id is None:
        return
    # Written by the jobs table's serializer (resources/events.py): as GET /jobs/{id}
    # shows it to its creator, JobSchema's ISO 8601 timestamps included.
    record(f"job.{job.status}", store_id=None, owner_id=job.user_id, obj=job)
