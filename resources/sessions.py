"""Sign-up and sessions: register, login, refresh, logout."""

from __future__ import annotations

import logging
from typing import Any

from flask import g, url_for
from flask.views import MethodView
from flask_jwt_extended import current_user, get_jwt
from sqlalchemy import select

from core.auth import audit
from core.auth.passwords import (
    auth_rate_limit,
    check_password,
    hash_password,
    password_attempts,
)
from core.auth.permissions import login_required
from core.auth.security import (
    issue_tokens,
    revoke_session,
    rotate_refresh_token,
    start_session,
)
from core.web.errors import abort
from core.web.http import no_store
from core.web.smorest import Blueprint
from db import db, iequals
from models import User
from resources.common import commit, flush
from schemas import LoginSchema, MessageSchema, RegisterSchema, TokenSchema, UserSchema

log = logging.getLogger("stores.auth")
blp = Blueprint("sessions", __name__, description="Sign up, sign in, refresh and sign out")
blp.after_request(no_store)


@blp.route("/register")
class Register(MethodView):
    decorators = [auth_rate_limit()]

    @blp.arguments(RegisterSchema)
    @blp.response(201, UserSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    def post(self, data: dict[str, Any]) -> tuple[User, int, dict[str, str]]:
        """Create an account (role `user`)"""
        user = User(
            username=data["username"],
            email=data["email"],
            password_hash=hash_password(data["password"]),
        )
        db.session.add(user)
        conflict = "That username or email is already registered."
        flush(conflict=conflict)
        # Anonymous, whatever token came along (the rate limiter reads one if sent).
        created = audit.created(UserSchema().dump(user))
        audit.record("user.created", "user", user.id, created, as_actor=audit.ANONYMOUS)
        commit(conflict=conflict)
        return user, 201, {"Location": url_for("users.UserById", user_id=user.id)}


@blp.route("/login")
class Login(MethodView):
    decorators = [password_attempts()]

    @blp.arguments(LoginSchema)
    @blp.response(200, TokenSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Sign in: a fresh access token and a refresh token"""
        user = db.session.scalar(select(User).where(iequals(User.username, data["username"])))
        if not check_password(user, data["password"]):
            log.warning(
                "login failed", extra={"event": "login_failed", "username": data["username"]}
            )
            target = user.id if user is not None else None
            audit.record_and_commit("user.sign_in_failed", "user", target, as_actor=audit.ANONYMOUS)
            abort(401, message="Invalid credentials.", error="invalid_credentials")
        assert user is not None  # check_password refuses a user that does not exist
        g.user_id = user.id
        audit.record("user.signed_in", "user", user.id)
        db.session.commit()  # with a hash upgraded by check_password
        return start_session(user)


@blp.route("/refresh")
class Refresh(MethodView):
    @login_required(blp, refresh=True)
    @blp.response(200, TokenSchema)
    def post(self) -> dict[str, Any]:
        """Trade a refresh token for new tokens; the one used is revoked"""
        claims = get_jwt()
        if not rotate_refresh_token(claims):
            # Another request used this token a moment ago: a copy is in other hands.
            revoke_session(claims, reason="refresh token used twice at once")
            abort(401, message="The token has been revoked; sign in again.", error="token_revoked")
        return issue_tokens(current_user, fresh=False, session_id=claims["sid"])


@blp.route("/logout")
class Logout(MethodView):
    @login_required(blp)
    @blp.response(200, MessageSchema)
    def post(self) -> dict[str, str]:
        """Sign out: every token of this login session is revoked"""
        revoke_session(get_jwt(), reason="logout")
        return {"message": "Successfully logged out."}
