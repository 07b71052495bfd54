"""Idempotent retries (§8), on both stores: the database, and Redis when REDIS_URL is set."""

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from core.web.idempotency import claim
from core.web.replay_stores import DatabaseStore, RedisStore
from helpers import (
    REDIS_URL,
    CatalogFactory,
    Client,
    assert_error,
    drop_redis_keys,
    query,
    snapshot,
)
from models import IdempotencyKey, Item, StockMovement, User


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def app(request: Any, app: Flask) -> Iterator[Any]:
    """The app with each store in turn (Redis under a prefix of its own)."""
    if request.param == "database":
        app.extensions["idempotency"] = DatabaseStore()
        yield app
        return
    prefix = f"stores_test_{uuid.uuid4().hex[:12]}"
    app.extensions["idempotency"] = RedisStore(REDIS_URL, prefix)
    yield app
    drop_redis_keys(prefix)


@pytest.fixture
def item(api: CatalogFactory, as_alice: dict[str, str]) -> Any:
    return api.item(as_alice, api.store(as_alice), stock=5)


# Expiry by the clock is the database store's; Redis expires keys by TTL (>= 1 s).
database_only = pytest.mark.parametrize("app", ["database"], indirect=True)


def keyed(headers: Any, key: Any = "retry-1") -> Any:
    return headers | {"Idempotency-Key": key}


def movements(app: Flask, item: Any) -> Any:
    return query(app, select(func.count()).where(StockMovement.item_id == item["id"]))[0][0]


def sale(client: Client, headers: Any, item: Any, delta: Any = -1) -> Any:
    return client.post(
        f"/items/{item['id']}/stock", json={"delta": delta, "reason": "sale"}, headers=headers
    )


