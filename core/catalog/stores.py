"""Store-wide work of the catalog: deleting a store of any size, and hiding a store
whose deletion is under way.

A store above ``STORE_DELETE_SYNC_MAX`` items is deleted by a job (§12): the request
marks it (``deleted_at``) and from that commit on the store, its items and its tags
are gone for every read and write, while a worker deletes the rows in batches. The
mark is applied in two places, once each:

- every ORM statement (``session.get``, ``select(Store)``, lookups by id, the batch
  and stock writes) gets criteria from ``_hide_deleting`` below, SQLAlchemy's
  documented global-criteria hook;
- the lists read as plain rows (item_search, the single item read, the CSV export)
  add ``live_items()`` themselves, as they bypass the ORM.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, delete, event, func, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from core.auth import audit
from core.events.catalog import store_deleted
from core.events.outbox import as_json
from core.events.tables import DELIVERIES, EVENTS, WEBHOOKS
from core.web.errors import abort
from db import db
from models import ApiKey, Item, Store, Tag, Webhook
from models.types import utcnow

# Stores being deleted: few at any time, read through a partial index; PostgreSQL
# hashes them once per statement (a hashed NOT IN), so a list keeps its index order.
# (The table, not the entity: the criteria below, which hide these very stores from
# the ORM, must not apply to it.)
_stores = Store.__table__.c
DELETING_STORES = select(_stores.id).where(_stores.deleted_at.is_not(None))


def live_items(store_id: Any = Item.store_id) -> ColumnElement[bool]:
    """Items (or rows with a store id) of stores that are not being deleted."""
    return cast(ColumnElement[bool], store_id.not_in(DELETING_STORES.scalar_subquery()))


# How long a deletion's mark waits for the store's changes under way (below the
# requests' statement timeout, DB_STATEMENT_TIMEOUT_MS).
BUSY_SECONDS = 3
LOCK_NOT_AVAILABLE = "55P03"
SEE_DELETING = {"include_deleting": True}  # an ORM statement that sees them all


@event.listens_for(Session, "do_orm_execute")
def _hide_deleting(state: ORMExecuteState) -> None:
    if (
        not state.is_select
        or state.is_column_load
        or state.is_relationship_load
        or state.execution_options.get("include_deleting", False)
    ):
        return
    state.statement = state.statement.options(
        with_loader_criteria(Store, Store.deleted_at.is_(None), include_aliases=True),
        with_loader_criteria(Item, live_items(Item.store_id), include_aliases=True),
        with_loader_criteria(Tag, live_items(Tag.store_id), include_aliases=True),
    )


def count_items(store_id: int, limit: int | None = None) -> int:
    """The store's items; with ``limit``, counted up to ``limit`` + 1 only (enough to
    choose between a deletion in the request and a job, in a bounded time)."""
    items = select(Item.id).where(Item.store_id == store_id)
    if limit is not None:
        items = items.limit(limit + 1)
    count = select(func.count()).select_from(items.subquery())
    # The store may be marked already (a deletion job counting what it will delete).
    return int(db.session.execute(count, execution_options=SEE_DELETING).scalar_one())


def mark_deleting(store: Store) -> None:
    """From the commit of the caller's transaction, the store is gone for readers;
    its one ``store.deleted`` event commits with it (the job deletes the rows later).
    The row is locked FOR UPDATE first: the changes of the store under way (each holds
    it FOR KEY SHARE, core/events/outbox.py ``hold_stores``) commit before the mark,
    and those that come after it find the store gone."""
    _lock_for_deletion(store.id)
    store.deleted_at = utcnow()
    store_deleted(store.id, store.owner_id)
    _end_keys(store.id)


def _lock_for_deletion(store_id: int) -> None:
    """The store's row FOR UPDATE, waiting at most BUSY_SECONDS for the changes under
    way (an import holds its store for its whole run): then 409 ``store_busy``."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text(f"SET LOCAL lock_timeout = '{BUSY_SECONDS}s'"))
    try:
        db.session.execute(select(_stores.id).where(_stores.id == store_id).with_for_update())
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        db.session.rollback()
        abort(
            409,
            message=f"Store {store_id} has a change under way (an import?): "
            "try again once it has finished.",
            error="store_busy",
        )


def _end_keys(store_id: int) -> None:
    """The API keys bound to a store end with it, at once (a marked store's row stays a
    while), each live one with its ``api_key.revoked`` entry: the audit log keeps what
    the cascade would take silently. (Their rows go, so such a key then answers
    ``invalid_token``.)"""
    ended = db.session.execute(
        delete(ApiKey).where(ApiKey.store_id == store_id).returning(ApiKey.id, ApiKey.revoked_at),
        execution_options={"synchronize_session": False},
    ).all()
    now = utcnow().isoformat()
    for key_id, revoked_at in ended:
        if revoked_at is None:
            changes = {"revoked_at": [None, now]}
            audit.record("api_key.revoked", "api_key", key_id, changes, store_id=store_id)


