"""Delivery attempts, start to end (contract §11): claim a batch of them, sign and
POST each event, write the outcomes, and schedule the next attempts or give up.

A batch is one task's work: the due attempts of one webhook (up to
``tasks.BATCH``), POSTed in order over one connection. Its attempts are claimed
(``running_until``) for as long as the batch may take: a worker killed mid-way
leaves them claimed until then, after which the sweep queues them again, so every
event is delivered at least once; a task delivered twice finds its attempts claimed
or finished and does nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from itertools import groupby
from typing import Any

from flask import current_app
from opentelemetry import propagate
from sqlalchemy import Row, case, func, or_, select, update
from standardwebhooks.webhooks import Webhook as Signer

from core.auth import audit
from core.events import outbox, sender
from core.events.tables import DELIVERIES, EVENTS, WEBHOOKS
from core.web import metrics, tracing
from db import db
from models import Delivery, Event, Webhook
from models.event import public_id
from models.types import utcnow

log = logging.getLogger("stores.events")

LEASE_MARGIN = 5  # seconds a claim outlasts the timeout
# How stale a batch's view of its webhook may grow: past it, the webhook is read again
# before the next POST, and a webhook deleted, disabled or given another address or
# secret meanwhile gets nothing more from this batch (the rest are released, for the
# next task to make as the webhook now is). A batch POSTed on for seconds to an address
# its owner had just removed.
RECHECK_SECONDS = 1.0

# Lock order: writing an outcome locks the webhook, then its delivery, the order in
# which deleting a webhook (itself, with its owner or its store) locks them: the webhook,
# then its deliveries by the cascade. In the other order each waited for the other, and
# PostgreSQL ended one of them (the deletion's request: a 503).


def new_secret() -> str:
    """``whsec_`` + standard base64 of 24 random bytes (contract §16)."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def signed_headers(secret: str, event_id: str, body: str) -> dict[str, str]:
    """Standard Webhooks' three headers, and ``traceparent``: the current span (an
    attempt's, in its event's trace: ``_post``) goes on to the receiver, as an
    instrumented HTTP client would send it."""
    now = utcnow()
    headers = {
        "Content-Type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Signer(secret).sign(event_id, now, body),
    }
    propagate.inject(headers)
    return headers


# What an attempt needs: the delivery, its webhook's address and secret, its event.
_ATTEMPT = (
    DELIVERIES.c.id,
    DELIVERIES.c.manual,
    WEBHOOKS.c.id.label("hook_id"),
    WEBHOOKS.c.url,
    WEBHOOKS.c.enabled,
    WEBHOOKS.c.secret,
    WEBHOOKS.c.consecutive_failures,
    EVENTS.c.seq,
    EVENTS.c.type,
    EVENTS.c.created_at,
    EVENTS.c.store_id,
    EVENTS.c.actor_type,
    EVENTS.c.actor_id,
    EVENTS.c.request_id,
    EVENTS.c.traceparent,
    EVENTS.c.data,
    EVENTS.c.webhook_id,
)


def _claim(delivery_ids: list[int]) -> list[Row[Any]]:
    """Claim the attempts of ``delivery_ids`` that are due and that nobody makes, in
    one UPDATE, and read them with their webhook and event in one query (``_ATTEMPT``),
    by webhook then id. Commits: the claim is seen by every other worker, and no
    transaction nor connection is held during the POSTs. Core statements and rows,
    not ORM objects: a batch is a few statements whatever its size, and cheap ones.

    The claim lasts the batch's time to start POSTs (the timeout), the last one's
    timeout and a margin: a worker killed mid-batch leaves the rest to the sweep then."""
    timeout = current_app.config["WEBHOOK_TIMEOUT_SECONDS"]
    now = utcnow()
    lease = now + timedelta(seconds=2 * timeout + LEASE_MARGIN)
    deliveries = DELIVERIES.c
    claimed = list(
        db.session.scalars(
            update(DELIVERIES)
            .where(
                deliveries.id.in_(delivery_ids),
                deliveries.status == "pending",
                deliveries.next_attempt_at <= now,
                or_(deliveries.running_until.is_(None), deliveries.running_until < now),
            )
            .values(running_until=lease)
            .returning(deliveries.id)
        )
    )
    rows: list[Row[Any]] = []
    if claimed:
        rows = list(
            db.session.execute(
                select(*_ATTEMPT)
                .join_from(DELIVERIES, WEBHOOKS, WEBHOOKS.c.id == deliveries.webhook_id)
                .join(EVENTS, EVENTS.c.id == deliveries.event_id)
                .where(deliveries.id.in_(claimed))
                .order_by(deliveries.webhook_id, deliveries.id)
            )
        )
    db.session.commit()
    return rows


