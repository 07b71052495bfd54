"""One delivery attempt, start to end (contract §11): claim it, sign and POST the
event, write the outcome, and schedule the next attempt or give up.

An attempt is claimed for the timeout and a margin (``running_until``): a worker
killed mid-way leaves it claimed until then, after which the sweep queues it again,
so every event is delivered at least once; a task delivered twice finds the attempt
claimed or finished and does nothing.
"""

from __future__ import annotations

import base64
import json
import os
import random
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, select, update
from standardwebhooks.webhooks import Webhook as Signer

from core.events import outbox, sender
from core.web import metrics
from db import db
from models import Delivery, Event, Webhook
from models.types import utcnow

LEASE_MARGIN = 5  # seconds a claim outlasts the timeout


def new_secret() -> str:
    """``whsec_`` + standard base64 of 24 random bytes (contract §16)."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def signed_headers(secret: str, event_id: str, body: str) -> dict[str, str]:
    now = utcnow()
    return {
        "Content-Type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Signer(secret).sign(event_id, now, body),
    }


def _claim(delivery_id: int) -> tuple[int, int, bool] | None:
    """Claim the attempt: its webhook's id, its event's id and whether it is manual,
    or None when it is not due or someone else makes it. Does not commit."""
    config = current_app.config
    now = utcnow()
    lease = now + timedelta(seconds=config["WEBHOOK_TIMEOUT_SECONDS"] + LEASE_MARGIN)
    claimed = db.session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status == "pending",
            Delivery.next_attempt_at <= now,
            or_(Delivery.running_until.is_(None), Delivery.running_until < now),
        )
        .values(running_until=lease)
        .returning(Delivery.webhook_id, Delivery.event_id, Delivery.manual),
        execution_options={"synchronize_session": False},
    ).one_or_none()
    return None if claimed is None else (claimed[0], claimed[1], claimed[2])


def attempt(delivery_id: int) -> None:
    """Make the attempt ``delivery_id`` if it is due and nobody is making it.

    Few round trips to the database, as they bound a worker's deliveries per second:
    the claim and the reads of the webhook and event in one transaction, committed
    before the POST (the claim is seen by every other worker, and no transaction nor
    connection is held during it); a success written in two UPDATEs."""
    claimed = _claim(delivery_id)
    if claimed is None:
        db.session.commit()
        return
    webhook_id, event_id, manual = claimed
    webhook, event = db.session.execute(
        select(Webhook, Event)
        .join_from(Webhook, Delivery, Delivery.webhook_id == Webhook.id)
        .join(Event, Event.id == Delivery.event_id)
        .where(Delivery.id == delivery_id, Webhook.id == webhook_id, Event.id == event_id)
    ).one()
    db.session.commit()  # the claim; no transaction (nor connection) held during the POST
    targeted = event.webhook_id is not None or manual
    if not webhook.enabled and not targeted:
        _finish(delivery_id, sender.Result(ok=False, error="The webhook is disabled."))
        return
    body = json.dumps(outbox.event_json(event), separators=(",", ":"))
    config = current_app.config
    result = sender.post(
        webhook.url,
        body.encode(),
        signed_headers(webhook.secret, event.public_id, body),
        timeout=config["WEBHOOK_TIMEOUT_SECONDS"],
        allow_http=config["WEBHOOK_ALLOW_HTTP"],
        allow_private=config["WEBHOOK_ALLOW_PRIVATE_NETWORKS"],
    )
    if result.ok:
        _succeeded(delivery_id, result)
    else:
        _finish(delivery_id, result)


def _succeeded(delivery_id: int, result: sender.Result) -> None:
    """A success: the attempt and its webhook's failure count, one UPDATE each (no
    row to read first: a success schedules nothing). An attempt finished meanwhile
    (a manual retry's twin, a disabled webhook) is left as it is."""
    webhook_id = db.session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == "pending")
        .values(
            status="succeeded",
            response_status=result.status,
            response_body=result.body,
            error=None,
            duration_ms=result.duration_ms,
            running_until=None,
            next_attempt_at=None,
        )
        .returning(Delivery.webhook_id),
        execution_options={"synchronize_session": False},
    ).scalar_one_or_none()
    if webhook_id is not None:
        db.session.execute(
            update(Webhook)
            .where(Webhook.id == webhook_id, Webhook.consecutive_failures != 0)
            .values(consecutive_failures=0),
            execution_options={"synchronize_session": False},
        )
    db.session.commit()
    if webhook_id is not None:
        metrics.webhook_delivered("delivered", result.duration_ms / 1000)


def _finish(delivery_id: int, result: sender.Result) -> None:
    """A failed attempt: written, its retry scheduled (or not), its webhook's failures
    counted and the webhook disabled after too many."""
    config = current_app.config
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
        .values(consecutive_failures=Webhook.consecutive_failures + 1)
        .returning(Webhook.consecutive_failures, Webhook.enabled),
        execution_options={"synchronize_session": False},
    ).one()
    schedule = config["WEBHOOK_RETRY_SCHEDULE"]
    if enabled and not delivery.manual and delivery.attempt <= len(schedule):
        jitter = config["WEBHOOK_RETRY_JITTER"]
        delay = schedule[delivery.attempt - 1] * random.uniform(1 - jitter, 1 + jitter)  # noqa: S311
        delivery.next_attempt_at = now + timedelta(seconds=delay)
        db.session.add(
            Delivery(
                webhook_id=delivery.webhook_id,
                event_id=delivery.event_id,
                attempt=delivery.attempt + 1,
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
    metrics.webhook_delivered(outcome, result.duration_ms / 1000)


def disable(webhook: Webhook) -> None:
    """Turn ``webhook`` off after too many failed attempts: its pending attempts end
    as failed, and a ``webhook.disabled`` event tells its owner. Does not commit."""
    webhook.enabled = False
    db.session.execute(
        update(Delivery)
        .where(Delivery.webhook_id == webhook.id, Delivery.status == "pending")
        .values(status="failed", error="The webhook was disabled.", next_attempt_at=None),
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
