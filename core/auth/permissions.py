"""Who may call a view: decorators that authenticate (401) and authorize (403).

Each rule lives here once and is declared on the view it guards, where it also
documents its own responses in OpenAPI. Put them above flask-smorest's decorators:
they run before the body is parsed, so a caller who may not do something is told so
(401/403) before anything is said about their input (422), and learns nothing about it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, NoReturn

from flask import g
from flask_jwt_extended import current_user, get_jwt, get_jwt_header
from flask_jwt_extended.exceptions import FreshTokenRequired, JWTExtendedException
from flask_smorest import Blueprint
from jwt import PyJWTError

from core.auth import scopes
from core.auth.security import api_key, authenticate
from core.web.body import body_object
from core.web.errors import abort
from core.web.fields import MAX_ID
from models import Store

BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
View = Callable[..., Any]
Decorator = Callable[[View], View]
# What a view's row lookup returns: the store whose owner may act, then the rows
# the view is given in place of the ids in its path.
Found = tuple[Store, Any] | tuple[Store, Any, Any]


def forbid(message: str) -> NoReturn:
    abort(403, message=message, error="forbidden")


def require_fresh() -> None:
    """401 ``fresh_token_required`` unless the request's token came from /login."""
    claims = get_jwt()
    if claims.get("fresh") is not True:
        raise FreshTokenRequired("Fresh token required", get_jwt_header(), claims)


def may_change_store(store: Store) -> bool:
    """The one catalog rule: a store, its items and tags are changed by its owner or
    an admin."""
    return bool(current_user.is_admin or store.owner_id == current_user.id)


def optional_caller() -> Any:
    """The signed-in user of a public read, or None (a bad token is still a 401)."""
    return current_user if authenticate(optional=True) else None


def may_see(status: str, owner_id: int, store_id: int) -> bool:
    """An item that is not active (§13) is seen only by its store's owner and admins
    (through an API key bound to a store: of that store only); an answer that shows
    one is the caller's own (never kept by a shared cache)."""
    if status == "active":
        return True
    try:
        caller = optional_caller()
    except (JWTExtendedException, PyJWTError):
        # A bad token reads as none, as on every public read: a 401 here, where an item
        # that does not exist is a 404, would tell anyone which ids are hidden items.
        return False
    if caller is None or not (caller.is_admin or caller.id == owner_id):
        return False
    if key_store() not in (None, store_id):
        return False
    g.caller_specific = True
    return True


def key_store() -> int | None:
    """The store the request's API key is bound to, or None (no key, or any store)."""
    key = api_key()
    return key["store_id"] if key is not None else None


def sees_own_catalog(what: str) -> Any:
    """A signed-in caller asking for what only owners and admins see (a list of
    draft items): the caller, else 403. The answer is the caller's own."""
    caller = optional_caller()
    if caller is None:
        forbid(f"{what} is for a store's owner or an admin: sign in.")
    g.caller_specific = True
    return caller


def authorize_store(store: Store) -> None:
    """For a store named in the body (``POST /items``), known only once it is parsed."""
    if not may_change_store(store):
        forbid(f"Only the owner of store {store.id} or an admin may change it.")
    scopes.check_store(api_key(), store.id)


def login_required(blp: Blueprint, *, fresh: bool = False, refresh: bool = False) -> Decorator:
    """``jwt_required`` that also documents the Bearer scheme and the 401."""

    def decorator(func: View) -> View:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            authenticate(refresh=refresh)
            # Checked after revocation (unlike jwt_required's own check), so that a
            # revoked token is always reported as revoked.
            if fresh:
                require_fresh()
            return func(*args, **kwargs)

        documented: View = blp.alt_response(401, response="UNAUTHORIZED")(
            blp.doc(security=BEARER)(wrapper)
        )
        return documented

    return decorator


def any_store_key(blp: Blueprint) -> Decorator:
    """What acts beyond one store (creating a store): an API key bound to a store may
    not (403 ``insufficient_scope``). Put it below the decorator that authenticates."""

    def decorator(func: View) -> View:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = api_key()
            if key is not None and key["store_id"] is not None:
                scopes.refuse(f"This API key is limited to store {key['store_id']}.")
            return func(*args, **kwargs)

        documented: View = blp.alt_response(403, response="FORBIDDEN")(wrapper)
        return documented

    return decorator


def _guard(blp: Blueprint, check: Callable[[dict[str, Any]], None], **login: bool) -> Decorator:
    """A signed-in caller, then ``check(view_args)``; documents 401 and 403."""

    def decorator(func: View) -> View:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            check(kwargs)
            return func(*args, **kwargs)

        documented: View = blp.alt_response(403, response="FORBIDDEN")(wrapper)
        return login_required(blp, **login)(documented)

    return decorator


