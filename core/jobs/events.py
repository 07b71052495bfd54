"""What a finished job tells the rest of the service: the one call site of the
``job.succeeded`` / ``job.failed`` events (§10, §16), written in the transaction that
finishes the job."""

from __future__ import annotations

import json

from flask import current_app

from core.events.outbox import record
from core.jobs.document import job_document
from models import Job


def job_finished(job: Job) -> None:
    """The event of a job that just succeeded or failed, for its creator (``job.*``
    events have no store and are shown to the job's owner). A job whose creator was
    deleted (user_id null) has nobody to tell."""
    if job.status not in ("succeeded", "failed") or job.user_id is None:
        return
    # As GET /jobs/{id} writes it: timestamps in the app's JSON form.
    body = json.loads(current_app.json.dumps(job_document(job, reader=job.user_id)))
    record(f"job.{job.status}", store_id=None, owner_id=job.user_id, obj=body)
