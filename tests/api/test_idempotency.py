"""Idempotent retries (§8), on both stores: the database, and Redis when REDIS_URL is set."""

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, cast

import pytest
from flask import Flask, g
from sqlalchemy import func, select

import core.web.body as body_module
from blocklist import DatabaseBlocklist
from core.web.idempotency import claim, fingerprint
from core.web.replay_stores import Answer, DatabaseStore, RedisStore
from db import db
from helpers import (
    REDIS_URL,
    CatalogFactory,
    Client,
    assert_error,
    bearer,
    count_queries,
    drop_redis_keys,
    query,
    snapshot,
)
from models import IdempotencyKey, Item, StockMovement, User
from models.types import utcnow


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

    def test_a_422_the_handler_decides_is_remembered_one_of_the_schema_is_not(
        self,
        client: Client,
        api: CatalogFactory,
        as_alice: dict[str, str],
        item: Any,
    ) -> None:
        """§8: a 4xx decided by the handler is kept (a batch naming another store's
        item: the handler looked it up); a 422 refused before the handler (by the
        body's schema) is not: the same body runs afresh."""
        other = api.store(as_alice, "Other")
        path = f"/stores/{other['id']}/items/batch"
        body = {"update": [{"id": item["id"], "price": 3}]}  # the item is another store's
        first = client.post(path, json=body, headers=keyed(as_alice, "batch-1"))
        assert_error(first, 422)
        assert "update" in first.json["errors"]["json"]
        again = client.post(path, json=body, headers=keyed(as_alice, "batch-1"))
        assert again.headers["Idempotent-Replayed"] == "true" and again.json == first.json
        bad = {"update": [{"id": item["id"], "price": "x"}]}
        for _ in range(2):
            refused = client.post(path, json=bad, headers=keyed(as_alice, "batch-2"))
            assert_error(refused, 422)
            assert "Idempotent-Replayed" not in refused.headers

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

    def test_the_same_endpoint_on_another_item_is_refused(
        self, app: Flask, client: Client, api: CatalogFactory, as_alice: dict[str, str], item: Any
    ) -> None:
        other = api.item(as_alice, {"id": item["store_id"]}, name="Tea")
        sale(client, keyed(as_alice), item)
        before = snapshot(app)
        response = sale(client, keyed(as_alice), other)
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
        refresh = first.json["refresh_token"]
        renewed = client.post("/refresh", headers=keyed(bearer(refresh), "r"))
        assert renewed.status_code == 200
        reused = client.post("/refresh", headers=keyed(bearer(refresh), "r"))
        assert_error(reused, 401, error="token_revoked")  # rotated: run again, not replayed
        access = bearer(second.json["access_token"])
        assert client.post("/logout", headers=keyed(access, "o")).status_code == 200
        again = client.post("/logout", headers=keyed(access, "o"))
        assert_error(again, 401, error="token_revoked")
        assert stored_fingerprints(app) == []


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


