"""The relay: gives committed events their position, then fans them out to the
webhooks that want them (one pending delivery each).

One sequencer at a time: it holds the counter row's lock while it numbers events,
and reads them only once it holds it, so every event it sees has committed, and an
event committed later gets a later position. GET /events lists by position, so a
poller that resumes after its last position never misses one (contract §16).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import Row, delete, func, insert, or_, select, true, update
from sqlalchemy.exc import IntegrityError

from core.events.tables import COUNTER, DELIVERIES, EVENTS, WEBHOOKS
from db import db
from models import Delivery, Event, EventCounter, User, Webhook
from models.types import utcnow

BATCH = 500  # events numbered per transaction

# What the fan-out needs of an event (its data stays in the database).
_ROUTING = (
    EVENTS.c.id,
    EVENTS.c.type,
    EVENTS.c.owner_id,
    EVENTS.c.store_id,
    EVENTS.c.webhook_id,
)


def _lock_counter() -> int:
    """The counter's value, its row locked until commit (made if missing: an emptied
    test database)."""
    counter = COUNTER.c
    statement = (
        update(COUNTER).where(counter.id == 1).values(last=counter.last).returning(counter.last)
    )
    last = db.session.execute(statement).scalar_one_or_none()
    if last is not None:
        return int(last)
    highest = db.session.scalar(select(db.func.max(Event.seq))) or 0
    try:
        with db.session.begin_nested():
            db.session.execute(insert(EventCounter).values(id=1, last=highest))
    except IntegrityError:
        pass  # another sequencer made it
    return int(db.session.execute(statement).scalar_one())


def matches(webhook: Webhook, event: Event | Row[Any], *, admin: bool = False) -> bool:
    """Whether ``webhook`` receives ``event``: a webhook receives only what its owner
    may read (the event's owner; an ``admin`` owner reads every store's), a store-bound
    one only its store's, so a store given to another owner takes its future events
    away from the old owner's webhooks."""
    if event.webhook_id is not None:
        return event.webhook_id == webhook.id
    if not webhook.enabled:
        return False
    if webhook.store_id is not None:
        if webhook.store_id != event.store_id:
            return False
        if webhook.owner_id != event.owner_id and not admin:
            return False
    elif webhook.owner_id != event.owner_id:
        return False
    return "*" in webhook.events or event.type in webhook.events


def _fan_out(events: list[Row[Any]]) -> list[dict[str, Any]]:
    if not events:
        return []
    owners = {e.owner_id for e in events if e.owner_id is not None}
    stores = {e.store_id for e in events if e.store_id is not None}
    targeted = {e.webhook_id for e in events if e.webhook_id is not None}
    # FOR KEY SHARE until commit: a webhook deleted meanwhile (its owner, a cascade)
    # waits for the deliveries made here, then takes them along, instead of failing
    # their INSERT and with it the numbering of every owner's events in the batch.
    # An UPDATE of a webhook's other columns (a failure counted) does not wait on it.
    found = db.session.execute(
        select(Webhook, (User.role == "admin").label("admin"))
        .join(User, User.id == Webhook.owner_id)
        .where(
            or_(
                Webhook.enabled
                & or_(
                    Webhook.owner_id.in_(owners),
                    Webhook.store_id.in_(stores) & (User.role == "admin"),  # an admin's, bound
                ),
                Webhook.id.in_(targeted),
            )
        )
        .with_for_update(of=Webhook, read=True, key_share=True)
    ).all()
    if not found:
        return []
    now = utcnow()
    queued = now + timedelta(seconds=current_app.config["WEBHOOK_REQUEUE_SECONDS"])
    return [
        {
            "webhook_id": hook.id,
            "event_id": event.id,
            "attempt": 1,
            "status": "pending",
            "manual": False,
            "next_attempt_at": now,
            "queued_until": queued,
            "created_at": now,
        }
        for event in events
        for hook, admin in found
        if matches(hook, event, admin=admin)
    ]


def _made_with_their_events(events: list[Row[Any]]) -> list[tuple[int, int, int]]:
    """The attempts written with their targeted event, in its transaction (a
    ``webhook.test``'s, core/events/delivery.py ``send_test``), not due until the event
    has its position: due now and queued with the fan-out's. Returns (webhook id,
    delivery id, event id) of each: those events get no other delivery."""
    targeted = [event.id for event in events if event.webhook_id is not None]
    if not targeted:
        return []
    now = utcnow()
    queued = now + timedelta(seconds=current_app.config["WEBHOOK_REQUEUE_SECONDS"])
    deliveries = DELIVERIES.c
    return [
        (row[0], row[1], row[2])
        for row in db.session.execute(
            update(DELIVERIES)
            .where(
                deliveries.event_id.in_(targeted),
                deliveries.status == "pending",
                deliveries.next_attempt_at.is_(None),
            )
            .values(next_attempt_at=now, queued_until=queued)
            .returning(deliveries.webhook_id, deliveries.id, deliveries.event_id)
        )
    ]


