"""What a finished job tells the rest of the service: the one call site of the
``job.succeeded`` / ``job.failed`` events (§10), written by the event outbox."""

from __future__ import annotations

from models import Job


def job_finished(job: Job) -> None:
    """Called in the transaction that finishes the job (succeeded or failed), so the
    event commits with it. The outbox (core/events) is not part of this branch yet:
    wired here when it is merged."""
