"""Where a worker process makes its deliveries: threads of their own, in two lanes, so
that receivers slow to answer hold neither the worker's processes nor other webhooks'
turn (docs/events.md, "Worker slots").

A delivery waits on its receiver; it does not compute. ``events.deliver_batch`` hands
its batch to this process's delivery threads and returns at once, so the process takes
its next task (another webhook's batch, a relay, an import) while the POSTs wait.

- **The fast lane** (``WEBHOOK_DELIVERY_THREADS``) makes every webhook's batches until
  one of its batches takes the whole timeout (a receiver that hangs, or one slow
  answer after another).
- **The slow lane** (``WEBHOOK_SLOW_THREADS``) makes that webhook's batches from then
  on, until one of them is done within the timeout: receivers that hang wait behind
  each other, never in front of one that answers.
- **One batch per webhook at a time** in a process: its later batches wait for it, in
  id order, and take no thread meanwhile, so a webhook with a backlog and a hanging
  receiver holds one thread, not all of them. What waits is capped (``WAITING_MAX``
  attempts a webhook); past it the attempts are left to the sweep.

Nothing is lost when the process dies: a batch being made is claimed in the database
(core/events/delivery.py) and made again by the sweep when the claim expires; a batch
waiting here is not claimed, its attempts stay due and marked queued, and the sweep
queues them again when the mark expires (``WEBHOOK_REQUEUE_SECONDS``). With no
threads (both settings 0) or tasks run eagerly (tests, ``flask`` commands) a batch is
made in the task, as before.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from flask import Flask, current_app

from core.events import delivery

log = logging.getLogger("stores.events")

WAITING_MAX = 1000  # attempts of one webhook waiting in a process, at most


@dataclass
class _Webhook:
    """One webhook's state in this process: the attempts waiting for its batch in
    flight, and whether its last batch took the whole timeout."""

    waiting: set[int] = field(default_factory=set)
    slow: bool = False
    running: bool = False


class Lanes:
    """The two lanes of one worker process (made after the fork, at its first task)."""

    def __init__(self, app: Flask, fast: int, slow: int, batch: int) -> None:
        self.app = app
        self.pid = os.getpid()
        self.batch = batch
        self.timeout = app.config["WEBHOOK_TIMEOUT_SECONDS"]
        # A lane of 0 threads sends its webhooks to the other one.
        self.fast = ThreadPoolExecutor(fast or slow, thread_name_prefix="delivery-fast")
        self.slow = (
            ThreadPoolExecutor(slow, thread_name_prefix="delivery-slow") if slow else self.fast
        )
        self.lock = threading.Lock()
        self.webhooks: dict[int, _Webhook] = {}

    def submit(self, webhook_id: int, delivery_ids: list[int]) -> None:
        """Make ``delivery_ids`` (attempts of ``webhook_id``) in its lane, or after the
        batch of it already in flight here."""
        with self.lock:
            hook = self.webhooks.setdefault(webhook_id, _Webhook())
            room = WAITING_MAX - len(hook.waiting)
            hook.waiting.update(sorted(set(delivery_ids) - hook.waiting)[: max(room, 0)])
            if hook.running or not hook.waiting:
                return  # the batch in flight takes these next (or the sweep does)
            hook.running = True
            self._start(webhook_id, hook)

    def _start(self, webhook_id: int, hook: _Webhook) -> None:
        """Start ``hook``'s next batch in its lane; under the lock."""
        ids = sorted(hook.waiting)[: self.batch]
        hook.waiting.difference_update(ids)
        lane = self.slow if hook.slow else self.fast
        # The task's context (its trace: the receiver gets the request's traceparent).
        context = contextvars.copy_context()
        lane.submit(context.run, self._run, webhook_id, ids)

    def _run(self, webhook_id: int, delivery_ids: list[int]) -> None:
        started = time.monotonic()
        left: list[int] = []
        try:
            with self.app.app_context():
                left = delivery.attempt_batch(delivery_ids)
        except Exception:  # the claim's expiry has them made again
            log.exception("deliveries %s of webhook %s failed", delivery_ids, webhook_id)
        took = time.monotonic() - started
        with self.lock:
            hook = self.webhooks[webhook_id]
            hook.slow = took >= self.timeout
            hook.waiting.update(left)  # not started in time: first of what comes next
            if hook.waiting:
                self._start(webhook_id, hook)
            else:
                del self.webhooks[webhook_id]


_lanes: Lanes | None = None
_made = threading.Lock()


def lanes(batch: int) -> Lanes | None:
    """This process's lanes, or None where batches are made in the task."""
    global _lanes
    config = current_app.config
    fast, slow = config["WEBHOOK_DELIVERY_THREADS"], config["WEBHOOK_SLOW_THREADS"]
    if config["CELERY_TASK_ALWAYS_EAGER"] or not (fast or slow):
        return None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with _made:
        # Made in the process that runs tasks (a prefork child, after the fork).
        if _lanes is None or _lanes.app is not app or _lanes.pid != os.getpid():
            _lanes = Lanes(app, fast, slow, batch)
        return _lanes
