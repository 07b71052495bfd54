"""Where a worker process makes its deliveries: threads of their own, in two lanes, so
that receivers slow to answer hold neither the worker's processes nor other webhooks'
turn (docs/events.md, "Deliveries have threads of their own").

A delivery waits on its receiver; it does not compute. ``events.deliver_batch`` hands
its batch to this process's delivery threads and returns at once, so the process takes
its next task (another webhook's batch, a relay, an import) while the POSTs wait.

- **The fast lane** (``WEBHOOK_DELIVERY_THREADS``) makes the batches of webhooks that
  answer: ones not seen failing.
- **The slow lane** (``WEBHOOK_SLOW_THREADS``) makes those of a webhook whose last
  batch here took half the timeout or more per attempt, in the receiver's time (the
  attempts' own durations, not the database's writes: a receiver that hangs, or
  answers in seconds), until one of its batches does better; and, the first time this
  process sees a webhook, of one whose last attempt failed (its failure count in the
  database: another process, or this one before a restart, saw it hang). Receivers
  that hang wait behind each other, never in front of one that answers.
- **An owner's share of the fast lane**: at most half its threads make the batches of
  one owner's webhooks at a time; that owner's next batches go to the slow lane until
  one ends. An account whose webhooks hang (and look new, replaced as they fail) holds
  the threads it is given, not every other owner's turn (a user's 16 such webhooks
  delayed another user's first attempts by 6 to 25 s). Past its share, a webhook whose
  last batch here answered in time (``proven``) still takes a fast thread that is idle:
  an owner's busy, healthy webhooks do not wait in the slow lane behind another's
  receiver that hangs while a fast thread has nothing to do. The share is per account:
  several accounts together hold several shares (signing up is limited per address).
- **One batch per webhook at a time** in a process: its later batches wait for it, in
  id order, and take no thread meanwhile, so a webhook with a backlog and a hanging
  receiver holds one thread, not all of them. What waits is capped (``WAITING_MAX``
  attempts a webhook); past it the attempts are turned away, and read back from the
  database once what waits is done (a burst, an import's events, goes out at the
  receiver's pace, not after the sweep's WEBHOOK_REQUEUE_SECONDS: a reviewer's 10,001
  events took 98 s to one receiver, most of it waiting for the sweep).

Nothing is lost when the process dies: a batch being made is claimed in the database
(core/events/delivery.py) and made again by the sweep when the claim expires; a batch
waiting here is not claimed, its attempts stay due and marked queued, and the sweep
queues them again when the mark expires (``WEBHOOK_REQUEUE_SECONDS``). A worker that
stops (a deploy) is not a death: its processes finish the attempts under way, start
no more, and queue again what waits (``close``). With no threads (both settings 0) or
tasks run eagerly (tests, ``flask`` commands) a batch is made in the task, as before.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from celery.signals import worker_process_shutdown
from flask import Flask, current_app
from sqlalchemy import select

from core.events import delivery
from core.events.tables import WEBHOOKS
from db import db

log = logging.getLogger("stores.events")

WAITING_MAX = 1000  # attempts of one webhook waiting in a process, at most
PROVEN_MAX = 10_000  # webhooks remembered as answering in time, the latest kept

# Queues attempts of a webhook again (core/events/tasks.py); False if it could not.
Requeue = Callable[[list[int], int], bool]


@dataclass
class _Webhook:
    """One webhook's state in this process: the attempts waiting for its batch in
    flight, and whether it is slow. Kept while it has work, or while it is slow."""

    slow: bool
    owner: int | None
    waiting: set[int] = field(default_factory=set)
    running: bool = False
    fast: bool = False  # its batch in flight holds one of its owner's fast threads
    turned_away: bool = False  # attempts past WAITING_MAX, left in the database


class Lanes:
    """The two lanes of one worker process (made after the fork, at its first task)."""

    def __init__(self, app: Flask, fast: int, slow: int, batch: int, requeue: Requeue) -> None:
        self.app = app
        self.pid = os.getpid()
        self.batch = batch
        self.requeue = requeue
        self.timeout = app.config["WEBHOOK_TIMEOUT_SECONDS"]
        # A lane of 0 threads sends its webhooks to the other one (one pool, not two).
        self.fast = ThreadPoolExecutor(fast or slow, thread_name_prefix="delivery-fast")
        self.slow = (
            ThreadPoolExecutor(slow, thread_name_prefix="delivery-slow")
            if slow and fast
            else self.fast
        )
        self.size = fast or slow  # fast threads
        self.share = max(1, self.size // 2)  # fast threads one owner may hold
        self.lock = threading.Lock()
        self.webhooks: dict[int, _Webhook] = {}
        self.held: Counter[int | None] = Counter()  # fast threads held, by owner
        # Webhooks whose last batch here answered in time, least recently first.
        self.proven: OrderedDict[int, None] = OrderedDict()
        self.stopping = threading.Event()

    def submit(self, webhook_id: int, delivery_ids: list[int]) -> None:
        """Make ``delivery_ids`` (attempts of ``webhook_id``) in its lane, or after the
        batch of it already in flight here."""
        if self.stopping.is_set():
            self.requeue(sorted(delivery_ids), webhook_id)
            return
        seen = None if webhook_id in self.webhooks else self._first_seen(webhook_id)
        with self.lock:
            hook = self.webhooks.get(webhook_id)
            if hook is None:
                failing, owner = seen or (False, None)
                hook = self.webhooks[webhook_id] = _Webhook(slow=failing, owner=owner)
            room = max(WAITING_MAX - len(hook.waiting), 0)
            fresh = sorted(set(delivery_ids) - hook.waiting)
            hook.waiting.update(fresh[:room])
            hook.turned_away |= len(fresh) > room
            if not hook.running and hook.waiting:
                self._start(webhook_id, hook)

    def _first_seen(self, webhook_id: int) -> tuple[bool, int | None]:
        """Whether the webhook's last attempt failed, and its owner (one indexed read)."""
        with self.app.app_context():
            row = db.session.execute(
                select(WEBHOOKS.c.consecutive_failures, WEBHOOKS.c.owner_id).where(
                    WEBHOOKS.c.id == webhook_id
                )
            ).one_or_none()
        return (bool(row.consecutive_failures), row.owner_id) if row else (False, None)

    def _start(self, webhook_id: int, hook: _Webhook) -> None:
        """Start ``hook``'s next batch in its lane; under the lock. Raises (and changes
        nothing) if the lane takes no more work."""
        ids = sorted(hook.waiting)[: self.batch]
        idle = self.size - sum(self.held.values())
        within_share = self.held[hook.owner] < self.share
        fast = not hook.slow and (within_share or (webhook_id in self.proven and idle > 0))
        # The task's context: its trace, in the batch's log lines (each POST is sent in
        # its own event's trace: delivery._post).
        context = contextvars.copy_context()
        (self.fast if fast else self.slow).submit(context.run, self._run, webhook_id, ids)
        hook.waiting.difference_update(ids)
        hook.running, hook.fast = True, fast
        if fast:
            self.held[hook.owner] += 1

    def _run(self, webhook_id: int, delivery_ids: list[int]) -> None:
        left: list[int] = []
        per_attempt: float | None = None  # unknown: the lane stays as it was
        try:
            with self.app.app_context():
                made = delivery.attempt_batch(delivery_ids, stopping=self.stopping)
                # The receiver's time per attempt made: not the database's (a loaded
                # one made a healthy webhook look slow), nor attempts another process
                # held (counted as made, they made a hanging one look fast).
                if made.seconds:
                    per_attempt = sum(made.seconds) / len(made.seconds)
                left = made.left + self._turned_away(webhook_id)
        except Exception:  # the claim's expiry has them made again
            log.exception("deliveries %s of webhook %s failed", delivery_ids, webhook_id)
        finally:
            self._next(webhook_id, left, per_attempt)

    def _turned_away(self, webhook_id: int) -> list[int]:
        """The webhook's attempts this process turned away (past WAITING_MAX), read
        back once nothing of it waits here: its due attempts nobody makes, oldest
        first. Another process may hold some of them too; the claim makes each once."""
        with self.lock:
            hook = self.webhooks[webhook_id]
            if not hook.turned_away or hook.waiting or self.stopping.is_set():
                return []
            hook.turned_away = False
        found = delivery.due_attempts(webhook_id, WAITING_MAX)
        if len(found) == WAITING_MAX:  # more may be left behind them
            with self.lock:
                hook.turned_away = True
        return found

    def _next(self, webhook_id: int, left: list[int], per_attempt: float | None) -> None:
        """After a batch: the webhook's lane from what its attempts took, then its next
        batch (what was left first), or what waits handed back when stopping."""
        handed_back: list[int] = []
        with self.lock:
            hook = self.webhooks[webhook_id]
            if hook.fast:
                self.held[hook.owner] -= 1
                if not self.held[hook.owner]:
                    del self.held[hook.owner]
            hook.running = hook.fast = False
            if per_attempt is not None:
                hook.slow = per_attempt >= self.timeout / 2
                self._prove(webhook_id, answered=not hook.slow)
            hook.waiting.update(left)  # not started in time: first of what comes next
            if self.stopping.is_set():
                handed_back, hook.waiting = sorted(hook.waiting), set()
            elif hook.waiting:
                try:
                    self._start(webhook_id, hook)
                except RuntimeError:  # the process is ending: the sweep's
                    log.warning("deliveries of webhook %s left to the sweep", webhook_id)
            if not (hook.running or hook.waiting or hook.slow):
                del self.webhooks[webhook_id]
        if handed_back:
            self.requeue(handed_back, webhook_id)

    def _prove(self, webhook_id: int, *, answered: bool) -> None:
        """Remember (or forget) that the webhook's last batch answered in time; under
        the lock."""
        if not answered:
            self.proven.pop(webhook_id, None)
            return
        self.proven[webhook_id] = None
        self.proven.move_to_end(webhook_id)
        if len(self.proven) > PROVEN_MAX:
            self.proven.popitem(last=False)

    def close(self) -> None:
        """The worker stops: batches under way finish the attempt they are making and
        start no other; what waits is queued again at once, for another process (else
        the sweep would, after WEBHOOK_REQUEUE_SECONDS)."""
        self.stopping.set()
        with self.lock:
            waiting = {i: sorted(h.waiting) for i, h in self.webhooks.items() if h.waiting}
            for hook in self.webhooks.values():
                hook.waiting.clear()
        with self.app.app_context():
            for webhook_id, ids in waiting.items():
                self.requeue(ids, webhook_id)
            self.fast.shutdown(wait=True)  # the batches under way write their outcomes
            self.slow.shutdown(wait=True)


_lanes: Lanes | None = None
_made = threading.Lock()


def lanes(batch: int, requeue: Requeue) -> Lanes | None:
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
            _lanes = Lanes(app, fast, slow, batch, requeue)
        return _lanes


def _process_ends(**_kwargs: Any) -> None:
    """A worker's pool process ends (Celery's worker_process_shutdown): close its lanes."""
    if _lanes is not None and _lanes.pid == os.getpid():
        _lanes.close()


worker_process_shutdown.connect(_process_ends, weak=False, dispatch_uid="stores-lanes")
