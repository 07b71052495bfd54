"""A job as the API shows it (§12 Job JSON): one writer for GET /jobs/{id}, the 202
of every request that starts a job, the list, and the job's events."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import current_app

from models.types import utcnow


def file_expires(job: Any) -> datetime:
    """When an export's file stops being served (JOB_FILE_TTL after it finished)."""
    finished: datetime = job.finished_at
    return finished + timedelta(seconds=current_app.config["JOB_FILE_TTL"])


def has_file(job: Any) -> bool:
    return (
        job.type == "export"
        and job.status == "succeeded"
        and job.finished_at is not None
        and file_expires(job) > utcnow()
    )


def serves_file(job: Any, user_id: int | None) -> bool:
    """Whether ``user_id`` may fetch the job's file now: its creator only (the rows an
    export holds are the ones its creator saw), so not an admin reading the job."""
    return user_id is not None and job.user_id == user_id and has_file(job)


def job_document(job: Any, root: str = "", *, reader: int | None) -> dict[str, Any]:
    """``job`` (a Job, or a row with its columns) as its JSON: timestamps as datetimes
    (JobSchema writes them, for a response and for an event alike); ``root``: the URL prefix the
    service is mounted under (a request's script root); ``reader``: the user it is
    shown to, who sees ``links.file`` only if they may fetch it."""
    links = {"self": f"{root}/jobs/{job.id}"}
    if serves_file(job, reader):
        links["file"] = f"{root}/jobs/{job.id}/file"
    return {
        "id": job.id,
        "type": job.type,
        "status": job.status,
        "progress": {"done": job.done, "total": job.total},
        "result": job.result,
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "links": links,
    }
