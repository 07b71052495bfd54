"""The Celery tasks of events and webhooks, and how they are queued.

- ``events.relay``: queued after every commit that wrote events (outbox's hook);
  numbers them and queues their deliveries.
- ``events.deliver``: one attempt (core/events/delivery.py).
- ``events.sweep`` (beat, every EVENTS_SWEEP_SECONDS): the relay's work again plus
  every attempt due and not queued: whatever a lost message or a broker down at
  commit time left behind. It is why queueing may fail without losing anything.
- ``events.purge`` (beat, hourly): events past EVENT_RETENTION_DAYS.

Tasks carry ids only and are idempotent (a claimed or finished attempt is skipped).
"""

from __future__ import annotations

import logging

from celery import shared_task
from flask import Flask, current_app

from core.events import delivery, outbox, relay

log = logging.getLogger("stores.events")


@shared_task(name="events.relay")  # type: ignore[untyped-decorator]  # Celery ships no types
def relay_events() -> int:
    total = 0
    while True:
        numbered, ids = relay.sequence()
        total += numbered
        queue_deliveries(ids)
        if numbered < relay.BATCH:
            return total


@shared_task(name="events.deliver")  # type: ignore[untyped-decorator]  # Celery ships no types
def deliver(delivery_id: int) -> None:
    delivery.attempt(delivery_id)


@shared_task(name="events.sweep")  # type: ignore[untyped-decorator]  # Celery ships no types
def sweep() -> None:
    relay_events()
    queue_deliveries(relay.due_deliveries())


@shared_task(name="events.purge")  # type: ignore[untyped-decorator]  # Celery ships no types
def purge() -> int:
    config = current_app.config
    return relay.purge(config["EVENT_PURGE_BATCH"], config["EVENT_RETENTION_DAYS"])


def queue_relay() -> None:
    """Queue the relay; a broker that is down loses nothing (the sweep does it)."""
    try:
        relay_events.apply_async(retry=False)
    except Exception:
        log.warning("relay not queued; the sweep will do its work", exc_info=True)


def queue_deliveries(ids: list[int]) -> None:
    for delivery_id in ids:
        try:
            deliver.apply_async((delivery_id,), retry=False)
        except Exception:
            log.warning("delivery %s not queued; the sweep will", delivery_id, exc_info=True)
            return


def init_app(app: Flask) -> None:
    """Queue the relay after commits that wrote events; the periodic tasks in beat."""
    outbox.on_commit_with_events(queue_relay)
    celery = app.extensions["celery"]
    celery.conf.beat_schedule = {
        **(celery.conf.beat_schedule or {}),
        "events-sweep": {"task": "events.sweep", "schedule": app.config["EVENTS_SWEEP_SECONDS"]},
        "events-purge": {"task": "events.purge", "schedule": 3600.0},
    }