@dataclass(frozen=True)
class Made:
    """What a batch did: the ids it left for another task, and the seconds each attempt
    it made took (its receiver's time, as the metrics measure it; none for the
    attempts another task held, which it did not make)."""

    left: list[int]
    seconds: list[float]


def attempt_batch(delivery_ids: list[int], *, stopping: threading.Event | None = None) -> Made:
    """Make the attempts of ``delivery_ids`` that are due and that nobody makes: in id
    order, one webhook after another, each webhook's over one connection (its address
    checked once for the batch). Returns the ids left for another task: claimed but
    not started within the timeout (a slow receiver) or past a failure that disables
    the webhook (none, once it has), once its webhook changed (``RECHECK_SECONDS``),
    or once ``stopping`` is set (the worker stops), released and marked queued.

    Few round trips to the database, whatever the batch's size: the claim and the
    read, then the outcomes, a run of successes in one UPDATE (a failure keeps its
    own path, which schedules its retry).

    The outcomes are written after the POSTs, so a webhook's failures are counted
    here too, as they go (from its count at the claim, a success resetting it): once
    they reach WEBHOOK_DISABLE_AFTER, writing them disables the webhook, and its
    attempts not yet made are not made (they end as the disable ends them). A POST
    made past that point would be logged as "disabled" though the receiver got it."""
    config = current_app.config
    rows = _claim(delivery_ids)
    stop_at = time.monotonic() + config["WEBHOOK_TIMEOUT_SECONDS"]
    outcomes: list[tuple[int, sender.Result]] = []
    left: list[int] = []
    for hook_id, group in groupby(rows, key=lambda row: row.hook_id):
        attempts = list(group)
        webhook = attempts[0]  # every row of the group carries its webhook's columns
        failures, made = webhook.consecutive_failures, 0
        seen, changed = time.monotonic(), False
        with sender.Target(
            webhook.url,
            timeout=config["WEBHOOK_TIMEOUT_SECONDS"],
            allow_http=config["WEBHOOK_ALLOW_HTTP"],
            allow_private=config["WEBHOOK_ALLOW_PRIVATE_NETWORKS"],
        ) as target:
            for attempt in attempts:
                # Past the limit at the claim (a lowered setting): one more is made,
                # and its failure disables, rather than none and the batch released
                # and queued again, for ever.
                disabling = (
                    webhook.enabled and made > 0 and failures >= config["WEBHOOK_DISABLE_AFTER"]
                )
                ending = stopping is not None and stopping.is_set()
                if not changed and time.monotonic() - seen >= RECHECK_SECONDS:
                    changed, seen = _changed(hook_id, webhook), time.monotonic()
                if changed or disabling or ending or time.monotonic() > stop_at:
                    left.append(attempt.id)  # released, unless the disable ended it
                    continue
                targeted = attempt.webhook_id is not None or attempt.manual
                if not webhook.enabled and not targeted:
                    result = sender.Result(ok=False, error="The webhook is disabled.")
                else:
                    result = _post(target, webhook.secret, attempt)
                failures, made = (0 if result.ok else failures + 1), made + 1
                outcomes.append((attempt.id, result))
    _write(outcomes)
    return Made(_release(left), [result.seconds for _, result in outcomes])


