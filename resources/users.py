"""Users: the signed-in user, the admin's list, and account changes."""

from __future__ import annotations

import logging
from typing import Any

from flask.views import MethodView
from flask_jwt_extended import current_user
from sqlalchemy import Select, or_, select
from sqlalchemy.exc import IntegrityError

from core.auth import audit, reset
from core.auth.passwords import check_password, hash_password, password_attempts
from core.auth.permissions import (
    ADMIN,
    SELF,
    admin_required,
    body_fields,
    fields_reserved,
    fresh_for_fields,
    login_required,
    self_or_admin,
)
from core.catalog import stores
from core.lists.listing import LIST_HEADERS, Listing
from core.web.errors import abort
from core.web.http import no_store
from core.web.smorest import Blueprint
from core.web.sparse import sparse
from db import db, icontains
from models import ApiKey, User, Webhook, new_token_key
from models.types import utcnow
from resources.common import commit, get_or_404
from schemas import CREDENTIALS, UserQuerySchema, UserSchema, UserUpdateSchema, WebhookSchema

blp = Blueprint("users", __name__, url_prefix="/users", description="User accounts")
blp.after_request(no_store)
log = logging.getLogger("stores.auth")

USERS = Listing({"id": (User.id,)}, sortable=False)


def _lock(user: User) -> list[int]:
    """Lock the user's row until the request commits. An admin's is locked with every
    admin's, always in id order (so two requests cannot deadlock), which keeps the
    last-admin rule true when two admins step down at once. Returns the admin ids."""
    admins = []
    if user.is_admin:
        by_id = select(User.id).where(User.role == "admin").order_by(User.id)
        admins = list(db.session.scalars(by_id.with_for_update()))
    db.session.refresh(user, with_for_update=True)
    return admins


def _keep_an_admin(user: User, admins: list[int]) -> None:
    if admins == [user.id]:
        abort(409, message="This is the last admin; make another admin first.", error="last_admin")


def _end_keys_and_webhooks(user_id: int) -> None:
    """A deleted user's API keys and webhooks go with the row (ON DELETE CASCADE): each
    gets the entry its own DELETE writes (``api_key.revoked`` for a live key,
    ``webhook.deleted``), so that the audit log keeps what the cascade takes silently."""
    now = utcnow()
    live = select(ApiKey.id, ApiKey.store_id).where(
        ApiKey.owner_id == user_id, ApiKey.live_at_sql(now)
    )
    for key_id, store_id in db.session.execute(live):
        changes = {"revoked_at": [None, now.isoformat()]}
        audit.record("api_key.revoked", "api_key", key_id, changes, store_id=store_id)
    for webhook in db.session.scalars(select(Webhook).where(Webhook.owner_id == user_id)):
        changes = audit.deleted(WebhookSchema().dump(webhook))
        audit.record("webhook.deleted", "webhook", webhook.id, changes, store_id=webhook.store_id)


@blp.route("/me")
@blp.etag
class Me(MethodView):
    @login_required(blp)
    @blp.response(200, UserSchema)
    @sparse(blp, UserSchema)
    def get(self) -> User:
        """The signed-in user"""
        user: User = current_user
        return user


@blp.route("")
class Users(MethodView):
    @admin_required(blp)
    @blp.response(200, UserSchema(many=True), headers=LIST_HEADERS)
    @USERS.paginate(blp, UserQuerySchema, fields=UserSchema)
    def get(self, args: dict[str, Any]) -> Select[User]:
        """List users (admin only)"""
        query = select(User)
        if "q" in args:
            query = query.where(
                or_(icontains(User.username, args["q"]), icontains(User.email, args["q"]))
            )
        return query


@blp.route("/<id:user_id>")
@blp.etag
class UserById(MethodView):
    @self_or_admin(blp)
    @blp.response(200, UserSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @sparse(blp, UserSchema)
    def get(self, user_id: int) -> User:
        """One user (the user themself or an admin)"""
        return get_or_404(User, user_id)

    @self_or_admin(blp)
    @fields_reserved(
        blp,
        role=(ADMIN, "change a role"),
        email=(SELF, "change their email"),
        password=(SELF, "change their password"),
    )
    @fresh_for_fields(*CREDENTIALS)
    # A wrong current_password counts against the /login budget; a request without
    # one (a role change) neither counts nor is held back.
    @password_attempts(
        exempt_when=lambda: "current_password" not in body_fields(),
        deduct_when=lambda response: response.status_code == 403,
    )
    @blp.arguments(UserUpdateSchema)
    @blp.response(200, UserSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    def patch(self, data: dict[str, Any], user_id: int) -> User:
        """Change a user: the role (admin), the email or password (the user themself)

        Changing the email or the password needs a fresh token and `current_password`.
        """
        user = get_or_404(User, user_id)
        admins = _lock(user)  # the password is checked against the hash now locked
        if "current_password" in data and not check_password(user, data["current_password"]):
            log.warning(
                "wrong current password",
                extra={"event": "current_password_wrong", "user_id": user.id},
            )
            abort(403, message="The current password is wrong.", error="invalid_credentials")
        blp.check_etag(user, UserSchema)
        before = UserSchema().dump(user)
        if "role" in data:
            if data["role"] != "admin":
                _keep_an_admin(user, admins)
            user.role = data["role"]
        if "email" in data:
            user.email = data["email"]
        changes = audit.updated(before, UserSchema().dump(user))
        if "password" in data:
            user.password_hash = hash_password(data["password"])
            user.token_key = new_token_key()  # every session ends: sign in again
            changes["password"] = audit.SECRET_CHANGE
        if "password" in changes or "email" in changes:
            reset.use_up_links(user)  # the links mailed before go with the old ones
        if changes:
            audit.record("user.updated", "user", user.id, changes)
        commit(conflict="That email is already registered.")
        return user

    @self_or_admin(blp, fresh=True)
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def delete(self, user_id: int) -> None:
        """Delete a user (the user themself or an admin; fresh token)

        A user who still owns stores cannot be deleted: transfer or delete them first.
        """
        user = get_or_404(User, user_id)
        _keep_an_admin(user, _lock(user))
        blp.check_etag(user, UserSchema)
        audit.record("user.deleted", "user", user.id, audit.deleted(UserSchema().dump(user)))
        _end_keys_and_webhooks(user.id)
        # Stores deleted but kept until their webhooks are told: those are this user's.
        stores.forget_deleted_stores(owner_id=user.id)
        db.session.delete(user)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            abort(
                409,
                message=f"User {user_id} still owns stores; transfer or delete them first.",
                error="user_owns_stores",
            )
