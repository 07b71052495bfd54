"""The stock ledger: the only way an item's stock changes.

Every change writes one movement (who, why, how much, the stock after it), so an
item's stock always equals the sum of its movements. A change is one conditional
UPDATE of the item's row (``stock = stock + delta`` only where the result stays in
range, or ``stock = set`` only where it still equals ``expected``): the database
decides, so concurrent movements neither lose an update nor take stock below zero.
Nothing here commits: the caller's request (or command) does, once.

The bulk forms serve the importer and ``flask seed``: ``set_counts`` counts many
locked items in two statements, ``initial_counts`` records the first movement of
many items just inserted with their stock (as ``initial_count`` does for one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Select, insert, literal, select, update
from sqlalchemy.orm.attributes import set_committed_value

from db import db
from models import Item, StockMovement
from models.types import UTCDateTime, utcnow

MAX_STOCK = 2**31 - 1  # the column is a 32-bit integer


class StockError(Exception):
    """A movement the ledger refuses; ``code`` is the contract's ``error``."""

    code = "stock_error"

    def __init__(self, message: str, stock: int) -> None:
        super().__init__(message)
        self.stock = stock


class InsufficientStockError(StockError):
    code = "insufficient_stock"


class StockOverflowError(StockError):
    code = "stock_overflow"


class StockChangedError(StockError):
    code = "stock_changed"


class ItemArchivedError(StockError):
    """An archived item keeps its ledger, and only a count may change it (§13)."""

    code = "item_archived"


def _current(item: Item) -> int:
    return db.session.execute(select(Item.stock).where(Item.id == item.id)).scalar_one()


def _record(
    item: Item,
    *,
    delta: int,
    after: int,
    reason: str,
    reference: str | None,
    user_id: int | None,
    now: datetime,
) -> StockMovement:
    # The row already holds these values (the UPDATE wrote them): the object is told
    # without writing them again, so its ETag and updated_at are the new ones.
    set_committed_value(item, "stock", after)
    set_committed_value(item, "updated_at", now)
    movement = StockMovement(
        item_id=item.id,
        delta=delta,
        stock_after=after,
        reason=reason,
        reference=reference,
        user_id=user_id,
        created_at=now,
    )
    db.session.add(movement)
    return movement


def move(
    item: Item, delta: int, reason: str, *, reference: str | None = None, user_id: int | None
) -> StockMovement:
    """Add ``delta`` (non-zero) to a saved item's stock; the caller holds the item's
    row lock (its status cannot change meanwhile)."""
    if item.status == "archived":
        raise ItemArchivedError(
            f"Item {item.id} is archived: its stock moves only by a count (set with "
            "expected), or after its status is changed.",
            item.stock,
        )
    # The bounds are compared with the column alone (no ``stock + delta`` in the
    # WHERE), so PostgreSQL never computes a sum that overflows its integer.
    in_range = Item.stock >= -delta if delta < 0 else Item.stock <= MAX_STOCK - delta
    now = utcnow()
    statement = (
        update(Item)
        .where(Item.id == item.id, in_range)
        .values(stock=Item.stock + delta, updated_at=now)
        .returning(Item.stock)
        .execution_options(synchronize_session=False)
    )
    after = db.session.execute(statement).scalar_one_or_none()
    if after is None:
        stock = _current(item)
        if delta < 0:
            raise InsufficientStockError(
                f"Item {item.id} has {stock} in stock; {-delta} cannot be taken out.", stock
            )
        raise StockOverflowError(
            f"Item {item.id} has {stock} in stock; {delta} more would exceed {MAX_STOCK}.", stock
        )
    return _record(
        item,
        delta=delta,
        after=after,
        reason=reason,
        reference=reference,
        user_id=user_id,
        now=now,
    )


