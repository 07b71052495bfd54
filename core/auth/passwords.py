"""Passwords: how they are hashed and checked, how often they may be tried, and
their quality.

Hashing: Argon2id; older pbkdf2_sha256 hashes verify and are upgraded in place. A
password is hashed and checked in Unicode's compatibility composed form (NFKC, as NIST
SP 800-63B asks), so the same password typed where an accent arrives as a separate
mark (macOS) or a letter as its full-width form (an IME) is still the same password.

Quality (API.md §15): long enough and hard to guess, not composed by rule.

NIST SP 800-63B: 8 to 128 characters (the field, core/web/fields.py ``Password``),
no composition rules, but a check against what an attacker tries first. zxcvbn
estimates the guesses a password needs from dictionaries, keyboard patterns, dates
and repeats; a score below 3 ("safely unguessable: moderate protection from an
offline attack") is refused with zxcvbn's own feedback. So is a password that
contains the username or the local part of the email address, in any case.

zxcvbn's time is bounded (``_judged``): its look-alike matcher ("p@ssw0rd") runs every
dictionary over every substring once per way of reading the symbols as letters, up to
736 ways, so a 128-character password of such symbols took 13 s and a random one of
all printable characters 7 s, a worker held meanwhile. It judges the longest prefix
it can judge in about a tenth of a second: at least the first 14 characters, the whole
password when it is plain; then, if that prefix alone is too weak, the pieces after it
in the same way, at most MAX_PIECES in all.

Applies where a password is chosen: /register, a password change, a reset.
``flask create-admin`` only warns. Existing hashes are never re-judged: a user keeps
their password until they change it.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable
from typing import Any

from flask import Flask, current_app, request
from flask_limiter import RouteLimit
from marshmallow import ValidationError
from passlib.context import CryptContext
from zxcvbn import matching, zxcvbn

from core.web.extensions import limiter
from models import User

# zxcvbn's score 3 and up (its scoring.guesses_to_score): 10^8 + 5 guesses or more.
MIN_GUESSES_LOG10 = math.log10(1e8 + 5)
MIN_LENGTH = 8  # the field's own limit, counted again once the password is normalized
MAX_LENGTH = 128  # the field's own limit; zxcvbn's default stops at 72
# zxcvbn's work on a password, in (ways to read its symbols + 1) x length²: 150,000
# takes about 0.15 s here (736 ways at 14 characters; a plain password of 128 has 1).
JUDGE_BUDGET = 150_000
# A password longer than its judged prefix is judged on in pieces, at most so many, the
# pieces' guesses multiplied: a strong password whose symbols made the prefix short
# ("1234567890123456789 Quixotic-Zebra-...", the prefix 12345678901234) is not refused
# for its first characters alone.
MAX_PIECES = 3
TOO_WEAK = "This password is too easy to guess."
TOO_SHORT = f"A password needs at least {MIN_LENGTH} characters."
MIN_PERSONAL = 3  # the shortest username; shorter local parts are not searched for
CONTAINS_NAME = "A password must not contain your username or email address."


def _normalized(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def _personal_words(username: str | None, emails: Iterable[str | None]) -> list[str]:
    words = [username] if username else []
    words += [email.rpartition("@")[0] for email in emails if email]
    # Shorter words (a local part "jo") would forbid half the dictionary; zxcvbn
    # still counts them as known words.
    return [word.casefold() for word in words if len(word) >= MIN_PERSONAL]


def _judged(password: str) -> str:
    """The longest prefix of ``password`` zxcvbn judges within JUDGE_BUDGET. Counting
    the ways is cheap (at most 736, whatever the length); a prefix has no more of them
    than the whole, so the prefix chosen is within the budget."""
    ways = matching.enumerate_l33t_subs(
        matching.relevant_l33t_subtable(password, matching.L33T_TABLE)
    )
    return password[: math.isqrt(JUDGE_BUDGET // (len(ways) + 1))]


def password_problems(
    password: str, *, username: str | None = None, emails: Iterable[str | None] = ()
) -> list[str]:
    """What is wrong with ``password`` for this user, as messages for the 422; none
    if it is good. ``emails``: the address in use and the one being set, if any.
    Judged as it is hashed (normalized): "password123" typed in full-width letters is
    "password123", and a password that normalizing makes shorter than MIN_LENGTH is
    too short."""
    password = _normalized(password)
    if len(password) < MIN_LENGTH:
        return [TOO_SHORT]
    words = _personal_words(username, emails)
    folded = password.casefold()
    if any(word in folded for word in words):
        return [CONTAINS_NAME]
    judged: list[Any] = []  # zxcvbn's results; a piece's guesses multiply the others'
    rest = password[:MAX_LENGTH]
    while rest and len(judged) < MAX_PIECES:
        piece = _judged(rest)
        judged.append(zxcvbn(piece, user_inputs=words, max_length=MAX_LENGTH))
        rest = rest[len(piece) :]
        if sum(result["guesses_log10"] for result in judged) >= MIN_GUESSES_LOG10:
            return []
    feedback = judged[0]["feedback"] if judged else {}
    messages = [TOO_WEAK]
    if feedback.get("warning"):
        messages.append(feedback["warning"])
    messages += feedback.get("suggestions") or []
    return messages


def check_password_quality(
    password: str,
    *,
    username: str | None = None,
    emails: Iterable[str | None] = (),
    field: str = "password",
) -> None:
    """Raise marshmallow's ValidationError on ``field`` if the password is refused
    (schemas raise it as it is; views turn it into a 422 with ``abort_weak``)."""
    problems = password_problems(password, username=username, emails=emails)
    if problems:
        raise ValidationError(problems, field)


# --- hashing and attempts ----------------------------------------------------


def init_passwords(app: Flask) -> None:
    """Argon2id for new hashes; pbkdf2_sha256 (older data) verifies and is upgraded."""
    app.extensions["passwords"] = CryptContext(
        schemes=["argon2", "pbkdf2_sha256"],
        deprecated=["pbkdf2_sha256"],
        argon2__type="ID",
        argon2__memory_cost=app.config["ARGON2_MEMORY_KIB"],
        argon2__rounds=app.config["ARGON2_TIME_COST"],
        argon2__parallelism=app.config["ARGON2_PARALLELISM"],
    )


def _passwords() -> CryptContext:
    context: CryptContext = current_app.extensions["passwords"]
    return context


def hash_password(password: str) -> str:
    return _passwords().hash(_normalized(password))


def check_password(user: User | None, password: str) -> bool:
    """Verify, upgrading an outdated hash in place (the caller commits).

    The password is checked normalized (NFKC); one that normalizing changes is also
    checked as sent, against a hash made before passwords were normalized, and that
    hash is then made again from the normalized form. An unknown user costs the same
    verifications, so that timing does not tell which usernames exist.
    """
    normalized = _normalized(password)
    tries = [normalized] if normalized == password else [normalized, password]
    if user is None:
        for _ in tries:
            _passwords().dummy_verify()
        return False
    for tried in tries:
        ok, new_hash = _passwords().verify_and_update(tried, user.password_hash)
        if ok:
            if tried != normalized:  # a hash of it as sent, made again normalized
                new_hash = hash_password(password)
            if new_hash:
                user.password_hash = new_hash
            return True
    return False


def _auth_rate_limit() -> str:
    limit: str = current_app.config["AUTH_RATE_LIMIT"]
    return limit


def password_attempts(**options: Any) -> RouteLimit:
    """Every place a password is checked against an account (``/login``, and the
    ``current_password`` of an account change) draws on one budget per client,
    AUTH_RATE_LIMIT: guessing through one does not dodge the other's limit. It counts
    per client address even when signed in (/login never is), so that the two share it."""
    return limiter.shared_limit(
        _auth_rate_limit, scope="password", key_func=client_address, **options
    )


def client_address() -> str:
    return f"ip:{request.remote_addr}"


def auth_rate_limit() -> RouteLimit:
    """AUTH_RATE_LIMIT for one endpoint (``/register``) on its own."""
    return limiter.limit(_auth_rate_limit)
