"""Idempotent retries (contract §8): a POST sent again with the same
``Idempotency-Key`` gets the first answer again instead of being done twice.

One pair of request hooks serves every POST but /login, /refresh and /logout (whose
tokens are never stored). Before the view, the key is *claimed* atomically (an
INSERT on a primary key, or Redis ``SET NX``; core/web/replay_stores.py): the one
request that claims it runs; a concurrent twin gets 409 ``idempotency_key_in_use``
with Retry-After; a later retry gets the recorded answer with
``Idempotent-Replayed: true``; the key sent with another body or path gets 422
``idempotency_key_reused``. After the view, the answer is recorded for
IDEMPOTENCY_TTL seconds, or the claim is let go when a retry should run afresh
(``remembered``). A claim whose worker died is abandoned after
IDEMPOTENCY_LOCK_SECONDS (longer than gunicorn lets a request run), then taken over.

A key belongs to the caller the request's own token verification establishes
(core/auth/security.py ``caller_scope``): the user (any of their sessions and API
keys, §16), or else the client IP. A replay is given without the view, so without its
checks: only the credential that made the first request may have it (a key bound to
one store never gets its owner's answer for another store, nor that webhook's
secret). The same key and body from another credential of the same user is a 422
``idempotency_key_reused``: the key is taken, and nothing is done twice. Each caller
may store IDEMPOTENCY_QUOTA_KEYS keys and IDEMPOTENCY_QUOTA_BYTES of answers
a UTC day (then 429 ``idempotency_quota``); an answer over
IDEMPOTENCY_MAX_ANSWER_BYTES is not kept (a retry runs afresh).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from typing import Any

from apispec import BasePlugin
from flask import Flask, Response, current_app, g, request

from core.auth.security import api_key, caller_scope
from core.web.body import MalformedBodyError, json_body
from core.web.errors import abort
from core.web.replay_stores import DAY, Answer, DatabaseStore, RedisStore, ReplayStore
from models.types import utcnow

log = logging.getLogger("stores.idempotency")

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
KEY = re.compile(r"[\x21-\x7e]{1,255}")  # 1 to 255 visible ASCII characters
# Answers that hold a secret the service keeps nowhere else (tokens; a new API key,
# stored only as a hash): never stored, never replayed; the header is ignored there.
# (A new webhook's answer is kept like any other: its signing secret is in the
# webhooks table anyway, as signing needs it.)
EXEMPT_PATHS = ("/login", "/refresh", "/logout", "/api-keys")
KEPT_HEADERS = ("Content-Type", "Location", "ETag")
RETRY_AFTER = "1"  # seconds: most requests are done by then


def remembered(status: int) -> bool:
    """Answers a retry gets again: success, and what the view decided about the
    resource (404, 409, 410, 412, and a 422 of its own). Refusals a retry may overcome
    run afresh: a bad request or body (400, 413, 415, a 422 found before the view:
    core/web/errors.py ``refused_early``), credentials (401, 403), the rate limit (429)
    and server errors (5xx)."""
    if status == 422:
        return not g.get("refused_early", False)
    return status < 400 or status in (404, 409, 410, 412)


def get_store() -> ReplayStore:
    store: ReplayStore = current_app.extensions["idempotency"]
    return store


def _secret() -> bytes:
    """The fingerprint's HMAC key: IDEMPOTENCY_SECRET, else derived from the JWT
    secret (never the JWT secret itself)."""
    config = current_app.config
    configured: str = config.get("IDEMPOTENCY_SECRET") or ""
    if configured:
        return configured.encode()
    return hashlib.sha256(f"idempotency\n{config['JWT_SECRET_KEY']}".encode()).digest()


def fingerprint(credential: str = "") -> str:
    """The request a key was first sent with: the credential that sent it, method, path
    and body, as an HMAC with a server-side key, so that a stored fingerprint does not
    let anyone test guesses of a body (a password sent to /register). A JSON body
    counts by its meaning (key order and spacing aside)."""
    try:
        body = json.dumps(json_body(), sort_keys=True, separators=(",", ":"), default=str)
    except MalformedBodyError as exc:
        body = exc.text
    text = f"{credential}\n{request.method}\n{request.full_path}\n{body}"
    return hmac.new(_secret(), text.encode("utf-8", "surrogatepass"), "sha256").hexdigest()


def _seconds_to_midnight() -> int:
    now = utcnow()
    return max(1, DAY - (now.hour * 3600 + now.minute * 60 + now.second))


def _refuse_over_quota(key: str, token: str, owner: str) -> None:
    """429 ``idempotency_quota`` when a new key (just claimed, so counted) takes the
    caller past today's allowance; the claim is let go. Replays are not new keys."""
    config = current_app.config
    usage = get_store().usage(owner)
    if usage.keys > config["IDEMPOTENCY_QUOTA_KEYS"] or (
        usage.size >= config["IDEMPOTENCY_QUOTA_BYTES"]
    ):
        get_store().release(key, token)
        g.retry_after = str(_seconds_to_midnight())
        abort(
            429,
            message=f"Too many {HEADER}s today ({usage.keys} keys, {usage.size} bytes of "
            "answers kept): send requests without the header, or retry after midnight UTC.",
            error="idempotency_quota",
        )


