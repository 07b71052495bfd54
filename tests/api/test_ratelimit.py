"""Brute-force protection on /login and /register, and the global default."""

from typing import Any

import pytest
from flask import Flask

from core.web.config import DevelopmentConfig, ProductionConfig
from core.web.extensions import limiter
from helpers import PASSWORD, Client, assert_error
from models import User

CONTRACT_LIMIT = "5 per minute;20 per hour"
# What a deployment gets when it sets no AUTH_RATE_LIMIT: the tests below use it, not
# a copy of the contract's text, so a looser shipped default fails them.
SHIPPED = ProductionConfig({}).AUTH_RATE_LIMIT


def attempt(client: Client, headers: Any = None) -> Any:
    return client.post(
        "/login", json={"username": "alice", "password": "wrong password"}, headers=headers
    )


@pytest.mark.config(AUTH_RATE_LIMIT=SHIPPED)
def test_the_sixth_login_in_a_minute_is_refused(client: Client, alice: User) -> None:
    for n in range(5):
        response = attempt(client)
        assert response.status_code == 401
        assert response.headers["X-RateLimit-Limit"] == "5"
        assert response.headers["X-RateLimit-Remaining"] == str(4 - n)
    refused = attempt(client)
    body = assert_error(refused, 429)
    assert "5 per 1 minute" in body["message"]
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.headers["X-Request-ID"]
    # Even the right password is refused now.
    assert_error(
        client.post("/login", json={"username": "alice", "password": "correct horse battery"}), 429
    )


def test_development_ships_the_same_default() -> None:
    assert DevelopmentConfig({}).AUTH_RATE_LIMIT == SHIPPED


def a_minute_passes(app: Flask) -> None:
    """The per-minute windows end, as a minute would end them; the hourly ones stay.
    The limiter's own storage (memory), its public ``clear``; no clock is faked."""
    storage: Any = limiter.storage
    for key in list(storage.storage):
        if key.endswith("/1/minute"):
            storage.clear(key)


@pytest.mark.config(AUTH_RATE_LIMIT=SHIPPED, RATELIMIT_STORAGE_URI="memory://")
def test_the_shipped_default_refuses_the_twenty_first_login_in_an_hour(
    app: Flask, client: Client, alice: User
) -> None:
    for _minute in range(4):
        for _ in range(5):
            assert attempt(client).status_code == 401
        refusal = assert_error(attempt(client), 429)
        assert "5 per 1 minute" in refusal["message"]
        a_minute_passes(app)
    # A fifth minute: its window is fresh, but the hour's 20 are spent.
    refusal = assert_error(attempt(client), 429)
    assert "20 per 1 hour" in refusal["message"]


@pytest.mark.config(AUTH_RATE_LIMIT=SHIPPED)
def test_register_has_its_own_budget(client: Client) -> None:
    for n in range(5):
        body = {"username": f"user{n}", "email": f"u{n}@example.com", "password": PASSWORD}
        assert client.post("/register", json=body).status_code == 201
    body = {"username": "user9", "email": "u9@example.com", "password": PASSWORD}
    assert_error(client.post("/register", json=body), 429)
    assert attempt(client).status_code == 401  # /login counts separately


@pytest.mark.config(AUTH_RATE_LIMIT="2 per minute", TRUSTED_PROXIES=1)
def test_behind_a_trusted_proxy_each_client_has_its_own_budget(client: Client) -> None:
    one, two = {"X-Forwarded-For": "203.0.113.1"}, {"X-Forwarded-For": "203.0.113.2"}
    assert attempt(client, one).status_code == 401
    assert attempt(client, one).status_code == 401
    assert_error(attempt(client, one), 429)
    assert attempt(client, two).status_code == 401


@pytest.mark.config(AUTH_RATE_LIMIT="2 per minute")
def test_without_trusted_proxies_forwarded_for_cannot_dodge_the_limit(client: Client) -> None:
    for n in range(2):
        assert attempt(client, {"X-Forwarded-For": f"203.0.113.{n}"}).status_code == 401
    assert_error(attempt(client, {"X-Forwarded-For": "203.0.113.99"}), 429)


@pytest.mark.config(RATE_LIMIT_DEFAULT="3 per minute")
def test_a_global_default_applies_to_every_endpoint_but_probes(client: Client) -> None:
    for _ in range(3):
        assert client.get("/stores").status_code == 200
    assert_error(client.get("/stores"), 429)
    for _ in range(5):
        assert client.get("/health").status_code == 200


@pytest.mark.config(RATE_LIMIT_DEFAULT="3 per minute")
def test_unmatched_paths_are_limited_too(client: Client) -> None:
    """404s and 405s share one budget per client, whatever the path."""
    for path in ("/nope", "/item/abc", "/stores/0"):
        response = client.get(path)
        assert_error(response, 404)
        assert response.headers["X-RateLimit-Limit"] == "3"
    refused = client.get("/another/path")
    body = assert_error(refused, 429)
    assert "3 per 1 minute" in body["message"]
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert_error(client.delete("/stores"), 429)  # a 405 is in the same budget
    assert client.get("/stores").status_code == 200  # a real endpoint has its own
    assert client.get("/health").status_code == 200


@pytest.mark.config(RATE_LIMIT_DEFAULT="2 per minute", TRUSTED_PROXIES=1)
def test_unmatched_paths_are_limited_per_client(client: Client) -> None:
    one, two = {"X-Forwarded-For": "203.0.113.1"}, {"X-Forwarded-For": "203.0.113.2"}
    for _ in range(2):
        assert_error(client.get("/nope", headers=one), 404)
    assert_error(client.get("/nope", headers=one), 429)
    assert_error(client.get("/nope", headers=two), 404)
