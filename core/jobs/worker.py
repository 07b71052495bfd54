"""The Celery app, bound to a Flask app as Flask's own documentation describes
("Background Tasks with Celery"): every task runs inside an application context of
the app that made it, so tasks use ``db.session`` and ``current_app`` as views do.

Tasks are acknowledged late and rejected when their worker dies, so a task whose
worker is killed mid-way is delivered again to another worker: every task must be
idempotent (run twice, or halfway then again, and the result is the same).

The broker is ``CELERY_BROKER_URL``: Redis (``REDIS_URL``) when configured; without
Redis, a broker kept in local files (kombu's filesystem transport under instance/),
so that ``make run`` works on one machine with no server but the app's. Tests that
need no worker run tasks eagerly (``CELERY_TASK_ALWAYS_EAGER``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery, Task
from flask import Flask


def broker_options(broker_url: str, instance_path: str, visibility_timeout: int) -> dict[str, Any]:
    """Transport options: Redis's redelivery delay; the filesystem broker's folders."""
    if broker_url.startswith("redis"):
        return {"visibility_timeout": visibility_timeout}
    if not broker_url.startswith("filesystem://"):
        return {}
    root = Path(instance_path) / "broker"
    folders = {"data_folder_in": root / "queue", "data_folder_out": root / "queue"}
    folders["processed_folder"] = root / "processed"
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {key: str(folder) for key, folder in folders.items()} | {"store_processed": False}


def celery_init_app(app: Flask) -> Celery:
    """The Celery app of ``app``, kept in ``app.extensions["celery"]``."""

    class FlaskTask(Task):  # type: ignore[misc]  # Celery ships no type information
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    broker = app.config["CELERY_BROKER_URL"]
    celery = Celery(app.name, task_cls=FlaskTask)
    celery.conf.update(
        broker_url=broker,
        broker_transport_options=broker_options(
            broker, app.instance_path, app.config["CELERY_VISIBILITY_TIMEOUT"]
        ),
        broker_connection_retry_on_startup=True,
        result_backend=None,  # task state lives in the database (jobs, deliveries)
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_always_eager=app.config["CELERY_TASK_ALWAYS_EAGER"],
        task_eager_propagates=True,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        beat_schedule_filename=str(Path(app.instance_path) / "celerybeat-schedule"),
    )
    from core.jobs import tasks, worker_metrics  # registers the tasks with this app

    celery.conf.beat_schedule = tasks.beat_schedule(app.config)
    worker_metrics.init_app(app, celery)
    celery.set_default()
    app.extensions["celery"] = celery
    return celery
