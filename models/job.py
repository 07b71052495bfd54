"""Jobs (§12): long work done by a worker process, and the files it reads or writes.

A job row is the whole truth about its work: the worker claims it with a lease
(``heartbeat_at``), writes its progress as it goes, and finishes it with one
conditional UPDATE, so a canceled job stays canceled and a job run twice (a task
redelivered after its worker died) is finished once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from db import Model
from models.types import UTCDateTime, utcnow

JOB_TYPES = ("store_delete", "import", "export")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
FINISHED = ("succeeded", "failed", "canceled")


class Job(Model):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    # SET NULL: a job outlives its creator (a store deletion must still finish).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # No foreign key: a store deletion's job outlives its store.
    store_id: Mapped[int | None]
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    done: Mapped[int] = mapped_column(default=0)
    total: Mapped[int | None]
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The running worker's lease: renewed by its heartbeat (core/jobs/engine.py) while
    # the run lasts; stale = the worker died. A run's writes name its claim (attempts).
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_jobs_user_id_id", user_id, id),
        Index("ix_jobs_status_heartbeat_at", status, heartbeat_at),
        Index("ix_jobs_finished_at", finished_at),
        {"sqlite_autoincrement": True},
    )

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.type} {self.status}>"


class JobChunk(Model):
    """A job's file (an import's CSV body, an export's CSV) as numbered chunks: written
    and read a chunk at a time, so neither side holds a whole file in memory, and every
    worker host reads it from the database."""

    __tablename__ = "job_chunks"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # input | output
    seq: Mapped[int] = mapped_column(primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
