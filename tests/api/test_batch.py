"""Batch (§9): up to 100 creates, updates and deletes in one store, all or nothing."""

import re

import pytest
from sqlalchemy import select

from helpers import PG_URL, assert_error, bearer, count_queries, query, snapshot
from models import Item, StockMovement


@pytest.fixture
def store(api, as_alice):
    return api.store(as_alice)


@pytest.fixture
def items(api, as_alice, store):
    return [api.item(as_alice, store, name=name) for name in ("Milk", "Bread", "Eggs")]


def batch(client, headers, store, **body):
    return client.post(f"/stores/{store['id']}/items/batch", json=body, headers=headers)


def names(app):
    return sorted(n for (n,) in query(app, select(Item.name)))


class TestApplies:
    def test_deletes_updates_and_creates(self, app, client, alice, as_alice, store, items):
        milk, bread, eggs = items
        response = batch(
            client,
            as_alice,
            store,
            create=[{"name": "Milk", "price": "1.10", "stock": 7}, {"name": "Tea", "price": 3}],
            update=[{"id": bread["id"], "price": "2.20"}, {"id": eggs["id"], "name": "Free eggs"}],
            delete=[milk["id"]],
        )
        assert response.status_code == 200, response.json
        body = response.json
        assert set(body) == {"created", "updated", "deleted"}
        assert body["deleted"] == [milk["id"]]
        assert [(i["name"], i["price"], i["stock"]) for i in body["created"]] == [
            ("Milk", 1.1, 7),
            ("Tea", 3.0, 0),
        ]
        assert all(
            i["store"] == {"id": store["id"], "name": store["name"]} for i in body["created"]
        )
        updated = {i["id"]: i for i in body["updated"]}
        assert (updated[bread["id"]]["price"], updated[bread["id"]]["name"]) == (2.2, "Bread")
        assert updated[eggs["id"]]["name"] == "Free eggs"
        assert updated[eggs["id"]]["updated_at"] > eggs["updated_at"]
        assert names(app) == ["Bread", "Free eggs", "Milk", "Tea"]
        new_milk = body["created"][0]["id"]
        assert query(
            app, select(StockMovement.delta, StockMovement.reason, StockMovement.user_id)
        ) == [(7, "count", alice.id)]
        assert client.get(f"/items/{new_milk}").json["stock"] == 7

    def test_lists_are_optional(self, client, as_alice, store, items):
        response = batch(client, as_alice, store)
        assert response.status_code == 200
        assert response.json == {"created": [], "updated": [], "deleted": []}

    def test_a_hundred_operations_cost_what_ten_do(self, app, client, as_alice, store):
        def run(n, prefix):
            with count_queries(app) as statements:
                response = batch(
                    client,
                    as_alice,
                    store,
                    create=[{"name": f"{prefix}{i}", "price": 1, "stock": 1} for i in range(n)],
                )
            assert response.status_code == 200
            # SQLite cannot batch an INSERT whose generated ids must be matched to
            # their rows (RETURNING order is not guaranteed there): one per row, in
            # process. PostgreSQL batches them; everything else is the same on both.
            return [s for s in statements if PG_URL or not s.startswith("INSERT")]

        small, large = run(10, "a"), run(100, "b")
        assert len(small) == len(large)

    def test_updates_and_deletes_of_many_cost_a_fixed_number(self, app, client, as_alice, store):
        created = batch(
            client, as_alice, store, create=[{"name": f"n{i}", "price": 1} for i in range(100)]
        ).json["created"]
        ids = [i["id"] for i in created]
        with count_queries(app) as statements:
            response = batch(
                client,
                as_alice,
                store,
                update=[{"id": i, "price": 2} for i in ids[:50]],
                delete=ids[50:],
            )
        assert response.status_code == 200
        # The relay, run eagerly in tests (a worker's work in production), is not the
        # request's: what is left is the batch plus one INSERT of its 100 events.
        relay = re.compile(r"event_counter|webhooks|UPDATE events|FROM events")
        own = [s for s in statements if not relay.search(s)]
        assert len(own) <= 13, own
        assert sum(s.startswith("INSERT INTO events") for s in own) == 1