def count(
    item: Item,
    new_stock: int,
    *,
    expected: int | None = None,
    reference: str | None = None,
    user_id: int | None,
) -> StockMovement:
    """A physical count of a saved item: stock becomes ``new_stock``. With
    ``expected``, only if the stock still is what the counter saw (compare-and-set);
    without, the caller must hold the item's row lock (the import does)."""
    before = item.stock if expected is None else expected
    now = utcnow()
    statement = (
        update(Item)
        .where(Item.id == item.id, Item.stock == before)
        .values(stock=new_stock, updated_at=now)
        .returning(Item.stock)
        .execution_options(synchronize_session=False)
    )
    if db.session.execute(statement).scalar_one_or_none() is None:
        stock = _current(item)
        raise StockChangedError(
            f"Item {item.id} has {stock} in stock, not the {before} expected; "
            "nothing was changed. Count again against the current stock.",
            stock,
        )
    return _record(
        item,
        delta=new_stock - before,
        after=new_stock,
        reason="count",
        reference=reference,
        user_id=user_id,
        now=now,
    )


def initial_count(item: Item, stock: int, *, user_id: int | None) -> StockMovement:
    """The stock of an item being created, as its first movement: a count (its
    ``stock.moved`` event: core/events/catalog.py ``initial_stock``)."""
    item.stock = stock
    movement = StockMovement(
        item=item, delta=stock, stock_after=stock, reason="count", user_id=user_id
    )
    db.session.add(movement)
    return movement


@dataclass(frozen=True)
class Count:
    """A physical count of a saved item whose row the caller has locked: its stock
    goes from ``before`` (what the row holds) to ``after``."""

    item_id: int
    before: int
    after: int


def set_counts(
    counts: Sequence[Count],
    *,
    reference: str | None,
    user_id: int | None,
    now: datetime | None = None,
) -> None:
    """Many counts at once (the importer): one UPDATE of the items' stock by primary
    key, one INSERT of their movements. The caller holds the rows' locks
    (``SELECT ... FOR UPDATE``), so ``before`` is still the stock."""
    if not counts:
        return
    now = now or utcnow()
    db.session.execute(
        update(Item),  # ORM bulk UPDATE by primary key: one executemany
        [{"id": c.item_id, "stock": c.after, "updated_at": now} for c in counts],
    )
    _insert_counts(
        {c.item_id: (c.after - c.before, c.after) for c in counts},
        reference=reference,
        user_id=user_id,
        now=now,
    )


def initial_counts(
    stocks: Mapping[int, int],
    *,
    reference: str | None,
    user_id: int | None,
    now: datetime | None = None,
) -> None:
    """The first movement of many items (id: stock) just inserted with that stock,
    in the same transaction (the importer, ``flask seed``): one INSERT."""
    _insert_counts(
        {item_id: (stock, stock) for item_id, stock in stocks.items()},
        reference=reference,
        user_id=user_id,
        now=now or utcnow(),
    )


def _insert_counts(
    changes: Mapping[int, tuple[int, int]],
    *,
    reference: str | None,
    user_id: int | None,
    now: datetime,
) -> None:
    if not changes:
        return
    db.session.execute(
        insert(StockMovement),
        [
            {
                "item_id": item_id,
                "delta": delta,
                "stock_after": after,
                "reason": "count",
                "reference": reference,
                "user_id": user_id,
                "created_at": now,
            }
            for item_id, (delta, after) in changes.items()
        ],
    )


def count_many(
    counts: Select[Any],
    *,
    reference: str,
    now: datetime,
    user_id: int | None = None,
    created: bool = False,
) -> None:
    """Physical counts of many items at once (the import), set-based: ``counts``
    selects ``item_id``, ``before`` and ``after`` of items whose row locks the caller
    holds. One INSERT of count movements and one UPDATE of the items' stock; with
    ``created``, items just written with stock ``after``: their movements only."""
    source = counts.subquery()
    db.session.execute(
        insert(StockMovement).from_select(
            ["item_id", "delta", "stock_after", "reason", "reference", "user_id", "created_at"],
            select(
                source.c.item_id,
                source.c.after - source.c.before,
                source.c.after,
                literal("count"),
                literal(reference),
                literal(user_id, Integer),
                literal(now, UTCDateTime()),
            ),
        )
    )
    if not created:
        db.session.execute(
            update(Item)
            .where(Item.id == source.c.item_id)
            .values(stock=source.c.after, updated_at=now)
            .execution_options(synchronize_session=False)
        )