class TestReplay:
    def test_a_retry_gets_the_first_answer_and_nothing_twice(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        first = sale(client, keyed(as_alice), item)
        assert first.status_code == 201
        assert "Idempotent-Replayed" not in first.headers
        again = sale(client, keyed(as_alice), item)
        assert again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json == first.json
        assert again.headers["Location"] == first.headers["Location"]
        assert again.mimetype == "application/json"
        assert movements(app, item) == 2  # the initial count and one sale
        assert client.get(f"/items/{item['id']}").json["stock"] == 4

    def test_a_create_is_not_repeated(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        body = {"name": "Tea", "price": "2.00", "store_id": item["store_id"]}
        first = client.post("/items", json=body, headers=keyed(as_alice))
        # The same meaning in other bytes (key order, spacing) is the same request.
        again = client.post(
            "/items",
            data=f'{{"store_id": {item["store_id"]}, "price": "2.00",   "name": "Tea"}}',
            content_type="application/json",
            headers=keyed(as_alice),
        )
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json == first.json and again.headers["Location"] == first.headers["Location"]
        assert query(app, select(func.count()).where(Item.name == "Tea")) == [(1,)]

    def test_a_decided_conflict_is_remembered(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        refused = sale(client, keyed(as_alice), item, delta=-9)
        assert_error(refused, 409, error="insufficient_stock")
        client.post(
            f"/items/{item['id']}/stock", json={"delta": 10, "reason": "received"}, headers=as_alice
        )
        again = sale(client, keyed(as_alice), item, delta=-9)
        assert_error(again, 409, error="insufficient_stock")
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json == refused.json

    def test_other_callers_keys_are_other_keys(
        self,
        app: Flask,
        client: Client,
        auth: Callable[[User], dict[str, str]],
        admin: User,
        as_alice: dict[str, str],
        item: Any,
    ) -> None:
        assert sale(client, keyed(as_alice), item).status_code == 201
        theirs = sale(client, keyed(auth(admin)), item)
        assert theirs.status_code == 201 and "Idempotent-Replayed" not in theirs.headers
        assert movements(app, item) == 3

    def test_without_a_key_every_post_runs(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        sale(client, as_alice, item)
        sale(client, as_alice, item)
        assert movements(app, item) == 3


class TestReuse:
    def test_another_body_is_refused(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        sale(client, keyed(as_alice), item)
        before = snapshot(app)
        response = sale(client, keyed(as_alice), item, delta=-2)
        assert_error(response, 422, error="idempotency_key_reused")
        assert snapshot(app) == before

    def test_another_path_is_refused(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        sale(client, keyed(as_alice), item)
        before = snapshot(app)
        response = client.post(
            f"/stores/{item['store_id']}/tags", json={"name": "x"}, headers=keyed(as_alice)
        )
        assert_error(response, 422, error="idempotency_key_reused")
        assert snapshot(app) == before


class TestNotRemembered:
    @pytest.mark.parametrize(
        ("body", "status"), [({"delta": 0, "reason": "sale"}, 422), ({"delta": "x"}, 422)]
    )
    def test_a_refused_body_lets_a_corrected_retry_run(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        item: Any,
        body: Any,
        status: Any,
    ) -> None:
        response = client.post(f"/items/{item['id']}/stock", json=body, headers=keyed(as_alice))
        assert_error(response, status)
        assert sale(client, keyed(as_alice), item).status_code == 201
        assert movements(app, item) == 2

    def test_credentials_are_not_remembered(
        self,
        app: Flask,
        client: Client,
        auth: Callable[[User], dict[str, str]],
        bob: User,
        as_alice: dict[str, str],
        item: Any,
    ) -> None:
        assert_error(sale(client, keyed(auth(bob)), item), 403)
        assert_error(sale(client, keyed({}), item), 401)
        assert_error(sale(client, keyed({"Authorization": "Bearer nonsense"}), item), 401)
        assert sale(client, keyed(as_alice), item).status_code == 201

    def test_tokens_are_never_replayed(self, app: Flask, client: Client, alice: User) -> None:
        body = {"username": "alice", "password": "correct horse battery"}
        first = client.post("/login", json=body, headers={"Idempotency-Key": "k"})
        second = client.post("/login", json=body, headers={"Idempotency-Key": "k"})
        assert (first.status_code, second.status_code) == (200, 200)
        assert "Idempotent-Replayed" not in second.headers
        assert first.json["access_token"] != second.json["access_token"]


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "space here", "caf\u00e9"])
def test_a_bad_key_is_refused_and_changes_nothing(
    app: Flask, client: Client, as_alice: dict[str, str], item: Any, key: Any
) -> None:
    before = snapshot(app)
    response = sale(client, as_alice | {"Idempotency-Key": key}, item)
    body = assert_error(response, 422)
    assert "Idempotency-Key" in body["errors"]["headers"]
    assert snapshot(app) == before


def test_a_key_of_255_visible_characters_is_fine(
    client: Client, as_alice: dict[str, str], item: Any
) -> None:
    assert sale(client, keyed(as_alice, "~" * 255), item).status_code == 201


def start_elsewhere(app: Flask, as_alice: dict[str, str], item: Any, key: Any = "retry-1") -> None:
    """The same request, claimed as if another worker were still running it."""
    path = f"/items/{item['id']}/stock"
    with app.test_request_context(
        path, method="POST", json={"delta": -1, "reason": "sale"}, headers=keyed(as_alice, key)
    ):
        assert claim() is None


class TestInProgress:
    def test_a_concurrent_twin_is_told_to_retry(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        start_elsewhere(app, as_alice, item)
        before = snapshot(app)
        response = sale(client, keyed(as_alice), item)
        assert_error(response, 409, error="idempotency_key_in_use")
        assert response.headers["Retry-After"] == "1"
        assert snapshot(app) == before

    @database_only
    @pytest.mark.config(IDEMPOTENCY_LOCK_SECONDS=0)
    def test_an_abandoned_claim_is_taken_over(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        start_elsewhere(app, as_alice, item)
        assert sale(client, keyed(as_alice), item).status_code == 201


@database_only
@pytest.mark.config(IDEMPOTENCY_TTL=0)
def test_answers_expire_and_are_purged(
    app: Flask, client: Client, as_alice: dict[str, str], item: Any
) -> None:
    sale(client, keyed(as_alice), item)
    again = sale(client, keyed(as_alice), item)
    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
    assert movements(app, item) == 3
    sale(client, keyed(as_alice, "another"), item)
    result = app.test_cli_runner().invoke(args=["idempotency", "purge"])
    assert result.exit_code == 0
    assert "Purged 1 expired keys." in result.output
    assert query(app, select(IdempotencyKey.key)) == []


def test_every_post_documents_the_header(client: Client) -> None:
    spec = client.get("/openapi.json").json
    for path, operations in spec["paths"].items():
        if "post" not in operations:
            continue
        names = [p.get("name") for p in operations["post"].get("parameters", [])]
        expected = path not in ("/login", "/refresh", "/logout")
        assert ("Idempotency-Key" in names) == expected, path