def due_attempts(webhook_id: int, limit: int) -> list[int]:
    """The webhook's due attempts that nobody makes, queued or not, oldest first, at
    most ``limit`` (through the index of its pending attempts by due time)."""
    now = utcnow()
    d = DELIVERIES.c
    found = list(
        db.session.scalars(
            select(d.id)
            .where(
                d.webhook_id == webhook_id,
                d.status == "pending",
                d.next_attempt_at <= now,
                or_(d.running_until.is_(None), d.running_until < now),
            )
            .order_by(d.next_attempt_at, d.id)
            .limit(limit)
        )
    )
    db.session.rollback()
    return found


def _changed(hook_id: int, claimed: Row[Any]) -> bool:
    """Whether the webhook is gone, or its address, secret or state is not what the
    batch read at its claim (a read of its row; no transaction is kept)."""
    now = db.session.execute(
        select(WEBHOOKS.c.url, WEBHOOKS.c.secret, WEBHOOKS.c.enabled).where(
            WEBHOOKS.c.id == hook_id
        )
    ).one_or_none()
    db.session.rollback()
    return now is None or tuple(now) != (claimed.url, claimed.secret, claimed.enabled)


def _post(target: sender.Target, secret: str, attempt: Row[Any]) -> sender.Result:
    """One attempt: its event signed and POSTed, in a span of the trace the event was
    written in (the receiver's ``traceparent``). Whatever goes wrong is a failed
    attempt (the sender's own errors already are), never a task that dies and leaves
    the batch pending, to be run again and die again."""
    with tracing.continuing(attempt.traceparent, "webhook delivery") as span:
        try:
            body = json.dumps(outbox.event_json(attempt), separators=(",", ":"))
            headers = signed_headers(secret, public_id(attempt.seq), body)
        except Exception as exc:
            log.exception("delivery %s: its event could not be signed", attempt.id)
            result = sender.Result(ok=False, error=sender.describe(exc))
        else:
            result = target.post(body.encode(), headers)
        tracing.answered(span, result.status, result.failure)
        return result


def _write(outcomes: list[tuple[int, sender.Result]]) -> None:
    """The outcomes in the order the attempts were made (a webhook's failures are
    counted, and reset by a success, as if written one by one)."""
    run: list[tuple[int, sender.Result]] = []
    for delivery_id, result in outcomes:
        if result.ok:
            run.append((delivery_id, result))
            continue
        _recorded(_succeeded, run)
        run = []
        _recorded(lambda failed: _finish(*failed[0]), [(delivery_id, result)])
    _recorded(_succeeded, run)


UNRECORDED = "The answer could not be recorded."


def _recorded(
    write: Callable[[list[tuple[int, sender.Result]]], None],
    outcomes: list[tuple[int, sender.Result]],
) -> None:
    """``write`` the outcomes. Should the database refuse them for what they hold (a
    receiver's text nobody foresaw), they are written again without the answers' text:
    the attempts still end, succeeded or failed as they were, rather than stay claimed
    and be sent again, and fail to be written again, for ever. A second failure (the
    database gone) is raised: the claim's expiry has them sent again."""
    if not outcomes:
        return
    try:
        write(outcomes)
    except Exception:
        db.session.rollback()
        log.exception("deliveries %s: outcomes not recorded as they were", [i for i, _ in outcomes])
        write([(i, replace(r, body=None, error=UNRECORDED)) for i, r in outcomes])


