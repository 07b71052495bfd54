"""API keys (§15, §16): made and shown once, stored hashed, narrowed to their scopes
and store, never managing accounts, revoked at once, counted on their own.

Revocation across two gunicorn instances: tests/system/test_instances_api_keys.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from core.auth.scopes import ENDPOINT_SCOPES
from db import db
from helpers import Client, assert_error, bearer, count_queries, query, snapshot
from models import SCOPES, ApiKey, AuditEntry, IdempotencyKey, User
from models.types import utcnow

KEY = re.compile(r"sk_[A-Za-z0-9_-]{43}")
ALL = list(SCOPES)

MakeKey = Callable[..., dict[str, Any]]


@pytest.fixture
def make_key(client: Client, as_alice: dict[str, str]) -> MakeKey:
    """A key of alice's, through the API: the 201 body (with ``key``)."""

    def make(scopes: list[str] = ALL, headers: dict[str, str] = as_alice, **fields: Any) -> Any:
        body = {"name": "ERP sync", "scopes": scopes, **fields}
        response = client.post("/api-keys", json=body, headers=headers)
        assert response.status_code == 201, response.json
        return response.json

    return make


def key_headers(created: dict[str, Any]) -> dict[str, str]:
    return bearer(created["key"])


class TestCreateAndList:
    @pytest.mark.config(API_KEY_MAX_PER_USER=2)
    def test_a_user_holds_at_most_api_key_max_per_user_live_keys(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        auth: Callable[[User], dict[str, str]],
        bob: User,
    ) -> None:
        body = {"name": "ERP", "scopes": ["catalog:read"]}
        made = [client.post("/api-keys", json=body, headers=as_alice) for _ in range(2)]
        assert [r.status_code for r in made] == [201, 201]
        before = snapshot(app)
        third = client.post("/api-keys", json=body, headers=as_alice)
        refused = assert_error(third, 409, error="limit_reached")
        assert "API_KEY_MAX_PER_USER" in refused["message"]
        assert snapshot(app) == before
        assert client.post("/api-keys", json=body, headers=auth(bob)).status_code == 201
        # A revoked key is kept (the audit) but no longer held: room for a new one.
        assert client.delete(made[0].headers["Location"], headers=as_alice).status_code == 204
        again = client.post("/api-keys", json=body, headers=as_alice)
        assert again.status_code == 201
        # Nor is an expired one (it had to be revoked first).
        assert_error(client.post("/api-keys", json=body, headers=as_alice), 409)
        with app.app_context():
            db.session.execute(
                update(ApiKey)
                .where(ApiKey.id == made[1].json["id"])
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
            db.session.commit()
        listed = client.get("/api-keys", headers=as_alice).json
        assert made[1].json["id"] in [k["id"] for k in listed]  # seen expired, until ...
        newest = client.post("/api-keys", json=body, headers=as_alice)
        assert newest.status_code == 201
        # ... another key is made: it ends as of its expiry (keys expiring in seconds,
        # made in a loop, grew the list without bound).
        listed = client.get("/api-keys", headers=as_alice).json
        assert [k["id"] for k in listed] == [again.json["id"], newest.json["id"]]
        expired = select(ApiKey.revoked_at, ApiKey.expires_at)
        [(revoked_at, expires_at)] = query(app, expired.where(ApiKey.id == made[1].json["id"]))
        assert revoked_at is not None and revoked_at == expires_at

    def test_the_key_is_shown_once_and_stored_as_a_hash(
        self, app: Flask, client: Client, as_alice: dict[str, str], alice: User
    ) -> None:
        scopes = ["catalog:read", "stock:write"] + ["catalog:read"] * 6  # a set: each once
        body = {"name": " ERP sync ", "scopes": scopes}
        response = client.post("/api-keys", json=body, headers=as_alice)
        assert response.status_code == 201
        created = response.json
        key = created.pop("key")
        assert KEY.fullmatch(key)
        assert response.headers["Location"] == f"/api-keys/{created['id']}"
        assert response.headers["Cache-Control"] == "no-store"
        assert created == {
            "id": created["id"],
            "name": "ERP sync",
            "prefix": key[:8],
            "last_four": key[-4:],
            "scopes": ["catalog:read", "stock:write"],
            "store_id": None,
            "expires_at": None,
            "last_used_at": None,
            "created_at": created["created_at"],
        }
        # Later reads show what tells keys apart, never the key.
        listed = client.get("/api-keys", headers=as_alice)
        assert listed.status_code == 200
        assert listed.json == [created]
        one = client.get(f"/api-keys/{created['id']}", headers=as_alice)
        assert one.json == created
        # At rest: its SHA-256 only.
        ((row,),) = query(app, select(ApiKey))
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
        assert row.owner_id == alice.id
        assert key not in repr(snapshot(app))

    def test_a_list_holds_only_the_callers_live_keys(
        self, client: Client, make_key: MakeKey, auth: Any, bob: User, as_alice: dict[str, str]
    ) -> None:
        mine = make_key()
        revoked = make_key(name="old")
        assert client.delete(f"/api-keys/{revoked['id']}", headers=as_alice).status_code == 204
        make_key(headers=auth(bob), name="Bob's")
        assert [k["id"] for k in client.get("/api-keys", headers=as_alice).json] == [mine["id"]]
        assert [k["name"] for k in client.get("/api-keys", headers=auth(bob)).json] == ["Bob's"]

    def test_validation(
        self, client: Client, as_alice: dict[str, str], auth: Any, bob: User
    ) -> None:
        cases = [
            ({"name": "x", "scopes": ["catalog:delete"]}, "scopes"),
            ({"name": "x", "scopes": []}, "scopes"),
            ({"name": "x", "scopes": [1] * 7}, "scopes"),  # not scopes: no set is made
            ({"name": "", "scopes": ["jobs"]}, "name"),
            ({"scopes": ["jobs"]}, "name"),
            ({"name": "x", "scopes": ["jobs"], "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
            ({"name": "x", "scopes": ["jobs"], "key": "sk_mine"}, "key"),
            ({"name": "x", "scopes": ["jobs"], "store_id": 999}, "store_id"),
        ]
        for body, field in cases:
            response = client.post("/api-keys", json=body, headers=as_alice)
            assert field in assert_error(response, 422)["errors"]["json"], body
        store = client.post("/stores", json={"name": "Bob's"}, headers=auth(bob)).json
        body = {"name": "x", "scopes": ["jobs"], "store_id": store["id"]}
        assert_error(client.post("/api-keys", json=body, headers=as_alice), 403, error="forbidden")
        assert_error(client.post("/api-keys", json=body), 401)


def test_a_key_is_made_only_with_a_fresh_token(
    app: Flask, client: Client, alice: User, login: Callable[..., dict[str, Any]]
) -> None:
    """A key outlives every session: a refreshed (or stolen, refreshed) access token
    cannot make one; a sign-in can."""
    tokens = login(alice)
    refreshed = client.post("/refresh", headers=bearer(tokens["refresh_token"])).json
    stale = bearer(refreshed["access_token"])
    before = snapshot(app)
    body = {"name": "ERP", "scopes": ["catalog:read"]}
    refused = client.post("/api-keys", json=body, headers=stale)
    assert_error(refused, 401, error="fresh_token_required")
    assert snapshot(app) == before
    fresh = bearer(tokens["access_token"])
    assert client.post("/api-keys", json=body, headers=fresh).status_code == 201


def test_an_idempotency_key_never_keeps_the_key(
    app: Flask, client: Client, as_alice: dict[str, str]
) -> None:
    """The answer holding a new key is never stored for replay (§15: shown once): the
    header is ignored there, and a retry makes another key."""
    headers = {**as_alice, "Idempotency-Key": "make-erp-key"}
    body = {"name": "ERP", "scopes": ["catalog:read"]}
    first = client.post("/api-keys", json=body, headers=headers)
    again = client.post("/api-keys", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json["key"] != again.json["key"]
    assert "Idempotent-Replayed" not in again.headers
    assert query(app, select(IdempotencyKey)) == []


def test_paging(client: Client, make_key: MakeKey, as_alice: dict[str, str]) -> None:
    ids = [make_key(name=f"key {n}")["id"] for n in range(3)]
    first = client.get("/api-keys?page_size=2", headers=as_alice)
    assert [k["id"] for k in first.json] == ids[:2]
    following = re.search(r"<([^>]+)>; rel=\"next\"", first.headers["Link"])
    assert following is not None
    rest = client.get(following.group(1), headers=as_alice)
    assert [k["id"] for k in rest.json] == ids[2:]


class TestUse:
    def test_a_key_acts_as_its_owner_and_events_and_audit_name_it(
        self, app: Flask, client: Client, make_key: MakeKey, as_alice: dict[str, str], alice: User
    ) -> None:
        created = make_key(["catalog:write", "catalog:read"])
        headers = key_headers(created)
        store = client.post("/stores", json={"name": "Keyed"}, headers=headers)
        assert store.status_code == 201, store.json
        assert store.json["owner_id"] == alice.id
        item = client.post(
            "/items",
            json={"name": "Tea", "price": 2, "store_id": store.json["id"]},
            headers=headers,
        )
        assert item.status_code == 201
        # §16: a key counts as fresh, and may delete what catalog:write covers.
        assert client.delete(f"/items/{item.json['id']}", headers=headers).status_code == 204

        events = client.get("/events", headers=as_alice).json
        assert [e["type"] for e in events] == ["store.created", "item.created", "item.deleted"]
        assert {str(e["actor"]) for e in events} == {str({"type": "api_key", "id": created["id"]})}
        rows = query(app, select(AuditEntry).order_by(AuditEntry.id))
        by_key = [(r.action, r.actor_type, r.actor_id) for (r,) in rows if r.actor_type != "user"]
        assert by_key == [
            ("store.created", "api_key", created["id"]),
            ("item.created", "api_key", created["id"]),
            ("item.deleted", "api_key", created["id"]),
        ]

    def test_outside_its_scopes_a_key_gets_403_insufficient_scope(
        self, app: Flask, client: Client, make_key: MakeKey, as_alice: dict[str, str], api: Any
    ) -> None:
        store = api.store(as_alice)
        item = api.item(as_alice, store)
        reader = key_headers(make_key(["catalog:read"]))
        assert client.get("/stores", headers=reader).status_code == 200  # sets last_used_at
        before = snapshot(app)
        refusals = [
            ("POST", "/stores", {"name": "Nope"}, "catalog:write"),
            ("PATCH", f"/items/{item['id']}", {"price": 3}, "catalog:write"),
            (
                "POST",
                f"/items/{item['id']}/stock",
                {"delta": 5, "reason": "received"},
                "stock:write",
            ),
            ("GET", "/events", None, "events:read"),
            ("GET", "/webhooks", None, "webhooks:manage"),
            ("GET", "/jobs", None, "jobs"),
            ("POST", "/exports", {}, "jobs"),
        ]
        for method, path, body, scope in refusals:
            response = client.open(path, method=method, json=body, headers=reader)
            message = assert_error(response, 403, error="insufficient_scope")["message"]
            assert scope in message, (method, path)
        assert snapshot(app) == before
        # Within its scope it reads, public or not.
        assert client.get(f"/items/{item['id']}", headers=reader).status_code == 200
        assert client.get(f"/items/{item['id']}/stock", headers=reader).status_code == 200
        # A key without catalog:read cannot even read the public catalog through it.
        stocker = key_headers(make_key(["stock:write"]))
        assert_error(client.get("/items", headers=stocker), 403, error="insufficient_scope")
        move = {"delta": 5, "reason": "received"}
        moved = client.post(f"/items/{item['id']}/stock", json=move, headers=stocker)
        assert moved.status_code == 201, moved.json

    def test_a_key_never_manages_users_passwords_or_keys(
        self, client: Client, make_key: MakeKey, alice: User, admin: User, auth: Any
    ) -> None:
        headers = key_headers(make_key())
        admin_key = key_headers(make_key(headers=auth(admin)))
        refusals = [
            ("GET", "/users/me", None),
            ("GET", f"/users/{alice.id}", None),
            ("PATCH", f"/users/{alice.id}", {"email": "a@b.example", "current_password": "x"}),
            ("DELETE", f"/users/{alice.id}", None),
            ("GET", "/api-keys", None),
            ("POST", "/api-keys", {"name": "more", "scopes": ["jobs"]}),
            ("DELETE", "/api-keys/1", None),
            ("POST", "/logout", None),
            ("GET", "/audit", None),
        ]
        for method, path, body in refusals:
            for key in (headers, admin_key):
                response = client.open(path, method=method, json=body, headers=key)
                assert_error(response, 403, error="insufficient_scope")
        assert_error(client.get("/users", headers=admin_key), 403, error="insufficient_scope")
        # Nor sessions: a key is no refresh token.
        assert_error(client.post("/refresh", headers=headers), 403, error="insufficient_scope")
        # The account is untouched: the key still works, and so does its owner.
        assert client.get("/users/me", headers=auth(alice)).status_code == 200

    def test_a_key_bound_to_a_store_acts_on_that_store_only(
        self, client: Client, make_key: MakeKey, as_alice: dict[str, str], api: Any
    ) -> None:
        mine, other = api.store(as_alice, "Mine"), api.store(as_alice, "Other")
        theirs = api.item(as_alice, other)
        headers = key_headers(make_key(store_id=mine["id"]))
        item = client.post(
            "/items", json={"name": "Tea", "price": 2, "store_id": mine["id"]}, headers=headers
        )
        assert item.status_code == 201
        refusals = [
            ("POST", "/items", {"name": "Tea", "price": 2, "store_id": other["id"]}),
            ("PATCH", f"/items/{theirs['id']}", {"price": 3}),
            ("POST", f"/items/{theirs['id']}/stock", {"delta": 1, "reason": "received"}),
            ("PATCH", f"/stores/{other['id']}", {"name": "Renamed"}),
            ("POST", "/stores", {"name": "Another"}),
            ("POST", "/webhooks", {"url": "https://example.com/h", "events": ["*"]}),
        ]
        for method, path, body in refusals:
            response = client.open(path, method=method, json=body, headers=headers)
            assert_error(response, 403, error="insufficient_scope")
        # Its events are its store's.
        events = client.get("/events", headers=headers).json
        assert {e["store_id"] for e in events} == {mine["id"]}

    def test_a_key_bound_to_a_store_sees_the_drafts_of_that_store_only(
        self, client: Client, make_key: MakeKey, as_alice: dict[str, str], api: Any
    ) -> None:
        mine, other = api.store(as_alice, "Mine"), api.store(as_alice, "Other")
        draft = api.item(as_alice, mine, name="Draft here", status="draft")
        hidden = api.item(as_alice, other, name="Draft there", status="draft")
        headers = key_headers(make_key(store_id=mine["id"]))
        # The owner sees both drafts; the key, bound to one store, that store's only.
        assert client.get(f"/items/{hidden['id']}", headers=as_alice).status_code == 200
        assert client.get(f"/items/{draft['id']}", headers=headers).status_code == 200
        assert_error(client.get(f"/items/{hidden['id']}", headers=headers), 404)
        assert_error(client.get(f"/items/{hidden['id']}/stock", headers=headers), 404)
        listed = client.get("/items?status=draft", headers=headers)
        assert [item["id"] for item in listed.json] == [draft["id"]]
        assert len(client.get("/items?status=draft", headers=as_alice).json) == 2
        refused = client.get(f"/items?status=draft&store_id={other['id']}", headers=headers)
        assert_error(refused, 403, error="insufficient_scope")

    @pytest.mark.config(WEBHOOK_ALLOW_HTTP=True, WEBHOOK_ALLOW_PRIVATE_NETWORKS=True)
    def test_a_key_bound_to_a_store_reaches_that_stores_webhooks_and_jobs_only(
        self, app: Flask, client: Client, make_key: MakeKey, as_alice: dict[str, str], api: Any
    ) -> None:
        mine, other = api.store(as_alice, "Mine"), api.store(as_alice, "Other")
        hooks = {
            name: client.post(
                "/webhooks",
                json={"url": "http://127.0.0.1:9/h", "events": ["*"], **store},
                headers=as_alice,
            ).json
            for name, store in (
                ("mine", {"store_id": mine["id"]}),
                ("other", {"store_id": other["id"]}),
                ("every", {}),
            )
        }
        csv = {**as_alice, "Content-Type": "text/csv"}
        jobs = {
            name: client.post(
                f"/stores/{store['id']}/imports", data=b"name,price\nA,1\n", headers=csv
            ).json
            for name, store in (("mine", mine), ("other", other))
        }
        headers = key_headers(make_key(store_id=mine["id"]))
        listed = client.get("/webhooks", headers=headers).json
        assert [hook["id"] for hook in listed] == [hooks["mine"]["id"]]
        before = snapshot(app)  # after the key's first use (its last_used_at)
        for name in ("other", "every"):
            path = f"/webhooks/{hooks[name]['id']}"
            assert_error(client.get(path, headers=headers), 404)
            assert_error(client.patch(path, json={"enabled": False}, headers=headers), 404)
            assert_error(client.delete(path, headers=headers), 404)
            assert_error(client.post(f"{path}/test", headers=headers), 404)
        assert [job["id"] for job in client.get("/jobs", headers=headers).json] == [
            jobs["mine"]["id"]
        ]
        assert_error(client.get(f"/jobs/{jobs['other']['id']}", headers=headers), 404)
        assert_error(client.delete(f"/jobs/{jobs['other']['id']}", headers=headers), 404)
        assert snapshot(app) == before
        # The same key reaches what is its store's.
        assert client.get(f"/webhooks/{hooks['mine']['id']}", headers=headers).status_code == 200
        assert client.get(f"/jobs/{jobs['mine']['id']}", headers=headers).status_code == 200

    def test_a_key_bound_to_a_store_fetches_that_stores_export_files_only(
        self, client: Client, make_key: MakeKey, as_alice: dict[str, str], api: Any
    ) -> None:
        """An export's file is its job's: a key that cannot see the job (another
        store's, or the whole catalog's) cannot fetch its file either."""
        mine, other = api.store(as_alice, "Mine"), api.store(as_alice, "Other")
        api.item(as_alice, other, name="Secret plan", status="draft")
        exports = {
            name: client.post("/exports", json=body, headers=as_alice).json["id"]
            for name, body in (
                ("mine", {"store_id": mine["id"]}),
                ("other", {"store_id": other["id"], "status": "all"}),
                ("every", {}),
            )
        }
        headers = key_headers(make_key(["jobs", "catalog:read"], store_id=mine["id"]))
        for name in ("other", "every"):
            job = exports[name]
            assert client.get(f"/jobs/{job}/file", headers=as_alice).status_code == 200
            assert_error(client.get(f"/jobs/{job}", headers=headers), 404)
            refused = assert_error(client.get(f"/jobs/{job}/file", headers=headers), 404)
            assert refused["message"] == f"Job {job} not found."
        # Its own store's export: the job and its file, as the owner has them.
        job = client.get(f"/jobs/{exports['mine']}", headers=headers).json
        assert job["links"]["file"] == f"/jobs/{exports['mine']}/file"
        fetched = client.get(job["links"]["file"], headers=headers)
        assert fetched.status_code == 200 and fetched.mimetype == "text/csv"

    def test_an_export_file_needs_the_scopes_of_the_export(
        self, client: Client, make_key: MakeKey, as_alice: dict[str, str], api: Any
    ) -> None:
        """§16: exports need ``jobs`` and ``catalog:read``. The file holds the rows the
        export read (drafts included): a key that could not read them, nor make the
        export, cannot download them either."""
        store = api.store(as_alice)
        api.item(as_alice, store, name="Secret plan", status="draft")
        made = client.post("/exports", json={"status": "draft"}, headers=as_alice)
        job = made.json["id"]
        jobs_only = key_headers(make_key(["jobs"]))
        for path in ("/items?status=draft", "/items.csv", f"/jobs/{job}/file"):
            refused = assert_error(
                client.get(path, headers=jobs_only), 403, error="insufficient_scope"
            )
            assert "catalog:read" in refused["message"], path
        assert_error(
            client.post("/exports", json={}, headers=jobs_only), 403, error="insufficient_scope"
        )
        # The job itself is a job: its status, without the rows (nor a link to them).
        shown = client.get(f"/jobs/{job}", headers=jobs_only).json
        assert shown["status"] == "succeeded" and "file" not in shown["links"]
        reader = key_headers(make_key(["jobs", "catalog:read"]))
        fetched = client.get(f"/jobs/{job}/file", headers=reader)
        assert fetched.status_code == 200 and "Secret plan" in fetched.get_data(as_text=True)

    @pytest.mark.config(WEBHOOK_ALLOW_HTTP=True, WEBHOOK_ALLOW_PRIVATE_NETWORKS=True)
    def test_a_key_bound_to_a_store_never_gets_its_owners_answers_by_idempotency_key(
        self, app: Flask, client: Client, make_key: MakeKey, as_alice: dict[str, str], api: Any
    ) -> None:
        mine, other = api.store(as_alice, "Mine"), api.store(as_alice, "Other")
        theirs = api.item(as_alice, other)
        headers = key_headers(make_key(store_id=mine["id"]))
        hook = {"url": "http://127.0.0.1:9/b-hook", "events": ["*"], "store_id": other["id"]}
        owners = [
            ("/webhooks", hook),
            ("/webhooks", {"url": "http://127.0.0.1:9/every", "events": ["*"]}),
            ("/items", {"name": "Tea", "price": 2, "store_id": other["id"]}),
            (f"/items/{theirs['id']}/stock", {"delta": 1, "reason": "received"}),
            ("/stores", {"name": "Another"}),
        ]
        for n, (path, body) in enumerate(owners):
            keyed = {"Idempotency-Key": f"order-sync-{n}"}
            first = client.post(path, json=body, headers=as_alice | keyed)
            assert first.status_code == 201, first.json
            without = client.post(path, json=body, headers=headers)
            assert_error(without, 403, error="insufficient_scope")
            with_key = client.post(path, json=body, headers=headers | keyed)
            # The owner's key, sent by another of their credentials: refused, nothing
            # of the answer.
            assert_error(with_key, 422, error="idempotency_key_reused")
            assert "Idempotent-Replayed" not in with_key.headers
            for value in (first.json.get("secret"), first.headers["Location"]):
                assert value is None or value not in with_key.get_data(as_text=True)
            # The owner still gets their own answer again.
            again = client.post(path, json=body, headers=as_alice | keyed)
            assert again.headers["Idempotent-Replayed"] == "true" and again.json == first.json

    def test_an_idempotency_key_is_its_owners_and_its_answer_its_credentials(
        self, app: Flask, client: Client, make_key: MakeKey, as_alice: dict[str, str], api: Any
    ) -> None:
        """§16: the key belongs to the key's owner, so the owner's token and keys
        never do one request twice under it; the answer is only the credential's that
        made it (the others get 422, never a replay: a key may do less than its owner)."""
        keyed = {"Idempotency-Key": "k1"}
        one, two = key_headers(make_key()), key_headers(make_key())
        first = client.post("/stores", json={"name": "Once"}, headers=one | keyed)
        assert first.status_code == 201
        again = client.post("/stores", json={"name": "Once"}, headers=one | keyed)
        assert again.headers["Idempotent-Replayed"] == "true" and again.json == first.json
        for headers in (as_alice, two):
            other = client.post("/stores", json={"name": "Once"}, headers=headers | keyed)
            assert_error(other, 422, error="idempotency_key_reused")
            assert "Idempotent-Replayed" not in other.headers
        # A movement sent with the owner's token, then with their key: moved once.
        item = api.item(as_alice, api.store(as_alice, "Shop"), stock=1)
        move = {"delta": 1, "reason": "received"}
        keyed = {"Idempotency-Key": "move-1"}
        path = f"/items/{item['id']}/stock"
        assert client.post(path, json=move, headers=as_alice | keyed).status_code == 201
        assert_error(client.post(path, json=move, headers=one | keyed), 422)
        assert client.get(f"/items/{item['id']}").json["stock"] == 2

    @pytest.mark.config(IDEMPOTENCY_QUOTA_KEYS=1)
    def test_the_daily_quota_of_idempotency_keys_is_the_owners(
        self, client: Client, make_key: MakeKey, as_alice: dict[str, str]
    ) -> None:
        headers = key_headers(make_key())
        first = client.post(
            "/stores", json={"name": "A"}, headers=as_alice | {"Idempotency-Key": "a"}
        )
        assert first.status_code == 201
        # Its keys are its own, but not its allowance: more keys do not make more room.
        refused = client.post(
            "/stores", json={"name": "B"}, headers=headers | {"Idempotency-Key": "b"}
        )
        assert_error(refused, 429, error="idempotency_quota")


class TestRefusedKeys:
    def test_a_revoked_key_is_refused_at_once_everywhere(
        self, app: Flask, client: Client, make_key: MakeKey, as_alice: dict[str, str]
    ) -> None:
        created = make_key()
        headers = key_headers(created)
        assert client.get("/stores", headers=headers).status_code == 200
        assert client.delete(f"/api-keys/{created['id']}", headers=as_alice).status_code == 204
        for method, path in [("GET", "/stores"), ("GET", "/items"), ("POST", "/stores")]:
            response = client.open(path, method=method, json={"name": "x"}, headers=headers)
            assert_error(response, 401, error="token_revoked")
        assert client.get("/api-keys", headers=as_alice).json == []
        assert_error(client.delete(f"/api-keys/{created['id']}", headers=as_alice), 404)
        rows = query(app, select(AuditEntry).where(AuditEntry.target_type == "api_key"))
        assert [(r.action, r.target_id) for (r,) in rows] == [
            ("api_key.created", created["id"]),
            ("api_key.revoked", created["id"]),
        ]
        assert list(rows[1][0].changes) == ["revoked_at"]
        assert created["key"] not in repr([vars(r) for (r,) in rows])
        assert created["key"][3:] not in repr([vars(r) for (r,) in rows])

    @pytest.mark.parametrize("sync_max", [10, 0], ids=["at-once", "by-a-job"])
    def test_a_stores_deletion_revokes_its_keys_with_entries(
        self,
        app: Flask,
        client: Client,
        make_key: MakeKey,
        as_alice: dict[str, str],
        api: Any,
        auth: Any,
        admin: User,
        sync_max: int,
    ) -> None:
        """Both ways a store goes (§12): its keys end with it, each in the audit log."""
        app.config["STORE_DELETE_SYNC_MAX"] = sync_max
        store, kept = api.store(as_alice, "Going"), api.store(as_alice, "Staying")
        api.item(as_alice, store)
        keys = [
            make_key(store_id=store["id"]),
            make_key(store_id=store["id"], headers=auth(admin)),
            make_key(store_id=store["id"]),
        ]
        other = make_key(store_id=kept["id"])
        assert client.delete(f"/api-keys/{keys[2]['id']}", headers=as_alice).status_code == 204
        assert client.delete(f"/stores/{store['id']}", headers=as_alice).status_code in (202, 204)
        for created in keys:  # their rows went with the store: unknown keys now
            response = client.get("/stores", headers=key_headers(created))
            assert_error(response, 401, error="invalid_token")
        assert client.get("/stores", headers=key_headers(other)).status_code == 200
        rows = query(
            app,
            select(AuditEntry.target_id, AuditEntry.store_id, AuditEntry.changes)
            .where(AuditEntry.action == "api_key.revoked")
            .order_by(AuditEntry.id),
        )
        assert {store_id for _, store_id, _ in rows} == {store["id"]}
        assert rows[0][0] == keys[2]["id"]  # revoked before: no second entry
        assert sorted(target for target, *_ in rows[1:]) == [keys[0]["id"], keys[1]["id"]]
        assert all(list(changes) == ["revoked_at"] for *_, changes in rows)
        assert query(app, select(ApiKey.id).where(ApiKey.store_id == store["id"])) == []

    def test_only_the_owner_or_an_admin_revokes(
        self, client: Client, make_key: MakeKey, auth: Any, bob: User, admin: User
    ) -> None:
        created = make_key()
        assert_error(client.delete(f"/api-keys/{created['id']}", headers=auth(bob)), 404)
        assert_error(client.get(f"/api-keys/{created['id']}", headers=auth(bob)), 404)
        assert client.get("/stores", headers=key_headers(created)).status_code == 200
        assert client.delete(f"/api-keys/{created['id']}", headers=auth(admin)).status_code == 204
        assert_error(
            client.get("/stores", headers=key_headers(created)), 401, error="token_revoked"
        )

    def test_an_expired_key_is_revoked_and_an_unknown_one_invalid(
        self, app: Flask, client: Client, make_key: MakeKey
    ) -> None:
        soon = (utcnow() + timedelta(hours=1)).isoformat()
        created = make_key(expires_at=soon)
        assert created["expires_at"] == soon
        assert client.get("/stores", headers=key_headers(created)).status_code == 200
        with app.app_context():
            db.session.execute(update(ApiKey).values(expires_at=utcnow() - timedelta(seconds=1)))
            db.session.commit()
        assert_error(
            client.get("/stores", headers=key_headers(created)), 401, error="token_revoked"
        )
        forged = "sk_" + "A" * 43
        assert_error(client.get("/stores", headers=bearer(forged)), 401, error="invalid_token")
        assert_error(client.get("/users/me", headers=bearer(forged)), 401, error="invalid_token")

    def test_a_key_outlives_its_owners_password_change_but_not_the_owner(
        self, client: Client, make_key: MakeKey, as_alice: dict[str, str], alice: User
    ) -> None:
        headers = key_headers(make_key())
        change = {"password": "lantern orchard violet", "current_password": "correct horse battery"}
        assert client.patch(f"/users/{alice.id}", json=change, headers=as_alice).status_code == 200
        assert client.get("/stores", headers=headers).status_code == 200


def test_last_used_at_is_written_at_most_once_a_minute(
    app: Flask, client: Client, make_key: MakeKey
) -> None:
    created = make_key()
    headers = key_headers(created)

    def last_used() -> Any:
        ((value,),) = query(app, select(ApiKey.last_used_at))
        return value

    assert client.get("/stores", headers=headers).status_code == 200
    first = last_used()
    assert first is not None
    with count_queries(app) as statements:
        assert client.get("/stores", headers=headers).status_code == 200
    assert not [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
    assert last_used() == first
    with app.app_context():
        db.session.execute(update(ApiKey).values(last_used_at=first - timedelta(seconds=61)))
        db.session.commit()
    assert client.get("/stores", headers=headers).status_code == 200
    assert last_used() > first


@pytest.mark.config(RATE_LIMIT_DEFAULT="3 per minute")
def test_signed_in_callers_behind_one_address_have_budgets_of_their_own(
    client: Client, make_key: MakeKey, as_alice: dict[str, str], auth: Any, bob: User
) -> None:
    key, as_bob = key_headers(make_key()), auth(bob)
    for _ in range(3):  # the default limit: a budget per endpoint and caller
        assert client.get("/stores", headers=as_alice).status_code == 200
    assert_error(client.get("/stores", headers=as_alice), 429)
    # Bob, alice's key and an anonymous caller share alice's address, not her budget.
    for headers in (as_bob, key, {}):
        for _ in range(3):
            assert client.get("/stores", headers=headers).status_code == 200
        assert_error(client.get("/stores", headers=headers), 429)


def test_every_endpoint_is_in_the_scope_table_or_closed_to_keys(app: Flask) -> None:
    """One table decides: an endpoint it does not name is closed to keys, on purpose."""
    closed = {"users", "sessions", "password_reset", "api_keys", "audit", "metrics"}
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    for endpoint in endpoints:
        assert (endpoint in ENDPOINT_SCOPES) != (endpoint.split(".")[0] in closed), endpoint
    for needs in ENDPOINT_SCOPES.values():
        for scopes in needs.values():
            assert scopes <= set(SCOPES)
