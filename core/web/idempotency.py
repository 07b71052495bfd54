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

A key is scoped to its caller, the user of a valid access token or else the client
IP: two users' equal keys are two keys.
"""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal
from typing import Any

from apispec import BasePlugin
from flask import Flask, Response, current_app, g, request
from flask_jwt_extended import decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt import PyJWTError

from core.web.errors import abort
from core.web.replay_stores import Answer, DatabaseStore, RedisStore, ReplayStore

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
KEY = re.compile(r"[\x21-\x7e]{1,255}")  # 1 to 255 visible ASCII characters
EXEMPT_PATHS = ("/login", "/refresh", "/logout")
KEPT_HEADERS = ("Content-Type", "Location", "ETag")
RETRY_AFTER = "1"  # seconds: most requests are done by then


def remembered(status: int) -> bool:
    """Answers a retry gets again: success, and what the view decided about the
    resource (404, 409, 410, 412). Refusals a retry may overcome run afresh: a bad
    request or body (400, 413, 415, 422), credentials (401, 403), the rate limit
    (429) and server errors (5xx)."""
    return status < 400 or status in (404, 409, 410, 412)


def get_store() -> ReplayStore:
    store: ReplayStore = current_app.extensions["idempotency"]
    return store


def _scope() -> str:
    """Whose key it is: the user of a valid access token, else the client address.
    (An invalid token is refused by the view, and a 401 is not remembered.)"""
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        try:
            claims = decode_token(authorization[len("Bearer ") :])
        except (PyJWTError, JWTExtendedException):
            claims = {}
        if claims.get("type") == "access":
            # The user's token key too: a user id alone could name another user on a
            # recreated database that shares the same Redis.
            return f"user:{claims['sub']}:{claims.get('user_key')}"
    return f"ip:{request.remote_addr}"


def _fingerprint() -> str:
    """The request a key was first sent with: method, path and body. A JSON body
    counts by its meaning (key order and spacing aside)."""
    raw = request.get_data(cache=True)
    try:
        body = json.dumps(
            json.loads(raw, parse_float=Decimal), sort_keys=True, separators=(",", ":"), default=str
        )
    except (ValueError, RecursionError):
        body = raw.decode("latin-1")
    text = f"{request.method}\n{request.full_path}\n{body}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


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
    key = hashlib.sha256(f"{_scope()}\n{sent}".encode()).hexdigest()
    fingerprint = _fingerprint()
    config = current_app.config
    found = get_store().claim(key, fingerprint, config["IDEMPOTENCY_LOCK_SECONDS"])
    if found is None:
        g.idempotency = (key, fingerprint)
        return None
    if found.fingerprint != fingerprint:
        abort(
            422,
            message=f"This {HEADER} was used for another request (another body or path); "
            "use a new key for a new request.",
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
    key, fingerprint = claimed
    if remembered(response.status_code):
        kept = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
        answer = Answer(fingerprint, response.status_code, response.get_data(as_text=True), kept)
        get_store().finish(key, answer, current_app.config["IDEMPOTENCY_TTL"])
    else:
        get_store().release(key)
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