def _succeeded(run: list[tuple[int, sender.Result]]) -> None:
    """Successes: the attempts in one UPDATE (each its own answer and duration), their
    webhooks' failure counts in another; no row read first, as a success schedules
    nothing. An attempt finished meanwhile (a manual retry's twin, a disabled webhook)
    is left as it is."""
    if not run:
        return
    results = dict(run)

    deliveries = DELIVERIES.c

    def each(field: str) -> Any:
        return case({i: getattr(r, field) for i, r in results.items()}, value=deliveries.id)

    # The webhooks first (lock order, above), locked only where a count is reset.
    pending = select(deliveries.webhook_id).where(
        deliveries.id.in_(list(results)), deliveries.status == "pending"
    )
    db.session.execute(
        update(WEBHOOKS)
        .where(WEBHOOKS.c.id.in_(pending), WEBHOOKS.c.consecutive_failures != 0)
        # A count the webhook's JSON does not show: its updated_at stays.
        .values(consecutive_failures=0, updated_at=WEBHOOKS.c.updated_at)
    )
    done = db.session.execute(
        update(DELIVERIES)
        .where(deliveries.id.in_(list(results)), deliveries.status == "pending")
        .values(
            status="succeeded",
            response_status=each("status"),
            response_body=each("body"),
            # None but for a success whose answer could not be recorded (_recorded).
            error=each("error") if any(r.error for r in results.values()) else None,
            duration_ms=each("duration_ms"),
            running_until=None,
            next_attempt_at=None,
        )
        .returning(deliveries.id, deliveries.webhook_id)
    ).all()
    db.session.commit()
    for delivery_id, _webhook_id in done:
        metrics.webhook_delivered("delivered", results[delivery_id].seconds)


def _release(delivery_ids: list[int]) -> list[int]:
    """Claimed attempts not started: claimed no more, marked queued (the caller queues
    them; if that fails, the sweep does once the mark expires). Commits."""
    if not delivery_ids:
        return []
    queued = utcnow() + timedelta(seconds=current_app.config["WEBHOOK_REQUEUE_SECONDS"])
    released = list(
        db.session.scalars(
            update(Delivery)
            .where(Delivery.id.in_(delivery_ids), Delivery.status == "pending")
            .values(running_until=None, queued_until=queued)
            .returning(Delivery.id),
            execution_options={"synchronize_session": False},
        )
    )
    db.session.commit()
    return sorted(released)


def _retry_of(delivery: Delivery) -> tuple[int, float] | None:
    """The number and delay (before jitter) of the attempt that follows ``delivery``, a
    scheduled one that failed, or None once the schedule is spent. Manual retries take
    numbers too but leave the schedule as it was: the next attempt is numbered after
    every one so far, its delay set by the scheduled ones alone (``delivery`` the last
    of them). Few rows: one event's attempts to one webhook."""
    schedule = current_app.config["WEBHOOK_RETRY_SCHEDULE"]
    last, scheduled = db.session.execute(
        select(func.max(Delivery.attempt), func.count().filter(~Delivery.manual)).where(
            Delivery.webhook_id == delivery.webhook_id, Delivery.event_id == delivery.event_id
        )
    ).one()
    if scheduled > len(schedule):
        return None
    return last + 1, schedule[scheduled - 1]