def start_elsewhere(
    app: Flask, as_alice: dict[str, str], item: Any, key: str = "retry-1"
) -> tuple[str, str, str]:
    """The same request, claimed as if another worker were still running it; its
    claim (store key, claim token, fingerprint)."""
    path = f"/items/{item['id']}/stock"
    with app.test_request_context(
        path, method="POST", json={"delta": -1, "reason": "sale"}, headers=keyed(as_alice, key)
    ):
        assert claim() is None
        started: tuple[str, str, str] = g.idempotency
        return started


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
    def test_a_claim_is_abandoned_after_a_minute_and_taken_over(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        start_elsewhere(app, as_alice, item)
        assert_error(sale(client, keyed(as_alice), item), 409, error="idempotency_key_in_use")
        # 61 seconds later (IDEMPOTENCY_LOCK_SECONDS is 60: longer than a request runs).
        with app.app_context():
            row = db.session.scalars(select(IdempotencyKey)).one()
            row.created_at -= timedelta(seconds=61)
            row.expires_at -= timedelta(seconds=61)
            db.session.commit()
        taken_over = sale(client, keyed(as_alice), item)
        assert taken_over.status_code == 201 and "Idempotent-Replayed" not in taken_over.headers
        assert movements(app, item) == 2

    @pytest.mark.redis
    @pytest.mark.parametrize("app", ["redis"], indirect=True)
    def test_a_redis_claim_expires_after_a_minute(
        self, app: Flask, as_alice: dict[str, str], item: Any
    ) -> None:
        key, _token, _fingerprint = start_elsewhere(app, as_alice, item)
        store = app.extensions["idempotency"]
        assert 55 <= store.redis.ttl(store.prefix + key) <= 60

    @pytest.mark.config(IDEMPOTENCY_LOCK_SECONDS=1)
    def test_a_late_original_cannot_overwrite_the_takeovers_answer(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        key, token, sent_as = start_elsewhere(app, as_alice, item)
        store = app.extensions["idempotency"]
        wait_until_claim_expires(app, store, key)
        # The takeover's own claim must outlast its request however slow the machine
        # (a Redis claim of 1 s expired under a sale that took longer: nothing was
        # recorded, and the retry ran afresh).
        app.config["IDEMPOTENCY_LOCK_SECONDS"] = 60
        taken_over = sale(client, keyed(as_alice), item)
        assert taken_over.status_code == 201
        with app.app_context():  # the original worker wakes up and records its answer
            store.finish(key, token, Answer(sent_as, 500, '{"late": true}', {}), 3600)
            store.release(key, token)
        retry = sale(client, keyed(as_alice), item)
        # The takeover's answer, replayed: not the late 500, nor (the key let go of by
        # the late release) a third sale run afresh.
        replayed = (retry.status_code, retry.headers.get("Idempotent-Replayed"))
        assert replayed == (201, "true")
        assert retry.json == taken_over.json
        assert movements(app, item) == 2


def wait_until_claim_expires(
    app: Flask, store: DatabaseStore | RedisStore, key: str, timeout: float = 5.0
) -> None:
    """Until the claim of ``key`` counts as abandoned (its 1-second lock ran out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            if isinstance(store, RedisStore):
                if not store.redis.exists(store.prefix + key):
                    return
            else:
                expires = db.session.get_one(IdempotencyKey, key).expires_at
                if expires < utcnow():
                    return
        time.sleep(0.05)
    raise AssertionError("the claim never expired")


@database_only
@pytest.mark.config(IDEMPOTENCY_TTL=0, IDEMPOTENCY_PURGE_BATCH=2)
def test_answers_expire_and_are_purged_in_batches_outside_requests(
    app: Flask, client: Client, as_alice: dict[str, str], item: Any
) -> None:
    sale(client, keyed(as_alice), item)
    again = sale(client, keyed(as_alice), item)
    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
    assert movements(app, item) == 3
    for key in ("b", "c", "d"):
        sale(client, keyed(as_alice, key), item)
    # Expired keys stay until the purge: a request never deletes other keys' rows.
    with count_queries(app) as statements:
        sale(client, keyed(as_alice, "e"), item)
    assert not [s for s in statements if s.lstrip().upper().startswith("DELETE")]
    assert len(query(app, select(IdempotencyKey.key))) == 5
    with count_queries(app) as statements:
        result = app.test_cli_runner().invoke(args=["idempotency", "purge"])
    assert result.exit_code == 0
    assert "Purged 5 expired keys." in result.output
    deletes = [s for s in statements if s.lstrip().upper().startswith("DELETE")]
    assert len(deletes) == 3 and all("LIMIT" in s.upper() for s in deletes)  # 2 + 2 + 1
    assert query(app, select(IdempotencyKey.key)) == []


class TestCaller:
    """§8: the caller is the identity the request's own verification established."""

    @pytest.mark.parametrize(
        "form", ["Bearer  {}", "Bearer\t{}", "Basic eDp5, Bearer {}", " Bearer {}, "]
    )
    def test_any_header_the_jwt_library_accepts_scopes_to_its_user(
        self,
        app: Flask,
        client: Client,
        login: Callable[..., dict[str, Any]],
        alice: User,
        item: Any,
        form: str,
    ) -> None:
        token = login(alice)["access_token"]
        first = sale(client, keyed({"Authorization": form.format(token)}), item)
        assert first.status_code == 201
        # Anonymous at the same address: not alice's key, so no replay of her answer.
        anonymous = sale(client, keyed({}), item)
        assert_error(anonymous, 401, error="authorization_required")
        # Alice with the plain form: her key, replayed.
        again = sale(client, keyed(bearer(token)), item)
        assert again.headers["Idempotent-Replayed"] == "true" and again.json == first.json
        assert movements(app, item) == 2

    def test_a_revoked_token_gets_401_never_a_replay(
        self,
        app: Flask,
        client: Client,
        login: Callable[..., dict[str, Any]],
        alice: User,
        item: Any,
    ) -> None:
        tokens = login(alice)
        assert sale(client, keyed(bearer(tokens["access_token"])), item).status_code == 201
        assert client.post("/logout", headers=bearer(tokens["access_token"])).status_code == 200
        retry = sale(client, keyed(bearer(tokens["access_token"])), item)
        assert_error(retry, 401, error="token_revoked")
        assert "Idempotent-Replayed" not in retry.headers

    def test_the_token_is_verified_and_the_body_parsed_once(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        item: Any,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        app.extensions["blocklist"] = DatabaseBlocklist()  # its lookups are statements
        parses: list[bytes] = []
        parse = body_module._parse

        def counted_parse(raw: bytes) -> Any:
            parses.append(raw)
            return parse(raw)

        monkeypatch.setattr(body_module, "_parse", counted_parse)
        batch = {"update": [{"id": item["id"], "price": "2.00"}], "delete": []}
        with count_queries(app) as statements:
            response = client.post(
                f"/stores/{item['store_id']}/items/batch", json=batch, headers=keyed(as_alice)
            )
        assert response.status_code == 200, response.json
        assert len([s for s in statements if "revoked_tokens" in s]) == 1
        assert len(parses) == 1


class TestStoredFingerprint:
    def test_it_is_keyed_with_a_server_secret(
        self,
        app: Flask,
        make_app: Callable[..., Flask],
        client: Client,
        item: Any,
        as_alice: dict[str, str],
    ) -> None:
        body = {
            "username": "carol",
            "email": "carol@example.com",
            "password": "sunshine 2024 by the old mill",
        }
        assert (
            client.post("/register", json=body, headers={"Idempotency-Key": "k"}).status_code == 201
        )
        stored = stored_fingerprints(app)
        assert len(stored) == 1
        unkeyed = hashlib.sha256(
            f"POST\n/register?\n{json.dumps(body, sort_keys=True, separators=(',', ':'))}".encode()
        ).hexdigest()
        assert stored[0] != unkeyed
        other = make_app(IDEMPOTENCY_SECRET="another server-side key")
        for each in (app, other):
            with each.test_request_context("/register", method="POST", json=body):
                computed = fingerprint()
            assert (computed == stored[0]) == (each is app)


def stored_fingerprints(app: Flask) -> list[str]:
    store = app.extensions["idempotency"]
    if isinstance(store, RedisStore):
        keys = [k for k in store.redis.scan_iter(f"{store.prefix}*") if b":usage:" not in k]
        return [json.loads(cast(bytes, store.redis.get(k)))["fingerprint"] for k in keys]
    return [row[0] for row in query(app, select(IdempotencyKey.fingerprint))]


class TestQuota:
    @pytest.mark.config(IDEMPOTENCY_QUOTA_KEYS=2)
    def test_past_the_daily_keys_a_keyed_post_is_429(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        auth: Callable[[User], dict[str, str]],
        bob: User,
        item: Any,
    ) -> None:
        for key in ("a", "b"):
            assert sale(client, keyed(as_alice, key), item).status_code == 201
        before = snapshot(app)
        refused = sale(client, keyed(as_alice, "c"), item)
        assert_error(refused, 429, error="idempotency_quota")
        assert 0 < int(refused.headers["Retry-After"]) <= 24 * 3600
        assert snapshot(app) == before
        # A replay of a kept key is not a new key; other callers have their own quota.
        assert sale(client, keyed(as_alice, "a"), item).headers["Idempotent-Replayed"] == "true"
        assert sale(client, as_alice, item).status_code == 201  # no key: no quota
        assert movements(app, item) == 4

    @pytest.mark.config(IDEMPOTENCY_QUOTA_BYTES=100)
    def test_past_the_daily_bytes_a_keyed_post_is_429(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        first = sale(client, keyed(as_alice, "a"), item)
        assert len(first.get_data()) > 100
        assert_error(sale(client, keyed(as_alice, "b"), item), 429, error="idempotency_quota")
        assert movements(app, item) == 2

    @pytest.mark.config(IDEMPOTENCY_MAX_ANSWER_BYTES=100)
    def test_an_answer_over_the_cap_is_not_kept(
        self, app: Flask, client: Client, as_alice: dict[str, str], item: Any
    ) -> None:
        assert sale(client, keyed(as_alice), item).status_code == 201
        assert stored_fingerprints(app) == []
        again = sale(client, keyed(as_alice), item)
        assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
        assert movements(app, item) == 3


def test_every_post_documents_the_header(client: Client) -> None:
    """But those whose answer holds a secret shown once (tokens, a new API key)."""
    spec = client.get("/openapi.json").json
    for path, operations in spec["paths"].items():
        if "post" not in operations:
            continue
        names = [p.get("name") for p in operations["post"].get("parameters", [])]
        expected = path not in ("/login", "/refresh", "/logout", "/api-keys")
        assert ("Idempotency-Key" in names) == expected, path