def _number(last: int) -> list[Row[Any]]:
    """Give the next ``BATCH`` unnumbered events, in id order, the positions after
    ``last``: one UPDATE ... FROM, which returns what the fan-out needs, by id.
    Core, not the ORM: no event is loaded as an object, its JSON is never read."""
    unnumbered = (
        select(EVENTS.c.id, func.row_number().over(order_by=EVENTS.c.id).label("n"))
        .where(EVENTS.c.seq.is_(None))
        .order_by(EVENTS.c.id)
        .limit(BATCH)
        .subquery()
    )
    statement = (
        update(EVENTS)
        .where(EVENTS.c.id == unnumbered.c.id)
        .values(seq=last + unnumbered.c.n)
        .returning(*_ROUTING)
    )
    return sorted(db.session.execute(statement).all(), key=lambda event: event.id)


def sequence() -> tuple[int, list[tuple[int, int]]]:
    """Number the next committed events and make their deliveries; commits. Returns
    how many were numbered and the deliveries to queue: (webhook id, delivery id)."""
    last = _lock_counter()
    events = _number(last)
    if events:
        db.session.execute(update(COUNTER).where(COUNTER.c.id == 1).values(last=last + len(events)))
    waiting = _made_with_their_events(events)
    made = [(webhook_id, delivery_id) for webhook_id, delivery_id, _event_id in waiting]
    have = {event_id for _webhook_id, _delivery_id, event_id in waiting}
    rows = [row for row in _fan_out(events) if row["event_id"] not in have]
    if rows:
        made += [
            (row[0], row[1])
            for row in db.session.execute(
                insert(DELIVERIES).returning(
                    DELIVERIES.c.webhook_id, DELIVERIES.c.id, sort_by_parameter_order=True
                ),
                rows,
            )
        ]
    db.session.commit()
    return len(events), made


SWEEP_PER_WEBHOOK = 200  # due attempts of one webhook a sweep takes, at most


def due_deliveries(
    limit: int = 1000, per_webhook: int = SWEEP_PER_WEBHOOK
) -> list[tuple[int, int]]:
    """Attempts due and neither queued nor running (a lost message, a dead worker, a
    retry whose time has come): marked queued again; commits. Returns (webhook id,
    delivery id) of each: each webhook's oldest, ``per_webhook`` at most, taken in
    turns (every webhook's oldest, then every second oldest, ...), so that one
    webhook's backlog (a receiver that hangs, its attempts due again every
    WEBHOOK_REQUEUE_SECONDS) never keeps another's retry out of the sweep."""
    now = utcnow()
    d = DELIVERIES.c
    waiting = (
        d.status == "pending",
        d.next_attempt_at <= now,
        or_(d.queued_until.is_(None), d.queued_until < now),
        or_(d.running_until.is_(None), d.running_until < now),
    )
    if db.session.get_bind().dialect.name == "postgresql":
        # Each webhook's oldest through its own probe of the index (webhook_id,
        # next_attempt_at) of pending attempts; rows another sweep holds are skipped.
        each = (
            select(d.id, d.webhook_id, d.next_attempt_at)
            .where(d.webhook_id == WEBHOOKS.c.id, *waiting)
            .order_by(d.next_attempt_at)
            .limit(per_webhook)
            .with_for_update(skip_locked=True)
            .lateral("due")
        )
        found = select(each).select_from(WEBHOOKS).join(each, true()).subquery()
    else:  # SQLite (one writer, development's numbers): every due attempt
        found = select(d.id, d.webhook_id, d.next_attempt_at).where(*waiting).subquery()
    turn = func.row_number().over(partition_by=found.c.webhook_id, order_by=found.c.next_attempt_at)
    ranked = select(found, turn.label("turn")).subquery()
    query = (
        select(ranked.c.webhook_id, ranked.c.id)
        .where(ranked.c.turn <= per_webhook)
        .order_by(ranked.c.turn, ranked.c.next_attempt_at)
        .limit(limit)
    )
    due = [(row[0], row[1]) for row in db.session.execute(query)]
    ids = [delivery_id for _webhook_id, delivery_id in due]
    if ids:
        queued = now + timedelta(seconds=current_app.config["WEBHOOK_REQUEUE_SECONDS"])
        db.session.execute(
            update(Delivery).where(Delivery.id.in_(ids)).values(queued_until=queued),
            execution_options={"synchronize_session": False},
        )
    db.session.commit()
    return due


def purge(batch: int, days: int, rounds: int = 20) -> int:
    """Delete events older than ``days`` (and their delivery log), ``batch`` rows per
    statement, at most ``rounds`` statements a run; commits each."""
    cutoff = utcnow() - timedelta(days=days)
    total = 0
    for _ in range(rounds):
        oldest = select(Event.id).where(Event.created_at < cutoff).order_by(Event.id).limit(batch)
        result = db.session.execute(
            delete(Event).where(Event.id.in_(oldest.scalar_subquery())),
            execution_options={"synchronize_session": False},
        )
        db.session.commit()
        count = int(getattr(result, "rowcount", 0) or 0)
        total += count
        if count < batch:
            break
    return total
