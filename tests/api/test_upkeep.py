"""Periodic upkeep on Celery beat (core/jobs/upkeep.py): the tasks that purge expired
Idempotency-Key answers, audit entries past their retention and expired revocations,
run as a worker runs them against real rows; and beat's schedule holds them, every
interval from its setting."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import insert, select

from db import db
from helpers import query
from models import AuditEntry, IdempotencyKey, RevokedToken
from models.types import utcnow

# The database stores (with Redis, answers and revocations expire in Redis itself).
DATABASE_STORES = {"REDIS_URL": None}


def run(app: Flask, name: str) -> Any:
    """The task, run here as a worker would run it; what it returned."""
    return app.extensions["celery"].tasks[name].apply().get()


def add(app: Flask, model: Any, rows: list[dict[str, Any]]) -> None:
    with app.app_context():
        db.session.execute(insert(model), rows)
        db.session.commit()


@pytest.mark.config(IDEMPOTENCY_PURGE_BATCH=2, **DATABASE_STORES)
def test_expired_idempotency_answers_are_purged_in_batches(app: Flask) -> None:
    now = utcnow()
    ages = {"old-1": -3600, "old-2": -60, "old-3": -1, "live-1": 60, "live-2": 86400}
    add(
        app,
        IdempotencyKey,
        [
            {
                "key": key,
                "fingerprint": "f" * 64,
                "owner": "user:1",
                "size": 10,
                "status": 201,
                "body": "{}",
                "created_at": now - timedelta(days=1),
                "expires_at": now + timedelta(seconds=seconds),
            }
            for key, seconds in ages.items()
        ],
    )
    assert run(app, "upkeep.purge_idempotency") == 3  # in batches of 2
    assert sorted(query(app, select(IdempotencyKey.key))) == [("live-1",), ("live-2",)]
    assert run(app, "upkeep.purge_idempotency") == 0  # run twice: nothing more


@pytest.mark.config(AUDIT_RETENTION_DAYS=30)
def test_audit_entries_past_the_retention_are_purged(app: Flask) -> None:
    now = utcnow()
    add(
        app,
        AuditEntry,
        [
            {
                "actor_type": "system",
                "action": "item.updated",
                "target_type": "item",
                "target_id": age,
                "changes": {},
                "created_at": now - timedelta(days=age),
            }
            for age in (400, 31, 29, 0)
        ],
    )
    before = {row[0] for row in query(app, select(AuditEntry.target_id))}
    assert run(app, "upkeep.purge_audit") == 2
    after = {row[0] for row in query(app, select(AuditEntry.target_id))}
    assert before - after == {400, 31} and {29, 0} <= after


@pytest.mark.config(**DATABASE_STORES)
def test_expired_revocations_are_purged(app: Flask) -> None:
    now = utcnow()
    expiries = {"jti:gone": now - timedelta(days=1), "jti:kept": now + timedelta(minutes=5)}
    add(app, RevokedToken, [{"key": k, "expires_at": e} for k, e in expiries.items()])
    assert run(app, "upkeep.purge_blocklist") == 1
    assert query(app, select(RevokedToken.key)) == [("jti:kept",)]


@pytest.mark.config(IDEMPOTENCY_PURGE_SECONDS=600, AUDIT_PURGE_SECONDS=7200)
def test_beat_runs_every_purge_at_its_interval(app: Flask) -> None:
    celery = app.extensions["celery"]
    every = {entry["task"]: entry["schedule"] for entry in celery.conf.beat_schedule.values()}
    assert every["upkeep.purge_idempotency"] == 600
    assert every["upkeep.purge_audit"] == 7200
    assert every["upkeep.purge_blocklist"] == app.config["BLOCKLIST_PURGE_SECONDS"] == 3600
    # Beside the outbox's and the jobs' own periodic work, every task known to the worker.
    assert {"events.sweep", "events.purge", "jobs.sweep", "jobs.purge"} <= set(every)
    assert set(every) <= set(celery.tasks)
