"""A job's files in the database (models/job.py JobChunk): written and read a chunk
at a time, so neither a request nor a worker holds a whole file, and every worker
host reads what any web host stored."""

from __future__ import annotations

import io
from collections.abc import Iterator

from sqlalchemy import Connection, delete, insert, select

from db import db
from models import JobChunk

CHUNK_BYTES = 1024 * 1024


def add_chunk(
    job_id: int, kind: str, seq: int, data: bytes, *, on: Connection | None = None
) -> None:
    """One chunk, in the session's transaction or on the connection ``on``."""
    statement = insert(JobChunk).values(job_id=job_id, kind=kind, seq=seq, data=data)
    (on or db.session).execute(statement)


def drop(job_id: int, kind: str, *, on: Connection | None = None) -> None:
    statement = delete(JobChunk).where(JobChunk.job_id == job_id, JobChunk.kind == kind)
    (on or db.session).execute(statement)


def has(job_id: int, kind: str) -> bool:
    found = select(JobChunk.seq).where(JobChunk.job_id == job_id, JobChunk.kind == kind)
    return db.session.execute(found.limit(1)).first() is not None


def chunks(job_id: int, kind: str) -> Iterator[bytes]:
    """The file's chunks in order, each read by its own statement."""
    seq = 0
    while True:
        data = db.session.execute(
            select(JobChunk.data).where(
                JobChunk.job_id == job_id, JobChunk.kind == kind, JobChunk.seq == seq
            )
        ).scalar()
        if data is None:
            return
        yield bytes(data)
        seq += 1


class ChunkReader(io.RawIOBase):
    """A stored file as a binary file object (what the CSV importer reads)."""

    def __init__(self, job_id: int, kind: str) -> None:
        self._chunks = chunks(job_id, kind)
        self._pending = memoryview(b"")
        self.position = 0  # bytes read so far

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        self.position += size
        return size
