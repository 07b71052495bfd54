"""The audit log (API.md §15): who changed what, from where, and what it was before.

A view calls ``record(action, target_type, target_id, changes)`` before it commits,
so an entry is written in the same transaction as its change, or not at all: the
entries of a transaction are inserted by one statement as it commits (a batch of
100 items costs one INSERT, not 100), and dropped if it rolls back. The
actor, request id and client IP come from the request. ``changes`` maps a field to
``[old, new]`` as the resource's JSON writes them (``created``, ``updated`` and
``deleted`` build it from two dumps); a password is listed by name only, ``[]``.
Nothing secret is ever written: ``record`` refuses a field named like one.

Work a job does later (an import) is recorded as the request that asked for it: the
request's ``origin()`` is kept with the job and given to ``record``.

A failed sign-in is recorded although the request fails: ``record_and_commit``.
Entries older than AUDIT_RETENTION_DAYS are dropped by ``purge`` (a beat job).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from flask import current_app, g, has_request_context, request
from sqlalchemy import CursorResult, Table, delete, event, insert
from sqlalchemy.orm import Session

from db import db
from models import AuditEntry
from models.types import utcnow

# Field names whose values must never reach the log: record() refuses them, whatever
# the caller passes (a password change is written as {"password": []}).
SECRET_FIELDS = frozenset(
    {
        "password",
        "new_password",
        "current_password",
        "password_hash",
        "token",
        "token_key",
        "key",
        "secret",
    }
)
# Bookkeeping a change of a resource always moves: not part of what changed.
NOT_CHANGES = frozenset({"id", "created_at", "updated_at", "links"})
SECRET_CHANGE: list[Any] = []  # a secret changed: its name, never a value

Changes = dict[str, list[Any]]


# The actor of what no credential does (a sign-up, a failed sign-in): said outright,
# as a token sent along with such a request (which the rate limiter reads) is not its
# actor.
ANONYMOUS: tuple[str, int | None] = ("anonymous", None)


def actor() -> tuple[str, int | None]:
    """Who is acting in this request: an API key (another module sets
    ``g.api_key_id``), a signed-in user (``g.user_id``, set by the token check or a
    sign-in), else anonymous."""
    if not has_request_context():
        return "anonymous", None
    if g.get("api_key_id") is not None:
        return "api_key", g.api_key_id
    if g.get("user_id") is not None:
        return "user", g.user_id
    return ANONYMOUS


@dataclass(frozen=True)
class Origin:
    """Who made a change and from where, as an entry records it."""

    actor_type: str
    actor_id: int | None
    request_id: str | None = None
    ip: str | None = None


# The command line (`flask import-items`): an operator on the server, no request.
SYSTEM = Origin("system", None)


def origin() -> Origin:
    """This request's: its actor, request id and client IP."""
    actor_type, actor_id = actor()
    if not has_request_context():
        return Origin(actor_type, actor_id)
    return Origin(actor_type, actor_id, g.get("request_id"), client_ip())


def client_ip() -> str | None:
    """The request's client address if it is one. Behind TRUSTED_PROXIES it comes from
    X-Forwarded-For, which a client that reaches the server past the proxies writes
    itself: anything but an address (too long for the column, it failed the write,
    and with it the change or the failed sign-in's entry) is recorded as unknown."""
    try:
        return str(ipaddress.ip_address(request.remote_addr or ""))[:45]
    except ValueError:
        return None


def record(
    action: str,
    target_type: str,
    target_id: int | None,
    changes: Mapping[str, list[Any]] | None = None,
    *,
    store_id: int | None = None,
    as_actor: tuple[str, int | None] | None = None,
    source: Origin | None = None,
) -> None:
    """Add an entry to the session's transaction (the caller commits). ``source``:
    the request that asked for the change, when a job makes it (else this one)."""
    changes = dict(changes or {})
    for field, values in changes.items():
        if field in SECRET_FIELDS and values != SECRET_CHANGE:
            raise ValueError(f"the audit log never holds the value of {field!r}")
    source = source or origin()
    actor_type, actor_id = as_actor or (source.actor_type, source.actor_id)
    entry = {
        "actor_type": actor_type,
        "actor_id": actor_id,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "store_id": store_id,
        "changes": changes,
        "request_id": source.request_id,
        "ip": source.ip,
        "created_at": utcnow(),
    }
    db.session().info.setdefault(PENDING, []).append(entry)


PENDING = "audit_entries"


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    entries = session.info.pop(PENDING, None)
    if entries:
        session.execute(insert(cast(Table, AuditEntry.__table__)), entries)


@event.listens_for(Session, "after_soft_rollback")
def _drop_pending(session: Session, _previous: Any) -> None:
    session.info.pop(PENDING, None)


def record_and_commit(*args: Any, **kwargs: Any) -> None:
    """Record in a transaction of its own, committed now: for an entry about a
    request that is going to fail (a failed sign-in), whose own work is rolled back."""
    db.session.rollback()
    record(*args, **kwargs)
    db.session.commit()


# --- changes, from two dumps of a resource --------------------------------------------


def _own(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in NOT_CHANGES and k not in SECRET_FIELDS}


def updated(before: Mapping[str, Any], after: Mapping[str, Any]) -> Changes:
    """The fields whose value differs between two dumps."""
    old, new = _own(before), _own(after)
    fields = sorted(new.keys() | old.keys())
    return {k: [old.get(k), new.get(k)] for k in fields if old.get(k) != new.get(k)}


def created(state: Mapping[str, Any]) -> Changes:
    return {k: [None, v] for k, v in _own(state).items()}


def deleted(state: Mapping[str, Any]) -> Changes:
    return {k: [v, None] for k, v in _own(state).items()}


# --- retention ------------------------------------------------------------------------


def purge(now: datetime | None = None) -> int:
    """Drop entries older than AUDIT_RETENTION_DAYS (0 keeps them all); how many went."""
    days: int = current_app.config["AUDIT_RETENTION_DAYS"]
    if days <= 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(days=days)
    with db.engine.begin() as conn:
        result = conn.execute(delete(AuditEntry).where(AuditEntry.created_at < cutoff))
    return cast(CursorResult[Any], result).rowcount
