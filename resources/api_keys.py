"""API keys (contract §15): a person makes scoped, revocable keys for their machines.

Keys are managed only by a person signed in with a password (a key cannot reach these
endpoints: core/auth/scopes.py). The key itself is in the 201 answer and nowhere else.
"""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_jwt_extended import current_user
from sqlalchemy import Select, select, update

from core.auth import api_keys, audit
from core.auth.limits import refuse_past_limit
from core.auth.permissions import forbid, login_required, store_in_body
from core.lists.listing import LIST_HEADERS, Listing
from core.web.errors import abort
from core.web.http import no_store
from core.web.smorest import Blueprint
from db import db
from models import ApiKey, Store
from models.types import utcnow
from resources.common import KEY_SHARE
from schemas import ApiKeyCreatedSchema, ApiKeyCreateSchema, ApiKeySchema

blp = Blueprint("api_keys", __name__, url_prefix="/api-keys", description="API keys")
blp.after_request(no_store)

# The caller's keys, oldest first, by keyset on (owner_id, id).
KEYS = Listing({"id": (ApiKey.id,)}, sortable=False)
LOCATION = {"Location": {"schema": {"type": "string"}, "description": "URL of the new key"}}


def _key(key_id: int, *, for_update: bool = False) -> ApiKey:
    """One of the caller's live keys (admin: anyone's); others are not found."""
    lock = {"of": ApiKey} if for_update else None
    key = db.session.get(ApiKey, key_id, with_for_update=lock)
    if (
        key is None
        or key.revoked_at is not None
        or not (current_user.is_admin or key.owner_id == current_user.id)
    ):
        abort(404, message=f"API key {key_id} not found.")
    return key


def _check_store(store_id: int | None) -> None:
    if store_id is None:
        return
    store = db.session.get(Store, store_id, with_for_update=KEY_SHARE)  # held, as for an item
    if store is None or store.deleted_at is not None:
        message = f"Store {store_id} does not exist."
        abort(422, message=message, errors={"json": {"store_id": [message]}})
    if store.owner_id != current_user.id and not current_user.is_admin:
        forbid(f"Store {store_id} is not yours: a key can act only on your own stores.")


@blp.route("")
class ApiKeys(MethodView):
    @login_required(blp)
    @blp.response(200, ApiKeySchema(many=True), headers=LIST_HEADERS)
    @KEYS.paginate(blp)
    def get(self, _args: dict[str, Any]) -> Select[ApiKey]:
        """Your API keys that are not revoked (never the keys themselves)"""
        return select(ApiKey).where(ApiKey.owner_id == current_user.id, ApiKey.revoked_at.is_(None))

    @login_required(blp, fresh=True)  # a key outlives sessions: made from a sign-in
    @store_in_body(_check_store)
    @blp.arguments(ApiKeyCreateSchema)
    @blp.response(201, ApiKeyCreatedSchema, headers=LOCATION)
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(409, response="CONFLICT", description="API_KEY_MAX_PER_USER live keys")
    def post(self, data: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Make an API key; the answer holds the key, once"""
        _check_store(data.get("store_id"))
        # A revoked key is kept (the audit), not held; nor is an expired one (it had to
        # be revoked, one by one, before another could be made). The caller's expired
        # keys end here, revoked as of their expiry: listed until another key is made,
        # not for ever (keys expiring in seconds, made in a loop, grew the list and a
        # user's deletion without bound).
        now = utcnow()
        db.session.execute(
            update(ApiKey)
            .where(
                ApiKey.owner_id == current_user.id,
                ApiKey.revoked_at.is_(None),
                ApiKey.expires_at <= now,
            )
            .values(revoked_at=ApiKey.expires_at),
            execution_options={"synchronize_session": False},
        )
        live = ApiKey.live_at_sql(now)
        refuse_past_limit(ApiKey, current_user.id, "API_KEY_MAX_PER_USER", "API keys", live)
        row, key = api_keys.new_key(current_user.id, **data)
        db.session.flush()
        shown = ApiKeySchema().dump(row)
        changes = audit.created(shown)
        audit.record("api_key.created", "api_key", row.id, changes, store_id=row.store_id)
        db.session.commit()
        location = url_for("api_keys.ApiKeyById", key_id=row.id)
        created = {name: getattr(row, name) for name in ApiKeySchema().fields}
        return created | {"key": key}, 201, {"Location": location}


@blp.route("/<id:key_id>")
class ApiKeyById(MethodView):
    @login_required(blp)
    @blp.response(200, ApiKeySchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, key_id: int) -> ApiKey:
        """One of your API keys"""
        return _key(key_id)

    @login_required(blp)
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, key_id: int) -> None:
        """Revoke an API key: refused from the next request on, everywhere"""
        key = _key(key_id, for_update=True)
        changes = {"revoked_at": [None, api_keys.revoke(key).isoformat()]}
        audit.record("api_key.revoked", "api_key", key.id, changes, store_id=key.store_id)
        db.session.commit()