class TestRefuses:
    def test_errors_are_keyed_by_list_and_position(
        self, app, client, api, as_alice, bob, auth, store, items
    ):
        elsewhere = api.item(auth(bob), api.store(auth(bob), "Other"), name="Theirs")
        before = snapshot(app)
        response = batch(
            client,
            as_alice,
            store,
            create=[{"name": "Ok", "price": 1}, {"name": "Bad", "price": "1.001"}],
            update=[{"id": items[0]["id"], "price": 1}],
        )
        errors = assert_error(response, 422)["errors"]["json"]
        assert list(errors) == ["create"]
        assert list(errors["create"]) == ["1"] and "price" in errors["create"]["1"]
        # Ids are checked against the store once the body is valid.
        response = batch(
            client,
            as_alice,
            store,
            create=[{"name": "Ok", "price": 1}],
            update=[{"id": items[0]["id"], "price": 1}, {"id": elsewhere["id"], "price": 1}],
            delete=[999],
        )
        errors = assert_error(response, 422)["errors"]["json"]
        assert list(errors["update"]) == ["1"] and "id" in errors["update"]["1"]
        assert "999" in errors["delete"]["0"][0]
        assert snapshot(app) == before

    def test_an_item_named_twice_is_refused(self, app, client, as_alice, store, items):
        before = snapshot(app)
        response = batch(
            client,
            as_alice,
            store,
            update=[{"id": items[0]["id"], "price": 1}],
            delete=[items[0]["id"]],
        )
        assert (
            "named twice" in assert_error(response, 422)["errors"]["json"]["update"]["0"]["id"][0]
        )
        assert snapshot(app) == before

    @pytest.mark.parametrize(
        "body",
        [
            {"create": [{"name": f"x{i}", "price": 1} for i in range(101)]},
            {
                "create": [{"name": f"x{i}", "price": 1} for i in range(60)],
                "delete": list(range(1, 42)),
            },
            {"create": [{"name": "x", "price": 1, "store_id": 1}]},
            {"update": [{"price": 1}]},
            {"update": [{"id": 1, "stock": 4}]},
            {"delete": ["1"]},
            {"remove": []},
        ],
    )
    def test_bad_bodies_change_nothing(self, app, client, as_alice, store, items, body):
        before = snapshot(app)
        assert_error(batch(client, as_alice, store, **body), 422)
        assert snapshot(app) == before

    @pytest.mark.parametrize(
        ("create", "update"),
        [
            ([{"name": "MILK", "price": 1}], []),
            ([{"name": "Tea", "price": 1}, {"name": "tea", "price": 2}], []),
            ([], "rename bread to milk"),
        ],
    )
    def test_a_duplicate_name_is_a_409_naming_it(
        self, app, client, as_alice, store, items, create, update
    ):
        if update:
            update = [{"id": items[1]["id"], "name": "Milk"}]
        before = snapshot(app)
        body = assert_error(batch(client, as_alice, store, create=create, update=update), 409)
        assert "milk" in body["message"].lower() or "tea" in body["message"]
        assert snapshot(app) == before

    def test_a_name_freed_in_the_batch_may_be_taken(self, app, client, as_alice, store, items):
        response = batch(
            client,
            as_alice,
            store,
            update=[{"id": items[0]["id"], "name": "Old milk"}],
            create=[{"name": "Milk", "price": 1}],
        )
        assert response.status_code == 200
        assert names(app) == ["Bread", "Eggs", "Milk", "Old milk"]


class TestWho:
    def test_the_owner_or_an_admin(self, app, client, auth, bob, admin, store, items):
        before = snapshot(app)
        assert_error(batch(client, auth(bob), store, delete=[items[0]["id"]]), 403)
        assert_error(batch(client, {}, store), 401)
        assert snapshot(app) == before
        assert batch(client, auth(admin), store, delete=[items[0]["id"]]).status_code == 200

    def test_deletes_need_a_fresh_token(self, app, client, login, alice, store, items):
        tokens = login(alice)
        stale = bearer(
            client.post("/refresh", headers=bearer(tokens["refresh_token"])).json["access_token"]
        )
        before = snapshot(app)
        response = batch(client, stale, store, delete=[items[0]["id"]])
        assert_error(response, 401, error="fresh_token_required")
        assert snapshot(app) == before
        assert batch(client, stale, store, create=[{"name": "Tea", "price": 1}]).status_code == 200

    def test_an_unknown_store_is_404(self, client, as_alice):
        assert_error(batch(client, as_alice, {"id": 999}), 404)


def test_a_retried_batch_is_applied_once(app, client, as_alice, store):
    headers = as_alice | {"Idempotency-Key": "batch-1"}
    first = batch(client, headers, store, create=[{"name": "Tea", "price": 1}])
    again = batch(client, headers, store, create=[{"name": "Tea", "price": 1}])
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json == first.json
    assert names(app) == ["Tea"]
