"""Authentication: JWTs, sessions, API keys, and Flask-JWT-Extended's callbacks
(passwords are core/auth/passwords.py; who may do what is core/auth/permissions.py).

Tokens carry the user id as a *string* ``sub`` (PyJWT 2.10+ rejects integers) and a
session id ``sid`` shared by every token of one login. The user and their role are
read from the database on every request, so a demotion or a deleted account takes
effect at the next request.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from flask import current_app, g, request
from flask.typing import ResponseReturnValue
from flask_jwt_extended import create_access_token, create_refresh_token, verify_jwt_in_request
from flask_jwt_extended.exceptions import (
    InvalidHeaderError,
    JWTExtendedException,
    NoAuthorizationError,
    RevokedTokenError,
    UserLookupError,
    WrongTokenError,
)
from flask_jwt_extended.view_decorators import _decode_jwt_from_headers
from jwt.exceptions import PyJWTError
from sqlalchemy.exc import SQLAlchemyError

from blocklist import get_blocklist
from core.auth import api_keys, scopes
from core.auth.passwords import client_address
from core.web.errors import error_response
from core.web.extensions import jwt
from db import db
from models import User
from models.types import utcnow

log = logging.getLogger("stores.auth")


# --- tokens and sessions -------------------------------------------------------


def start_session(user: User) -> dict[str, Any]:
    """A login: a new session, a fresh access token and a refresh token."""
    session_id = uuid.uuid4().hex
    log.info("login", extra={"event": "login", "session_id": session_id, "user_id": user.id})
    return issue_tokens(user, fresh=True, session_id=session_id)


def issue_tokens(user: User, *, fresh: bool, session_id: str) -> dict[str, Any]:
    claims = {"sid": session_id, "user_key": user.token_key}
    identity = str(user.id)
    expires = current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]
    return {
        "access_token": create_access_token(identity, fresh=fresh, additional_claims=claims),
        "refresh_token": create_refresh_token(identity, additional_claims=claims),
        "token_type": "Bearer",
        "expires_in": int(expires.total_seconds()),
    }


def token_expiry(claims: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(claims["exp"], UTC)


def revoke_session(claims: dict[str, Any], *, reason: str) -> None:
    """Revoke every token of the session, including those refreshed from it.

    No token of the session can outlive now + the refresh lifetime, so the entry
    can go after that.
    """
    expires = utcnow() + current_app.config["JWT_REFRESH_TOKEN_EXPIRES"]
    if get_blocklist().add(f"sid:{claims['sid']}", expires):
        level = logging.INFO if reason == "logout" else logging.WARNING
        extra = {
            "event": "session_revoked",
            "reason": reason,
            "session_id": claims["sid"],
            "user_id": claims.get("sub"),
        }
        log.log(level, "session revoked: %s", reason, extra=extra)


def rotate_refresh_token(claims: dict[str, Any]) -> bool:
    """Revoke the refresh token being used; False if it had been used already."""
    return get_blocklist().add(f"jti:{claims['jti']}", token_expiry(claims))


# --- who is calling: one verification per request ----------------------------------


def authenticate(*, optional: bool = False, refresh: bool = False) -> dict[str, Any] | None:
    """Verify the request's token once (signature, expiry, type, revocation, user)
    and return its claims; None when ``optional`` and no token was sent. Raises
    Flask-JWT-Extended's errors (401 in the envelope) for a bad token.

    The token is an access or refresh JWT, or an API key (``sk_…``, core/auth/api_keys.py)
    standing for its owner: then the request must also be within the key's scopes
    (403 ``insufficient_scope``, core/auth/scopes.py).

    The first call in a request does the work; later calls (the rate limiter, the scope
    hook, the idempotency hook, then the view's decorator) reuse its result instead of
    decoding again.
    """
    claims = _verified(optional=optional, refresh=refresh)
    if claims is not None and "api_key" in claims:
        scopes.check_endpoint(claims["api_key"])
    return claims


def _verified(*, optional: bool, refresh: bool) -> dict[str, Any] | None:
    done: tuple[bool, dict[str, Any] | None] | None = g.get("authenticated")
    if done is None or done[0] != refresh or (done[1] is None and not optional):
        # Not yet, for another token type, or found none where one is required
        # (raises NoAuthorizationError without decoding anything).
        token = _sent_token()
        if token is not None and api_keys.is_api_key(token):
            claims: dict[str, Any] | None = _verify_api_key(token, refresh=refresh)
        else:
            verified = verify_jwt_in_request(optional=optional, refresh=refresh)
            claims = verified[1] if verified else None
        done = (refresh, claims)
        g.authenticated = done
    return done[1]


def _sent_token() -> str | None:
    """The bearer token as Flask-JWT-Extended reads it from the request (its own
    parsing of the Authorization header, so that a key and a JWT are found alike);
    None if there is none, or a malformed header it will report itself."""
    try:
        token, _csrf = _decode_jwt_from_headers()
    except (NoAuthorizationError, InvalidHeaderError):
        return None
    return token


def _verify_api_key(token: str, *, refresh: bool) -> dict[str, Any]:
    """An API key, through the same checks and the same state as a JWT: its claims
    (401 if unknown, revoked or expired), the same user lookup, then what
    ``get_jwt()`` and ``current_user`` read. Events and audit rows name the key."""
    try:
        claims = api_keys.claims_for(token)
    except api_keys.KeyRefusedError as exc:
        raise RevokedTokenError({}, {"api_key": {"id": exc.key_id}}) from None
    if refresh:
        raise WrongTokenError("Only refresh tokens are allowed")
    user = _load_user({}, claims)
    if user is None:  # pragma: no cover - a key goes with its owner (ON DELETE CASCADE)
        raise UserLookupError("the key's owner no longer exists", {}, claims)
    key_id = claims["api_key"]["id"]
    g.api_key_id = key_id
    g.event_actor = {"type": "api_key", "id": key_id}
    # Flask-JWT-Extended's request state, as verify_jwt_in_request leaves it (its private
    # names: tests/api/test_api_keys.py fails if an upgrade renames them).
    g._jwt_extended_jwt_user = {"loaded_user": user}
    g._jwt_extended_jwt_header = {}
    g._jwt_extended_jwt = claims
    g._jwt_extended_jwt_location = "headers"
    return claims


def api_key() -> dict[str, Any] | None:
    """The API key the request is made with (id, scopes, store_id), or None."""
    claims = authenticate(optional=True)
    return claims.get("api_key") if claims else None


def check_scopes() -> None:
    """A before_request hook: a request made with an API key stays within the key's
    scopes on every endpoint, public reads included, and an unknown, revoked or expired
    key is a 401 wherever it is sent (§16). A bad JWT is left to the view that needs
    one (a public read ignores it, as before). The liveness probe reads no credential:
    it answers without the database or Redis (§6), whatever header a gateway adds."""
    if request.endpoint == "health.Health":
        return
    try:
        authenticate(optional=True)
    except (JWTExtendedException, PyJWTError):
        token = _sent_token()
        if token is not None and api_keys.is_api_key(token):
            raise


def caller_scope() -> str:
    """Whose request this is, as the request's own verification established it: the
    user (and their token key: a user id alone could name another user on a
    recreated database sharing the same Redis), else the client address. A request
    made with an API key is its owner's (§16); its idempotency keys are the key's own
    (core/web/idempotency.py), its daily quota of them the owner's."""
    claims = authenticate(optional=True)
    if claims is not None:
        return f"user:{claims['sub']}:{claims['user_key']}"
    return f"ip:{request.remote_addr}"


def rate_limit_key() -> str:
    """Flask-Limiter's key: an API key counts on its own, a signed-in user on theirs,
    anyone else (and any request whose token fails) on the client address."""
    try:
        claims = _verified(optional=True, refresh=False)
    except (JWTExtendedException, PyJWTError):
        claims = None
    except SQLAlchemyError:
        # The database is out of reach while the user is read. Flask-Limiter swallows
        # the error (RATELIMIT_SWALLOW_ERRORS) and lets the request through unlimited:
        # the session must be usable again, so that the view answers 503 itself (or
        # succeeds, the database back) instead of a 500 for a pending rollback.
        db.session.rollback()
        raise
    if claims is None:
        return client_address()
    if "api_key" in claims:
        return f"key:{claims['api_key']['id']}"
    return f"user:{claims['sub']}:{claims['user_key']}"


# --- Flask-JWT-Extended callbacks ------------------------------------------------


def _unauthorized(error: str, message: str) -> ResponseReturnValue:
    return error_response(HTTPStatus.UNAUTHORIZED, message, error=error)


@jwt.user_lookup_loader
def _load_user(header: dict[str, Any], claims: dict[str, Any]) -> User | None:
    try:
        user_id = int(claims["sub"])
    except (KeyError, TypeError, ValueError):
        return None
    user = db.session.get(User, user_id)
    if user is not None and claims.get("user_key") != user.token_key:
        raise RevokedTokenError(header, claims)  # issued before a password change
    if user is not None:
        g.user_id = user.id
    return user


@jwt.token_in_blocklist_loader
def _is_revoked(_header: dict[str, Any], claims: dict[str, Any]) -> bool:
    blocklist = get_blocklist()
    revoked = blocklist.contains(f"jti:{claims.get('jti')}", f"sid:{claims.get('sid')}")
    if revoked and claims.get("type") == "refresh":
        # A refresh token is revoked once it has been rotated: seeing it again
        # means somebody else holds a copy. End the whole session.
        revoke_session(claims, reason="rotated refresh token presented again")
    return revoked


@jwt.token_verification_loader
def _has_session(_header: dict[str, Any], claims: dict[str, Any]) -> bool:
    return all(isinstance(claims.get(name), str) for name in ("sid", "jti", "user_key"))


@jwt.unauthorized_loader
def _missing_token(reason: str) -> ResponseReturnValue:
    return _unauthorized("authorization_required", f"Authorization required: {reason}.")


@jwt.invalid_token_loader
def _invalid_token(reason: str) -> ResponseReturnValue:
    return _unauthorized("invalid_token", f"Invalid token: {reason}.")


@jwt.token_verification_failed_loader
def _unverified_token(_header: dict[str, Any], _claims: dict[str, Any]) -> ResponseReturnValue:
    return _unauthorized("invalid_token", "Invalid token: it was not issued by this service.")


@jwt.expired_token_loader
def _expired_token(_header: dict[str, Any], claims: dict[str, Any]) -> ResponseReturnValue:
    return _unauthorized("token_expired", f"The {claims.get('type', '')} token has expired.")


@jwt.revoked_token_loader
def _revoked_token(_header: dict[str, Any], claims: dict[str, Any]) -> ResponseReturnValue:
    if "api_key" in claims:
        return _unauthorized("token_revoked", "This API key has been revoked or has expired.")
    return _unauthorized("token_revoked", "The token has been revoked; sign in again.")


@jwt.needs_fresh_token_loader
def _stale_token(_header: dict[str, Any], _claims: dict[str, Any]) -> ResponseReturnValue:
    return _unauthorized(
        "fresh_token_required", "This action needs a fresh token: sign in again with /login."
    )


@jwt.user_lookup_error_loader
def _user_gone(_header: dict[str, Any], _claims: dict[str, Any]) -> ResponseReturnValue:
    return _unauthorized("user_not_found", "The user of this token no longer exists.")