def _finish(delivery_id: int, result: sender.Result) -> None:
    """A failed attempt: written, its retry scheduled (or not), its webhook's failures
    counted and the webhook disabled after too many."""
    config = current_app.config
    # Its webhook first (lock order, above), as the count's UPDATE below locks it.
    db.session.execute(
        select(WEBHOOKS.c.id)
        .where(
            WEBHOOKS.c.id
            == select(DELIVERIES.c.webhook_id)
            .where(DELIVERIES.c.id == delivery_id)
            .scalar_subquery()
        )
        .with_for_update(key_share=True)
    )
    delivery = db.session.get(Delivery, delivery_id, with_for_update=True, populate_existing=True)
    if delivery is None or delivery.status != "pending":
        db.session.commit()
        return
    now = utcnow()
    delivery.status = "failed"
    delivery.response_status = result.status
    delivery.response_body = result.body
    delivery.error = result.error[:500] if result.error else None
    delivery.duration_ms = result.duration_ms
    delivery.running_until = None
    delivery.next_attempt_at = None
    failures, enabled = db.session.execute(
        update(Webhook)
        .where(Webhook.id == delivery.webhook_id)
        .values(
            consecutive_failures=Webhook.consecutive_failures + 1, updated_at=Webhook.updated_at
        )
        .returning(Webhook.consecutive_failures, Webhook.enabled),
        execution_options={"synchronize_session": False},
    ).one()
    retry = _retry_of(delivery) if enabled and not delivery.manual else None
    if retry is not None:
        number, delay = retry
        jitter = config["WEBHOOK_RETRY_JITTER"]
        delay *= random.uniform(1 - jitter, 1 + jitter)  # noqa: S311
        delivery.next_attempt_at = now + timedelta(seconds=delay)
        db.session.add(
            Delivery(
                webhook_id=delivery.webhook_id,
                event_id=delivery.event_id,
                attempt=number,
                status="pending",
                manual=False,
                next_attempt_at=delivery.next_attempt_at,
            )
        )
    # failed: another attempt is scheduled; gave_up: this was the event's last one.
    outcome = "failed" if delivery.next_attempt_at is not None else "gave_up"
    if enabled and failures >= config["WEBHOOK_DISABLE_AFTER"]:
        disable(db.session.get_one(Webhook, delivery.webhook_id, populate_existing=True))
        outcome = "gave_up"  # the retry just scheduled ended as failed with it
    db.session.commit()
    metrics.webhook_delivered(outcome, result.seconds)


def disable(webhook: Webhook) -> None:
    """Turn ``webhook`` off after too many failed attempts: its pending attempts end
    as failed, and a ``webhook.disabled`` event tells its owner. Does not commit."""
    webhook.enabled = False
    changes = {"enabled": [True, False]}
    audit.record(
        "webhook.disabled",
        "webhook",
        webhook.id,
        changes,
        store_id=webhook.store_id,
        source=audit.SYSTEM,
    )
    db.session.execute(
        update(Delivery)
        .where(Delivery.webhook_id == webhook.id, Delivery.status == "pending")
        .values(
            status="failed",
            error="The webhook was disabled.",
            next_attempt_at=None,
            running_until=None,  # a claimed one is not running any more either
        ),
        execution_options={"synchronize_session": False},
    )
    db.session.flush()
    outbox.record(
        "webhook.disabled",
        store_id=None,
        owner_id=webhook.owner_id,
        obj=webhook,
        actor=dict(outbox.SYSTEM),
    )


def send_test(webhook: Webhook) -> Delivery:
    """A ``webhook.test`` event to ``webhook`` and its attempt, written together (the
    caller answers this attempt, not one it would have to find). The attempt is not
    due until the relay has given the event its position: the relay then makes it
    due and queues it, and makes no other for the event (core/events/relay.py).
    Does not commit."""
    event_id = outbox.record_now(
        "webhook.test",
        store_id=None,
        owner_id=webhook.owner_id,
        obj=webhook,
        webhook_id=webhook.id,
    )
    delivery = Delivery(
        webhook_id=webhook.id,
        event_id=event_id,
        attempt=1,
        status="pending",
        manual=False,  # retried on the schedule, as the relay's attempts are
        next_attempt_at=None,
    )
    db.session.add(delivery)
    return delivery


def send_now(webhook: Webhook, event: Event, *, attempt: int = 1) -> Delivery:
    """A manual attempt of ``event`` to ``webhook`` (test, retry), due now; does not
    commit (queue it after the commit with ``tasks.queue_deliveries``)."""
    now = utcnow()
    queued = now + timedelta(seconds=current_app.config["WEBHOOK_REQUEUE_SECONDS"])
    delivery = Delivery(
        webhook_id=webhook.id,
        event_id=event.id,
        attempt=attempt,
        status="pending",
        manual=True,
        next_attempt_at=now,
        queued_until=queued,
    )
    db.session.add(delivery)
    return delivery
