"""Password reset by mail (API.md §15): ask with an address, redeem the mailed token.

Asking does the same work whatever the address: the request only draws a random
nonce and enqueues ``send_password_reset``; the job looks the address up, and for
an unknown one does nothing. So the answer, and its time, say nothing of which
addresses have an account (the job runs on a worker, outside the request).

The token is derived from the nonce with a key of the service (HMAC), so the job
can run twice — Celery delivers at least once — and mail the same link both times;
the broker holds only the nonce, never a token. The database keeps the token's
SHA-256 (256 random bits: nothing to guess a hash from). A token is good once, for
PASSWORD_RESET_TTL seconds from the request; redeeming it sets the password and
ends every session of the user (a new ``token_key``, as a password change does).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import unicodedata
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

from celery import shared_task
from flask import current_app, request
from flask_mailman import EmailMessage
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.exc import IntegrityError

from core.auth.passwords import hash_password
from core.web.errors import abort
from core.web.extensions import limiter
from core.web.fields import BLANKS
from db import db, unicode_lower
from models import PasswordReset, User, new_token_key
from models.types import utcnow

log = logging.getLogger("stores.auth")

TASK = "auth.send_password_reset"


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_for(nonce: str) -> str:
    """The token mailed for ``nonce``: the same each time the job runs."""
    key = current_app.config["JWT_SECRET_KEY"].encode()
    digest = hmac.new(key, b"password-reset\0" + nonce.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def address_key(email: str) -> str:
    """How an address is known to the rate limiter: hashed, so that no address sits
    in Redis; trimmed and composed as the email field trims and composes it, and
    lowered as the account lookup lowers it (the database's lower), so that every
    spelling that reaches one account shares its budget (a leading U+FEFF, "İ" for
    "i", an accent typed apart)."""
    address = unicodedata.normalize("NFC", email.strip(BLANKS))
    return hashlib.sha256(unicode_lower(address).encode()).hexdigest()[:32]


def _limit_per_ip() -> str:
    limit: str = current_app.config["PASSWORD_RESET_RATE_LIMIT_IP"]
    return limit


def _limit_per_address() -> str:
    limit: str = current_app.config["PASSWORD_RESET_RATE_LIMIT_ADDRESS"]
    return limit


def _address() -> str:
    body = request.get_json(silent=True)
    email = body.get("email") if isinstance(body, dict) else None
    return "reset-address:" + address_key(email if isinstance(email, str) else "")


def reset_rate_limits(*, per_address: bool) -> list[Callable[..., Any]]:
    """A budget of their own (not AUTH_RATE_LIMIT's): per client IP, shared by asking
    and redeeming; asking also per address, whoever asks."""
    limits: list[Callable[..., Any]] = [limiter.shared_limit(_limit_per_ip, scope="password-reset")]
    if per_address:
        limits.append(
            limiter.shared_limit(
                _limit_per_address, scope="password-reset-address", key_func=_address
            )
        )
    return limits


def request_reset(email: str) -> None:
    """Enqueue the mail. Nothing here depends on whether the address is known: a broker
    that is down is a 503 (try again) for every address alike."""
    nonce = secrets.token_urlsafe(16)
    celery = current_app.extensions["celery"]
    try:
        celery.tasks[TASK].delay(email, nonce, utcnow().isoformat())
    except BrokerError:
        log.warning("password reset: broker unavailable; nothing was queued")
        abort(503, message="The mail could not be queued just now: try again shortly.")


def _find_user(email: str) -> User | None:
    return db.session.scalar(select(User).where(func.lower(User.email) == func.lower(email)))


def reset_link(token: str) -> str:
    return f"{current_app.config['PUBLIC_BASE_URL']}/password-reset?token={token}"


MAIL_BODY = """Hello {username},

Somebody (we hope you) asked to reset the password of your account.
To choose a new password, open this link within {minutes} minutes:

{link}

The link works once. If you did not ask for it, ignore this mail: your password
stays as it is.
"""


@shared_task(  # type: ignore[untyped-decorator]  # Celery ships no type information
    name=TASK,
    autoretry_for=(OSError,),  # smtplib's errors are OSErrors: the server was unreachable
    retry_backoff=True,
    max_retries=5,
)
def send_password_reset(email: str, nonce: str, requested_at: str) -> None:
    """Store the token's hash and mail the link; nothing for an unknown address."""
    user = _find_user(email)
    if user is None:
        return
    ttl = timedelta(seconds=current_app.config["PASSWORD_RESET_TTL"])
    expires_at = datetime.fromisoformat(requested_at) + ttl
    if expires_at <= utcnow():
        return  # the job ran too late: the link would be dead on arrival
    token = _token_for(nonce)
    token_hash = _token_hash(token)
    # A second run finds the row of the first and mails the link again (the first
    # mail may not have gone).
    stored = select(PasswordReset.id).where(PasswordReset.token_hash == token_hash)
    if db.session.scalar(stored) is None:
        db.session.add(PasswordReset(user_id=user.id, token_hash=token_hash, expires_at=expires_at))
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()  # a parallel run of the same job stored it
    minutes = int(ttl.total_seconds() // 60)
    body = MAIL_BODY.format(username=user.username, minutes=minutes, link=reset_link(token))
    EmailMessage("Reset your password", body, to=[user.email]).send()
    log.info("password reset mailed", extra={"event": "password_reset_mailed", "user_id": user.id})


class InvalidResetTokenError(Exception):
    """Used, expired or unknown."""


def find_reset(token: str) -> PasswordReset:
    """The unused, unexpired reset of ``token``, locked until the request commits."""
    reset = db.session.scalar(
        select(PasswordReset)
        .where(
            PasswordReset.token_hash == _token_hash(token),
            PasswordReset.used_at.is_(None),
            PasswordReset.expires_at > utcnow(),
        )
        .with_for_update()
    )
    if reset is None:
        raise InvalidResetTokenError
    return reset


def _use_up(*conditions: Any) -> int:
    statement = (
        update(PasswordReset)
        .where(PasswordReset.used_at.is_(None), *conditions)
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    result = cast(CursorResult[Any], db.session.execute(statement))
    return result.rowcount


def use_up_links(user: User) -> None:
    """Every outstanding link of ``user`` can no longer be redeemed: their email or
    password changed (one changed because the old mailbox or password was taken over
    must not leave a link to it that still works). The caller commits."""
    _use_up(PasswordReset.user_id == user.id)


def redeem(reset: PasswordReset, user: User, new_password: str) -> None:
    """Set the password; this token and every other outstanding one of the user are
    used up, and every session ends. The caller commits."""
    # The claim is the judge of single use, where the row lock of find_reset is not
    # (SQLite has none): of two requests with one token, one claims it.
    if _use_up(PasswordReset.id == reset.id) != 1:
        raise InvalidResetTokenError
    _use_up(PasswordReset.user_id == user.id)
    user.password_hash = hash_password(new_password)
    user.token_key = new_token_key()  # every token of every session is refused from now on
    log.info(
        "password reset",
        extra={"event": "password_reset", "user_id": user.id, "reset_id": reset.id},
    )
