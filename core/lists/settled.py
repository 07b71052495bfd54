"""Incremental sync that misses nothing (§13): a list read from ``updated_after``, or
in ``updated_at`` order, shows only the changes no later commit can come before.

``updated_at`` is stamped when a change is made, not when it commits. A change still
uncommitted while a sync reads can commit later with a time before the last one the
sync saw, and a sync that resumes from that time would never see it (a reviewer's
poller missed every item of five 100-item batches made beside a stream of PATCHes).
So these lists end before the oldest transaction still open began (PostgreSQL's
``pg_stat_activity.xact_start``; any change it makes is stamped after that), less
``SYNC_SETTLE_MS`` for the moment between the application stamping a row and its
statement reaching the database (and the difference of the hosts' clocks). Every row
shown is committed, and every row committed later is stamped after the last one shown.
A transaction held open (an import, an export's snapshot, a session idle in a
transaction) holds these lists back until it ends; other lists are not held back.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar

from flask import current_app
from sqlalchemy import Select, text
from sqlalchemy.orm import InstrumentedAttribute

from db import db
from models.types import utcnow

# The start of the oldest transaction open in this database, but this one (whose
# own writes it sees), or now: client sessions only (autovacuum writes no rows' time).
_OLDEST_OPEN = text(
    "SELECT least(min(xact_start), statement_timestamp()) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND backend_type = 'client backend' AND xact_start IS NOT NULL"
)


def horizon() -> datetime:
    """Every change stamped before this time is committed (or rolled back)."""
    settle = timedelta(milliseconds=current_app.config["SYNC_SETTLE_MS"])
    if db.session.get_bind().dialect.name == "postgresql":
        oldest: datetime = db.session.scalar(_OLDEST_OPEN)
        return oldest - settle
    return utcnow() - settle  # one writer at a time: only the moment before its write


Q = TypeVar("Q", bound=Select[Any])


def settled(query: Q, updated_at: InstrumentedAttribute[datetime], args: dict[str, Any]) -> Q:
    """``query`` held to the horizon when it is read as a sync reads it."""
    if args.get("updated_after") is None and args.get("sort") != "updated_at":
        return query
    return query.where(updated_at < horizon())
