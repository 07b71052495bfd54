"""Work outside the request: the Celery app (worker.py) and its tasks."""