def claim() -> Response | None:
    """Before the view: claim the key, or answer for it."""
    sent = request.headers.get(HEADER)
    if sent is None or request.method != "POST" or request.endpoint is None:
        return None
    if request.path in EXEMPT_PATHS:
        return None
    if not KEY.fullmatch(sent):
        message = "Must be 1 to 255 visible ASCII characters."
        abort(422, message=f"Invalid {HEADER}.", errors={"headers": {HEADER: [message]}})
    # The caller as the request's own token verification establishes it (a bad or
    # revoked token: 401 here, before any replay); the view reuses that verification.
    # The key is the user's (§16), the answer the credential's: an API key may do less
    # than its owner (scopes are checked before this, a store binding only in the
    # view), so it never gets the owner's answers, nor another key's: the credential
    # is part of the fingerprint, and another one's request is "another request".
    scope = caller_scope()
    key_used = api_key()
    credential = "" if key_used is None else f"api_key:{key_used['id']}"
    key = hashlib.sha256(f"{scope}\n{sent}".encode()).hexdigest()
    owner = hashlib.sha256(scope.encode()).hexdigest()  # the quota: the user's
    sent_as = fingerprint(credential)
    lock_seconds = current_app.config["IDEMPOTENCY_LOCK_SECONDS"]
    found = get_store().claim(key, owner, sent_as, lock_seconds)
    if isinstance(found, str):
        _refuse_over_quota(key, found, owner)
        g.idempotency = (key, found, sent_as)
        return None
    if found.fingerprint != sent_as:
        abort(
            422,
            message=f"This {HEADER} was used for another request (another body or path, "
            "or sent with another of your credentials: your sign-in or one of your API "
            "keys); use a new key for a new request.",
            error="idempotency_key_reused",
        )
    if found.status is None:
        g.retry_after = RETRY_AFTER
        abort(
            409,
            message=f"A request with this {HEADER} is still running; retry shortly.",
            error="idempotency_key_in_use",
        )
    response = current_app.response_class(found.body, status=found.status, headers=found.headers)
    response.headers[REPLAYED] = "true"
    return response


def record(response: Response) -> Response:
    """After the view: keep its answer for retries, or let go of the key."""
    claimed = g.pop("idempotency", None)
    if claimed is None:
        return response
    key, token, sent_as = claimed
    body = response.get_data(as_text=True)
    size = len(body.encode())
    too_large = size > current_app.config["IDEMPOTENCY_MAX_ANSWER_BYTES"]
    if too_large:
        log.warning("answer of %d bytes not kept for retries", size, extra={"event": "idempotency"})
    if remembered(response.status_code) and not too_large:
        kept = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
        answer = Answer(sent_as, response.status_code, body, kept)
        get_store().finish(key, token, answer, current_app.config["IDEMPOTENCY_TTL"])
    else:
        get_store().release(key, token)
    return response


PARAMETER = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "description": "Retry safely: the same key and body within 24 hours get the first answer "
    f"again (with `{REPLAYED}: true`), and nothing is done twice. 1-255 visible ASCII "
    "characters, scoped to the caller. The same key with another body or path: 422 "
    "`idempotency_key_reused`; while the first request runs: 409 `idempotency_key_in_use`.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}


class IdempotencyDoc(BasePlugin):
    """Documents the header, and the answers it adds, on every POST it applies to."""

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **_kwargs: Any
    ) -> None:
        post = (operations or {}).get("post")
        if post is None or path in EXEMPT_PATHS:
            return
        post.setdefault("parameters", []).append(PARAMETER)
        responses = post.setdefault("responses", {})
        for status, name in ((409, "CONFLICT"), (422, "UNPROCESSABLE_ENTITY")):
            if status not in responses and str(status) not in responses:
                responses[status] = name


def init_app(app: Flask) -> None:
    """Call after the rate limiter: a request it refuses never claims a key."""
    url = app.config.get("REDIS_URL")
    app.extensions["idempotency"] = (
        RedisStore(url, app.config["REDIS_KEY_PREFIX"]) if url else DatabaseStore()
    )
    app.before_request(claim)
    app.after_request(record)
