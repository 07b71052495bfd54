"""Password quality (API.md §15): long enough and hard to guess, not composed by rule.

NIST SP 800-63B: 8 to 128 characters (the field, core/web/fields.py ``Password``),
no composition rules, but a check against what an attacker tries first. zxcvbn
estimates the guesses a password needs from dictionaries, keyboard patterns, dates
and repeats; a score below 3 ("safely unguessable: moderate protection from an
offline attack") is refused with zxcvbn's own feedback. So is a password that
contains the username or the local part of the email address, in any case.

Applies where a password is chosen: /register, a password change, a reset.
``flask create-admin`` only warns. Existing hashes are never re-judged: a user keeps
their password until they change it.
"""

from __future__ import annotations

from collections.abc import Iterable

from marshmallow import ValidationError
from zxcvbn import zxcvbn

MIN_SCORE = 3
MAX_LENGTH = 128  # the field's own limit; zxcvbn's default stops at 72
TOO_WEAK = "This password is too easy to guess."
MIN_PERSONAL = 3  # the shortest username; shorter local parts are not searched for
CONTAINS_NAME = "A password must not contain your username or email address."


def _personal_words(username: str | None, emails: Iterable[str | None]) -> list[str]:
    words = [username] if username else []
    words += [email.rpartition("@")[0] for email in emails if email]
    # Shorter words (a local part "jo") would forbid half the dictionary; zxcvbn
    # still counts them as known words.
    return [word.casefold() for word in words if len(word) >= MIN_PERSONAL]


def password_problems(
    password: str, *, username: str | None = None, emails: Iterable[str | None] = ()
) -> list[str]:
    """What is wrong with ``password`` for this user, as messages for the 422; none
    if it is good. ``emails``: the address in use and the one being set, if any."""
    words = _personal_words(username, emails)
    folded = password.casefold()
    if any(word in folded for word in words):
        return [CONTAINS_NAME]
    result = zxcvbn(password[:MAX_LENGTH], user_inputs=words, max_length=MAX_LENGTH)
    if result["score"] >= MIN_SCORE:
        return []
    feedback = result["feedback"]
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