def admin_required(blp: Blueprint) -> Decorator:
    def check(_view_args: dict[str, Any]) -> None:
        if not current_user.is_admin:
            forbid("Only an admin may do this.")

    return _guard(blp, check)


def self_or_admin(blp: Blueprint, *, fresh: bool = False) -> Decorator:
    """``/users/<user_id>``: the user themself or an admin. Anyone else gets 403
    whether or not that user exists, so ids do not leak."""

    def check(view_args: dict[str, Any]) -> None:
        if view_args["user_id"] != current_user.id and not current_user.is_admin:
            forbid("Only the user themself or an admin may do this.")

    return _guard(blp, check, fresh=fresh)


def store_owner_required(
    blp: Blueprint, find: Callable[..., Found], *, etag_schema: Any = None, fresh: bool = False
) -> Decorator:
    """The view acts on a store's catalog: ``find(**view_args)`` looks its rows up
    (404, and locks what the change needs; an item that is not active is 404 to anyone
    who may not see it, §13, so that a write tells no more than a read), only the
    store's owner or an admin may go on (403), and with ``etag_schema`` a sent If-Match
    must match the first row, or else a sent If-Unmodified-Since must not be older than
    its ``last_modified`` (412). The view is given the rows in place of their ids:
    ``patch(self, item, data)``."""

    def decorator(func: View) -> View:
        @wraps(func)
        def wrapper(view: Any, **view_args: Any) -> Any:
            store, *rows = find(**view_args)
            for row in rows:  # a hidden item is 404 to a stranger here too, as on a read
                if not may_see(getattr(row, "status", "active"), store.owner_id, store.id):
                    abort(404, message=f"{type(row).__name__} {row.id} not found.")
            authorize_store(store)
            if etag_schema is not None:
                blp.check_preconditions(rows[0], etag_schema, rows[0].last_modified)
            return func(view, *rows)

        if etag_schema is not None:  # documents If-Unmodified-Since (core/web/smorest.py)
            apidoc = {**getattr(func, "_apidoc", {}), "date_preconditions": True}
            wrapper._apidoc = apidoc  # type: ignore[attr-defined]
        documented: View = blp.alt_response(404, response="NOT_FOUND")(
            blp.alt_response(403, response="FORBIDDEN")(wrapper)
        )
        return login_required(blp, fresh=fresh)(documented)

    return decorator


def store_in_body(check: Callable[[int], None]) -> Decorator:
    """A create that names its store in the body (``POST /items``): ``check`` (may the
    caller act on that store?) runs on a well-formed ``store_id`` before the body's
    other fields are judged, so that a caller who may not act there gets its 403
    whatever the rest holds, never a 422 (§3). Put it below the decorator that
    authenticates; the view checks again what it was given."""

    def decorator(func: View) -> View:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            store_id = body_object().get("store_id")
            if type(store_id) is int and 1 <= store_id <= MAX_ID:
                check(store_id)
            return func(*args, **kwargs)

        return wrapper

    return decorator


def body_fields() -> set[str]:
    """The top-level keys of a JSON object body, before validation (which comes
    later and reports anything malformed)."""
    return set(body_object())


@dataclass(frozen=True)
class Who:
    """A kind of caller, for ``fields_reserved``."""

    name: str
    allows: Callable[[dict[str, Any]], bool]  # given the view's path arguments


ADMIN = Who("an admin", lambda _view_args: bool(current_user.is_admin))
SELF = Who("the user themself", lambda view_args: view_args.get("user_id") == current_user.id)


def fields_reserved(blp: Blueprint, **rules: tuple[Who, str]) -> Decorator:
    """Body fields only some callers may send: ``role=(ADMIN, "change a role")``.
    Sending one you may not is a 403, whatever the rest of the body holds. Put it
    below the decorator that authenticates."""

    def decorator(func: View) -> View:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for field in sorted(body_fields() & rules.keys()):
                who, action = rules[field]
                if not who.allows(kwargs):
                    forbid(f"Only {who.name} may {action}.")
            return func(*args, **kwargs)

        documented: View = blp.alt_response(403, response="FORBIDDEN")(wrapper)
        return documented

    return decorator


def fresh_for_fields(*fields: str) -> Decorator:
    """A body sending any of ``fields`` needs a fresh token (401 before any 422).
    Put it below the decorator that authenticates."""

    def decorator(func: View) -> View:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if body_fields() & set(fields):
                require_fresh()
            return func(*args, **kwargs)

        return wrapper

    return decorator
