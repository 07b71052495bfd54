"""What a finished job tells the rest of the service: the one call site of the
``job.succeeded`` / ``job.failed`` events (§10, §16), written in the transaction that
finishes the job."""

from __future__ import annotations

from typing import Any

from core.jobs.document import job_document
from models import Job


def job_finished(job: Job) -> dict[str, Any] | None:
    """The event of a job that just succeeded or failed, for its creator (``job.*``
    events have no store and are shown to the job's owner): its type and body.

    The outbox (core/events/outbox.py) is not on this branch; merged, this records
    ``record(f"job.{job.status}", store_id=None, owner_id=job.user_id, obj=body)``
    here. A job whose creator was deleted (user_id null) has nobody to tell."""
    if job.status not in ("succeeded", "failed") or job.user_id is None:
        return None
    return {"type": f"job.{job.status}", "owner_id": job.user_id, "obj": job_document(job)}