def delete_store(
    store_id: int,
    batch: int,
    on_batch: Callable[[int], bool] | None = None,
    *,
    pause: float = 0,
    also: Callable[[], None] | None = None,
    at_once: bool = False,
) -> bool:
    """A store and everything in it, whatever its size. Its items go in batches, each
    one short statement committed on its own (their links and any other rows of an
    item follow by ON DELETE CASCADE): no statement nears the statement timeout and
    no lock is held for long, so other stores' reads and writes go on meanwhile. Then
    the store, whose cascade takes its tags.

    Resumable: cut short (a timeout, a crash), the store is still there with fewer
    items, and calling this again finishes the work. ``on_batch(deleted)`` runs after
    each batch, inside its transaction (a job's progress commits with the rows); when
    it answers False the work stops there and this returns False. ``pause`` (seconds)
    after each batch leaves the disk to other work. ``also`` adds what must be written
    with the store's deletion (its audit entry).

    ``at_once`` (a small store, in its request): all in the caller's transaction, the
    store locked first as a mark locks it (its changes under way commit first, later
    ones find it gone; 409 ``store_busy`` after a few seconds, nothing done), so that no
    change of the store commits after its ``store.deleted`` and no item is left."""
    if at_once:
        _lock_for_deletion(store_id)
    else:
        db.session.commit()  # the checks are done: from here each batch holds its own locks
    first_items = select(Item.id).where(Item.store_id == store_id).order_by(Item.id).limit(batch)
    while True:
        deleted = cast(
            CursorResult[Any],
            db.session.execute(
                delete(Item).where(Item.id.in_(first_items.scalar_subquery())),
                execution_options={"synchronize_session": False},
            ),
        ).rowcount
        go_on = on_batch(deleted) if on_batch is not None else True
        if not at_once:
            db.session.commit()
        if not go_on:
            return False
        if deleted < batch:
            break
        if pause:
            time.sleep(pause)
    found = db.session.execute(
        select(Store.deleted_at, Store.owner_id).where(Store.id == store_id),
        execution_options=SEE_DELETING,
    ).one_or_none()
    if found is None:  # marked, emptied and forgotten already (forget_deleted_stores)
        db.session.commit()
        return True
    if found.deleted_at is None:  # a store deleted at once: its one event commits with it
        store_deleted(store_id, found.owner_id)
    bound = select(Webhook.id).where(Webhook.store_id == store_id).exists()
    if db.session.scalar(select(bound)):
        # Its webhooks (ON DELETE CASCADE) must outlive it until they are told: the row
        # stays, marked and empty, and forget_deleted_stores deletes it after that.
        db.session.execute(
            update(Store)
            .where(Store.id == store_id, Store.deleted_at.is_(None))
            .values(deleted_at=utcnow()),
            execution_options={"synchronize_session": False},
        )
        _end_keys(store_id)
    else:
        _end_keys(store_id)
        db.session.execute(delete(Store).where(Store.id == store_id))
    if also is not None:
        also()
    db.session.commit()
    return True


def forget_deleted_stores(owner_id: int | None = None) -> int:
    """Delete the rows of deleted, emptied stores whose webhooks have been told: no
    event of the store waits for the relay and no attempt of its webhooks is pending
    (delivered or given up). The cascade takes those webhooks, their log and the
    store's tags; each webhook gets the ``webhook.deleted`` entry its own DELETE would
    write. The relay (which holds the webhooks it fans out to) and this never disagree
    on what is left to send: a store that qualifies stays so (a marked store gets no
    new event). With ``owner_id``, that user's (being deleted: their own webhooks have
    their entries already, and go with them), told or not, and the caller commits;
    else commits. Returns how many."""
    stores = Store.__table__.c
    done = select(stores.id).where(
        stores.deleted_at.is_not(None),
        ~select(Item.id).where(Item.store_id == stores.id).exists(),
    )
    if owner_id is not None:
        done = done.where(stores.owner_id == owner_id)
    else:
        done = done.where(
            ~select(EVENTS.c.id)
            .where(EVENTS.c.store_id == stores.id, EVENTS.c.seq.is_(None))
            .exists(),
            ~select(DELIVERIES.c.id)
            .join(WEBHOOKS, WEBHOOKS.c.id == DELIVERIES.c.webhook_id)
            .where(WEBHOOKS.c.store_id == stores.id, DELIVERIES.c.status == "pending")
            .exists(),
        )
    ids = list(db.session.scalars(done))
    if ids:
        bound = select(Webhook).where(Webhook.store_id.in_(ids))
        if owner_id is not None:
            bound = bound.where(Webhook.owner_id != owner_id)
        source = audit.SYSTEM if owner_id is None else None  # the sweep, or the request
        for webhook in db.session.scalars(bound.order_by(Webhook.id)):
            changes = audit.deleted(as_json(webhook))
            audit.record(
                "webhook.deleted",
                "webhook",
                webhook.id,
                changes,
                store_id=webhook.store_id,
                source=source,
            )
        db.session.execute(
            delete(Store).where(stores.id.in_(ids)),
            execution_options={"synchronize_session": False},
        )
    if owner_id is None:
        db.session.commit()
    return len(ids)
