"""The transactional outbox: ``record`` adds an event to the current transaction
(``db.session``), so it commits with the change it tells about, or not at all.

Nothing here commits. After a commit that wrote events, the relay is queued
(``core/events/relay.py``: it gives committed events their position, then queues their
deliveries); the periodic sweep does the same for anything that queueing missed (a
broker down at commit time, a command line run with no worker).

An event of a store commits only while its store lives: the first event of a store
in a transaction holds the store's row (``hold_stores``), so that no change of a store
commits after its ``store.deleted``.

``data.object`` is the resource as its GET returns it. Core modules cannot use the
output schemas (schemas.py sits above them), so a model object is turned into JSON by
the serializer the resource layer registered for its table (``register_serializer``);
a dict is taken as it is.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import g, has_app_context, has_request_context
from sqlalchemy import Row, insert, select
from sqlalchemy import event as sa_event

from core.web import metrics, tracing
from core.web.errors import abort
from db import db
from models import Event, Store
from models.event import public_id
from models.types import utcnow

EVENT_TYPES = (
    "store.created",
    "store.updated",
    "store.deleted",
    "item.created",
    "item.updated",
    "item.deleted",
    "tag.created",
    "tag.updated",
    "tag.deleted",
    "stock.moved",
    "stock.low",
    "stock.out",
    "stock.back_in",
    "job.succeeded",
    "job.failed",
    "webhook.disabled",
    "webhook.test",
)
SYSTEM = {"type": "system", "id": None}
PENDING = "events_pending"  # db.session.info: this transaction wrote events
BUFFER = "events_buffer"  # db.session.info: rows recorded, inserted before commit
WRITTEN = "events_written"  # db.session.info: types of the rows inserted, counted at commit
HELD = "events_stores_held"  # db.session.info: stores held until the commit (hold_stores)

_serializers: dict[str, Callable[[Any], dict[str, Any]]] = {}


def register_serializer(table: str, dump: Callable[[Any], dict[str, Any]]) -> None:
    """How an object of ``table`` is written as ``data.object`` (its GET's JSON)."""
    _serializers[table] = dump


def as_json(obj: Any) -> dict[str, Any]:
    """``obj`` as JSON: a dict as it is, a model object by its table's serializer."""
    if isinstance(obj, dict):
        return obj
    table = getattr(obj, "__tablename__", None)
    if table not in _serializers:
        raise TypeError(f"No event serializer registered for {type(obj).__name__}.")
    dumped = _serializers[table](obj)
    # Whatever the schema dumps (Decimal, datetime) becomes plain JSON values.
    return dict(json.loads(json.dumps(dumped, default=str)))


def current_actor() -> dict[str, Any]:
    """Who made the change: ``g.event_actor`` if the request set one (an API key sets
    ``{"type": "api_key", "id": key_id}``), else the signed-in user, else the system."""
    if has_request_context() or has_app_context():
        actor = g.get("event_actor")
        if actor is not None:
            return dict(actor)
        if g.get("user_id") is not None:
            return {"type": "user", "id": g.user_id}
    return dict(SYSTEM)


def current_request_id() -> str | None:
    """The request the change answers: this one, or the one a job works for."""
    if not has_app_context():
        return None
    asked: str | None = g.get("event_request_id")
    if asked is not None:
        return asked
    return g.get("request_id") if has_request_context() else None


@contextmanager
def acting_for(actor: dict[str, Any], request_id: str | None) -> Iterator[None]:
    """Events recorded meanwhile name ``actor`` and ``request_id``: those of the
    request a job works for (an import's changes are its caller's, §10), not the
    worker's system."""
    saved = g.get("event_actor"), g.get("event_request_id")
    g.event_actor, g.event_request_id = actor, request_id
    try:
        yield
    finally:
        g.event_actor, g.event_request_id = saved


def record(
    type: str,
    *,
    store_id: int | None,
    obj: Any,
    previous: dict[str, Any] | None = None,
    owner_id: int | None = None,
    actor: dict[str, Any] | None = None,
    request_id: str | None = None,
    webhook_id: int | None = None,
) -> None:
    """Add an event of ``type`` to the current transaction.

    ``obj``: a model object (dumped by its table's serializer) or a dict (taken as it
    is; ``{"id": ...}`` for a deletion). ``previous``: the changed fields' old values
    (updates). ``owner_id``: who may read it and whose webhooks get it; looked up from
    the store when left out and ``store_id`` is given (``job.*``/``webhook.*`` events,
    with ``store_id=None``, must name it). ``actor``/``request_id``: taken from the
    request (a task outside one writes the system actor) unless given.
    """
    if type not in EVENT_TYPES:
        raise ValueError(f"Unknown event type {type!r}.")
    if store_id is not None and type != "store.deleted":  # the store's last, as it goes
        hold_stores({store_id})
    if owner_id is None and store_id is not None:
        owner_id = db.session.scalar(select(Store.owner_id).where(Store.id == store_id))
    actor = actor if actor is not None else current_actor()
    data: dict[str, Any] = {"object": as_json(obj)}
    if previous is not None:
        data["previous"] = previous
    row = {
        "type": type,
        "store_id": store_id,
        "owner_id": owner_id,
        "webhook_id": webhook_id,
        "actor_type": actor["type"],
        "actor_id": actor.get("id"),
        "request_id": request_id if request_id is not None else current_request_id(),
        "traceparent": tracing.current_traceparent(),
        "data": data,
        "created_at": utcnow(),
    }
    db.session.connection()  # a transaction is begun: its commit writes the rows
    db.session.info.setdefault(BUFFER, []).append(row)
    db.session.info[PENDING] = True


def record_now(type: str, **fields: Any) -> int:
    """``record``, the event inserted at once: returns its id, for a row that the same
    transaction writes with it (a ``webhook.test``'s own attempt)."""
    write_pending()  # the transaction's earlier events first, as at commit
    record(type, **fields)
    [row] = db.session.info.pop(BUFFER)
    event_id = db.session.execute(insert(Event).returning(Event.id), row).scalar_one()
    db.session.info.setdefault(WRITTEN, []).append(row["type"])
    return int(event_id)


def hold_stores(store_ids: set[int]) -> None:
    """404 unless each store is there and not being deleted; each is then held until
    the transaction ends (FOR KEY SHARE, which writers share with one another and with
    a store's own changes). A deletion's mark (core/catalog/stores.py
    ``mark_deleting``) locks the row FOR UPDATE: it waits for the changes that held
    the store first, and a change that asks after it finds the store gone and rolls
    back (before, it committed after ``store.deleted``, its events after the store's
    last, or failed re-reading its item: a 500)."""
    held: set[int] = db.session.info.setdefault(HELD, set())
    wanted = store_ids - held
    if not wanted:
        return
    stores = Store.__table__.c  # the table: the ORM's hiding of deleted stores aside
    found = set(
        db.session.scalars(
            select(stores.id)
            .where(stores.id.in_(wanted), stores.deleted_at.is_(None))
            .with_for_update(read=True, key_share=True)
        )
    )
    if found != wanted:
        abort(404, message=f"Store {min(wanted - found)} not found.")
    held |= wanted


def recorded_in_bulk() -> None:
    """Events were inserted by a statement of the caller's own (the importer's INSERT
    ... SELECT, core/catalog/csv_copy.py), in the current transaction: its commit
    queues the relay as ``record``'s do."""
    db.session.connection()
    db.session.info[PENDING] = True


def write_pending() -> None:
    """Insert the events recorded so far in this transaction: one statement for all of
    them (a batch of 100 changes is one INSERT, not 100). Runs before every commit."""
    _insert(db.session, db.session.info.pop(BUFFER, None))


def _insert(session: Any, rows: list[dict[str, Any]] | None) -> None:
    if rows:
        session.execute(insert(Event), rows)
        session.info.setdefault(WRITTEN, []).extend(row["type"] for row in rows)


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``previous`` of an update: the old value of every field that changed (not the
    ``updated_at`` that every change moves)."""
    return {
        key: value
        for key, value in before.items()
        if key != "updated_at" and after.get(key) != value
    }


def event_json(event: Event | Row[Any]) -> dict[str, Any]:
    """The event as GET /events/{id} answers it and as a webhook receives it (from the
    model, or from a row of its columns)."""
    return {
        "id": public_id(event.seq),
        "type": event.type,
        "created_at": event.created_at.isoformat(),
        "store_id": event.store_id,
        "actor": {"type": event.actor_type, "id": event.actor_id},
        "request_id": event.request_id,
        "data": event.data,
    }


# --- after commit: queue the relay ---------------------------------------------------

_after_commit: list[Callable[[], None]] = []


def on_commit_with_events(callback: Callable[[], None]) -> None:
    """Run ``callback`` after every commit that wrote events (the relay registers)."""
    if callback not in _after_commit:
        _after_commit.append(callback)


@sa_event.listens_for(db.session, "before_commit")
def _write_before_commit(session: Any) -> None:
    _insert(session, session.info.pop(BUFFER, None))


@sa_event.listens_for(db.session, "after_commit")
def _events_committed(session: Any) -> None:
    session.info.pop(HELD, None)  # the commit let go of them
    # Counted once committed: a rolled-back change wrote no event, and counts none.
    for type, count in Counter(session.info.pop(WRITTEN, ())).items():
        metrics.event_written(type, count)
    if session.info.pop(PENDING, False):
        for callback in _after_commit:
            callback()


@sa_event.listens_for(db.session, "after_rollback")
def _events_rolled_back(session: Any) -> None:
    session.info.pop(PENDING, None)
    session.info.pop(BUFFER, None)
    session.info.pop(HELD, None)
    session.info.pop(WRITTEN, None)
