"""Periodic upkeep of kept state, run by Celery beat (``celery -A app beat``): answers
kept for Idempotency-Key retries past their expiry (§8), audit entries past
AUDIT_RETENTION_DAYS (§15), token revocations whose tokens have expired anyway. The
same work as ``flask idempotency purge``, ``flask audit purge`` and ``flask blocklist
purge``; each deletes in bounded statements and is safe to run twice."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from flask import current_app

from blocklist import get_blocklist
from core.auth import audit
from core.web.idempotency import get_store as get_idempotency_store


@shared_task(name="upkeep.purge_idempotency")  # type: ignore[untyped-decorator]  # Celery has no types
def purge_idempotency() -> int:
    return get_idempotency_store().purge(current_app.config["IDEMPOTENCY_PURGE_BATCH"])


@shared_task(name="upkeep.purge_audit")  # type: ignore[untyped-decorator]
def purge_audit() -> int:
    return audit.purge()


@shared_task(name="upkeep.purge_blocklist")  # type: ignore[untyped-decorator]
def purge_blocklist() -> int:
    return get_blocklist().purge()


def beat_schedule(config: dict[str, Any]) -> dict[str, Any]:
    """How often each purge runs (seconds, from the settings)."""
    every = {
        "upkeep.purge_idempotency": config["IDEMPOTENCY_PURGE_SECONDS"],
        "upkeep.purge_audit": config["AUDIT_PURGE_SECONDS"],
        "upkeep.purge_blocklist": config["BLOCKLIST_PURGE_SECONDS"],
    }
    return {name: {"task": name, "schedule": float(seconds)} for name, seconds in every.items()}
