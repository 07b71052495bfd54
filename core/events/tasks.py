"""The Celery tasks of events and webhooks, and how they are queued.

- ``events.relay``: queued after every commit that wrote events (outbox's hook);
  numbers them and queues their deliveries.
- ``events.deliver_batch``: due attempts of one webhook, in order over one
  connection (core/events/delivery.py), made by the process's delivery threads
  (core/events/lanes.py); ``events.deliver``, one attempt, is what an earlier release
  queued.
- ``events.sweep`` (beat, every EVENTS_SWEEP_SECONDS): the relay's work again plus
  every attempt due and not queued: whatever a lost message or a broker down at
  commit time left behind. It is why queueing may fail without losing anything. It
  also deletes the deleted stores kept until their webhooks were told.
- ``events.purge`` (beat, hourly): events past EVENT_RETENTION_DAYS.

Tasks carry ids only and are idempotent (a claimed or finished attempt is skipped).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import redis
from celery import shared_task
from flask import Flask, current_app

from core.catalog import stores
from core.events import delivery, lanes, outbox, relay

log = logging.getLogger("stores.events")


@shared_task(name="events.relay")  # type: ignore[untyped-decorator]  # Celery ships no types
def relay_events() -> int:
    # From now on a commit queues another relay: what this one does not see, that does.
    _release_relay_slot()
    total = 0
    while True:
        numbered, made = relay.sequence()
        total += numbered
        queue_deliveries(made)
        if numbered < relay.BATCH:
            return total


@shared_task(name="events.deliver_batch")  # type: ignore[untyped-decorator]  # Celery ships no types
def deliver_batch(delivery_ids: list[int], webhook_id: int | None = None) -> None:
    """Attempts of one webhook: handed to this process's delivery threads (core/events/
    lanes.py), or made here (no threads, eager tasks, a message of an earlier release
    that names no webhook)."""
    pool = lanes.lanes(BATCH, _queue)
    if pool is not None and webhook_id is not None:
        pool.submit(webhook_id, delivery_ids)
        return
    left = delivery.attempt_batch(delivery_ids).left
    if left:  # those a slow receiver left no time for: the next task's, at once
        _queue(left, webhook_id)


@shared_task(name="events.deliver")  # type: ignore[untyped-decorator]  # Celery ships no types
def deliver(delivery_id: int) -> None:
    deliver_batch.run([delivery_id])


@shared_task(name="events.sweep")  # type: ignore[untyped-decorator]  # Celery ships no types
def sweep() -> None:
    relay_events()
    queue_deliveries(relay.due_deliveries())
    # A deleted store's webhooks, once told (they got its store.deleted), go with it.
    stores.forget_deleted_stores()


@shared_task(name="events.purge")  # type: ignore[untyped-decorator]  # Celery ships no types
def purge() -> int:
    config = current_app.config
    return relay.purge(config["EVENT_PURGE_BATCH"], config["EVENT_RETENTION_DAYS"])


# One relay queued at a time (on a Redis broker): a commit queues one only if none is
# waiting, so 50 commits a second queue a few relays, not 50 that would take turns on
# the counter's lock. A relay removes the mark as it starts, RELAY_GATHER_SECONDS
# after it was picked up: the commits meanwhile queue nothing and are numbered by it,
# so a steady stream of writes costs at most ~10 relays (and delivery tasks per
# webhook) a second, not one or two per commit, for 100 ms more latency. If the
# message is lost the mark expires, and the sweep has done the work meanwhile.
RELAY_MARK_SECONDS = 5
RELAY_GATHER_SECONDS = 0.1
_marks: dict[str, redis.Redis] = {}


def _mark() -> tuple[redis.Redis, str] | None:
    """The broker's Redis and the key of the mark, or None (another broker, eager)."""
    config = current_app.config
    url = config["CELERY_BROKER_URL"]
    if config["CELERY_TASK_ALWAYS_EAGER"] or not url.startswith("redis"):
        return None
    if url not in _marks:
        _marks[url] = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    return _marks[url], f"{config['REDIS_KEY_PREFIX']}:events:relay-queued"


def _release_relay_slot() -> None:
    try:
        found = _mark()
        if found is not None:
            time.sleep(RELAY_GATHER_SECONDS)
            found[0].delete(found[1])
    except redis.RedisError:
        log.warning("relay mark not removed; it expires", exc_info=True)


def queue_relay() -> None:
    """Queue the relay unless one is waiting; a broker that is down loses nothing (the
    sweep does the relay's work)."""
    try:
        found = _mark()
        if found is not None and not found[0].set(found[1], 1, nx=True, ex=RELAY_MARK_SECONDS):
            return  # a relay is waiting: it will see this commit's events
        relay_events.apply_async(retry=False)
    except Exception:
        log.warning("relay not queued; the sweep will do its work", exc_info=True)


BATCH = 100  # attempts per task at most


def queue_deliveries(made: Iterable[tuple[int, int]]) -> None:
    """Queue attempts, given as (webhook id, delivery id): one task per webhook and
    ``BATCH`` of its attempts, which it makes in id order over one connection."""
    batches: dict[int, list[int]] = {}
    for webhook_id, delivery_id in made:
        batches.setdefault(webhook_id, []).append(delivery_id)
    for webhook_id, ids in batches.items():
        ids.sort()
        for start in range(0, len(ids), BATCH):
            if not _queue(ids[start : start + BATCH], webhook_id):
                return


def _queue(delivery_ids: list[int], webhook_id: int | None) -> bool:
    try:
        deliver_batch.apply_async((delivery_ids, webhook_id), retry=False)
    except Exception:
        log.warning("deliveries %s not queued; the sweep will", delivery_ids, exc_info=True)
        return False
    return True


def init_app(app: Flask) -> None:
    """Queue the relay after commits that wrote events; the periodic tasks in beat."""
    outbox.on_commit_with_events(queue_relay)
    celery = app.extensions["celery"]
    celery.conf.beat_schedule = {
        **(celery.conf.beat_schedule or {}),
        "events-sweep": {"task": "events.sweep", "schedule": app.config["EVENTS_SWEEP_SECONDS"]},
        "events-purge": {"task": "events.purge", "schedule": 3600.0},
    }
