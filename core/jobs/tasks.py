"""The Celery tasks of jobs (§12) and their beat schedule. Tasks carry ids, never
objects, and are idempotent (core/jobs/work.py): acknowledged late, a task whose
worker died is delivered again, and the sweep queues again what was lost."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from core.jobs import engine, upkeep, work


@shared_task(name="jobs.run")  # type: ignore[untyped-decorator]  # Celery has no types
def run_job(job_id: int) -> None:
    work.run(job_id)


@shared_task(name="jobs.sweep")  # type: ignore[untyped-decorator]
def sweep_jobs() -> list[int]:
    return engine.sweep()


@shared_task(name="jobs.purge")  # type: ignore[untyped-decorator]
def purge_jobs() -> dict[str, int]:
    return engine.purge()


def beat_schedule(config: dict[str, Any]) -> dict[str, Any]:
    """Periodic work of jobs and of the upkeep of kept state, for ``celery -A app
    beat`` (core/events/tasks.py adds the outbox's)."""
    return {
        "jobs.sweep": {"task": "jobs.sweep", "schedule": float(config["JOB_SWEEP_SECONDS"])},
        "jobs.purge": {"task": "jobs.purge", "schedule": float(config["JOB_PURGE_SECONDS"])},
        **upkeep.beat_schedule(config),
    }
