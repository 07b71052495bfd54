"""Forged tokens are refused for their forgery alone.

Each forgery starts from a real token's claims (``sub``, ``sid``, ``jti``,
``user_key``, ``type``, ``fresh``, ``iat``, ``nbf``, ``exp``), so that nothing but the
forged part can be why it fails: a service that stopped checking signatures, or
accepted another algorithm, would answer 200 here. The control re-signs the same
claims properly and must be accepted.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from flask import Flask

from helpers import Client, assert_error, bearer, snapshot
from models import User

SESSION_CLAIMS = {"sub", "sid", "jti", "user_key", "type", "fresh", "iat", "nbf", "exp"}


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def real(app: Flask, alice: User, login: Callable[..., dict[str, Any]]) -> Any:
    """A real fresh access token's claims, and the service's signing key."""
    token = login(alice)["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) >= SESSION_CLAIMS
    assert claims["user_key"] and claims["fresh"] is True
    return claims, app.config["JWT_SECRET_KEY"]


def sign(claims: dict[str, Any], key: str, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def forge(kind: str, claims: dict[str, Any], key: str) -> str:
    now = int(time.time())
    if kind == "wrong key":
        return sign(claims, "x" * 64)
    if kind == "alg none":
        return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    if kind == "alg none, real signature":
        _, _, signature = sign(claims, key).split(".")
        return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.{signature}"
    if kind in ("HS384", "HS512"):
        return sign(claims, key, kind)
    if kind == "claims changed after signing":
        header, _, signature = sign(claims, key).split(".")
        return f"{header}.{b64(claims | {'sub': str(int(claims['sub']) + 1)})}.{signature}"
    if kind == "no signature":
        header, payload, _ = sign(claims, key).split(".")
        return f"{header}.{payload}."
    if kind == "not yet valid":
        return sign(claims | {"nbf": now + 3600, "iat": now, "exp": now + 7200}, key)
    if kind == "issued in the future":
        return sign(claims | {"iat": now + 3600, "nbf": now, "exp": now + 7200}, key)
    if kind == "expired":
        return sign(claims | {"iat": now - 7200, "nbf": now - 7200, "exp": now - 60}, key)
    raise AssertionError(kind)


FORGERIES = {
    "wrong key": "invalid_token",
    "alg none": "invalid_token",
    "alg none, real signature": "invalid_token",
    "HS384": "invalid_token",
    "HS512": "invalid_token",
    "claims changed after signing": "invalid_token",
    "no signature": "invalid_token",
    "not yet valid": "invalid_token",
    "issued in the future": "invalid_token",
    "expired": "token_expired",
}


def test_the_control_is_accepted(client: Client, alice: User, real: Any) -> None:
    """The same claims, signed as the service signs them, pass: so each forgery
    below fails for its forgery and nothing else."""
    claims, key = real
    response = client.get("/users/me", headers=bearer(sign(claims, key)))
    assert response.status_code == 200
    assert response.json["id"] == alice.id


@pytest.mark.parametrize("kind", FORGERIES)
def test_a_forged_token_is_refused(
    app: Flask, client: Client, alice: User, bob: User, real: Any, kind: Any
) -> None:
    claims, key = real
    headers = bearer(forge(kind, claims, key))
    before = snapshot(app)
    for response in (
        client.get("/users/me", headers=headers),
        client.get(f"/users/{bob.id}", headers=headers),
        client.post("/stores", json={"name": "Forged"}, headers=headers),
        client.patch(f"/users/{alice.id}", json={"email": "x@example.com"}, headers=headers),
        client.post("/logout", headers=headers),
    ):
        body = assert_error(response, 401, error=FORGERIES[kind])
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert set(body) == {"code", "status", "message", "error"}
    assert snapshot(app) == before


@pytest.mark.parametrize("kind", ["wrong key", "HS512", "alg none", "expired"])
def test_a_forged_refresh_token_gets_no_tokens(
    app: Flask, client: Client, alice: User, login: Callable[..., dict[str, Any]], kind: Any
) -> None:
    token = login(alice)["refresh_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["type"] == "refresh" and set(claims) >= SESSION_CLAIMS - {"fresh"}
    forged = forge(kind, claims, app.config["JWT_SECRET_KEY"])
    response = client.post("/refresh", headers=bearer(forged))
    assert_error(response, 401, error=FORGERIES[kind])
    assert "access_token" not in response.json
    # The real refresh token was not rotated by the attempt.
    assert client.post("/refresh", headers=bearer(token)).status_code == 200
