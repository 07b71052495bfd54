"""Batch (§9): up to 100 creates, updates and deletes in one store, all or nothing."""

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from core.catalog.batch import Plan
from db import db
from helpers import (
    PG_URL,
    CatalogFactory,
    Client,
    assert_error,
    bearer,
    client_of,
    count_queries,
    meanwhile,
    query,
    snapshot,
)
from models import Event, Item, StockMovement, User


@pytest.fixture
def store(api: CatalogFactory, as_alice: dict[str, str]) -> Any:
    return api.store(as_alice)


@pytest.fixture
def items(api: CatalogFactory, as_alice: dict[str, str], store: Any) -> Any:
    return [api.item(as_alice, store, name=name) for name in ("Milk", "Bread", "Eggs")]


def batch(client: Client, headers: Any, store: Any, **body: Any) -> Any:
    return client.post(f"/stores/{store['id']}/items/batch", json=body, headers=headers)


def names(app: Flask) -> Any:
    return sorted(n for (n,) in query(app, select(Item.name)))


class TestApplies:
    def test_deletes_updates_and_creates(
        self,
        app: Flask,
        client: Client,
        alice: User,
        as_alice: dict[str, str],
        store: Any,
        items: Any,
    ) -> None:
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

    def test_lists_are_optional(
        self, client: Client, as_alice: dict[str, str], store: Any, items: Any
    ) -> None:
        response = batch(client, as_alice, store)
        assert response.status_code == 200
        assert response.json == {"created": [], "updated": [], "deleted": []}

    def test_a_hundred_operations_cost_what_ten_do(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any
    ) -> None:
        def run(n: Any, prefix: Any) -> Any:
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

    def test_updates_and_deletes_of_many_cost_a_fixed_number(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any
    ) -> None:
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
        self,
        app: Flask,
        client: Client,
        api: CatalogFactory,
        as_alice: dict[str, str],
        bob: User,
        auth: Callable[[User], dict[str, str]],
        store: Any,
        items: Any,
    ) -> None:
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

    def test_an_item_named_twice_is_refused(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any, items: Any
    ) -> None:
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
    def test_bad_bodies_change_nothing(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        items: Any,
        body: Any,
    ) -> None:
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
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        items: Any,
        create: Any,
        update: Any,
    ) -> None:
        if update:
            update = [{"id": items[1]["id"], "name": "Milk"}]
        before = snapshot(app)
        body = assert_error(batch(client, as_alice, store, create=create, update=update), 409)
        name = create[0]["name"] if create else "Milk"  # as the batch spells it first
        assert body["message"] == (
            f"Store {store['id']} would have two items named {name!r}; nothing was applied."
        )
        assert snapshot(app) == before

    def test_a_name_freed_in_the_batch_may_be_taken(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any, items: Any
    ) -> None:
        response = batch(
            client,
            as_alice,
            store,
            update=[{"id": items[0]["id"], "name": "Old milk"}],
            create=[{"name": "Milk", "price": 1}],
        )
        assert response.status_code == 200
        assert names(app) == ["Bread", "Eggs", "Milk", "Old milk"]


class TestAllOrNothing:
    def test_a_failure_after_the_deletes_leaves_them_undone(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any, items: Any
    ) -> None:
        """The last write fails (the database goes away at the create): the deletes
        and updates written before it in the same transaction are not applied."""
        before = snapshot(app)

        def fail_at_the_create(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.lstrip().startswith("INSERT INTO items"):
                raise OperationalError(statement, {}, Exception("connection lost"))

        with app.app_context():
            engine = db.engine
        event.listen(engine, "before_cursor_execute", fail_at_the_create)
        try:
            response = batch(
                client,
                as_alice,
                store,
                delete=[items[0]["id"]],
                update=[{"id": items[1]["id"], "name": "Rye"}],
                create=[{"name": "Tea", "price": 1}],
            )
        finally:
            event.remove(engine, "before_cursor_execute", fail_at_the_create)
        assert_error(response, 503)
        assert snapshot(app) == before
        assert names(app) == ["Bread", "Eggs", "Milk"]


class TestFinalState:
    """§9: uniqueness is judged on the batch's final state, whatever the order."""

    def test_two_items_swap_names(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any, items: Any
    ) -> None:
        milk, bread, _eggs = items
        response = batch(
            client,
            as_alice,
            store,
            update=[{"id": milk["id"], "name": "Bread"}, {"id": bread["id"], "name": "Milk"}],
        )
        assert response.status_code == 200, response.json
        assert [i["name"] for i in response.json["updated"]] == ["Bread", "Milk"]
        rows = dict(query(app, select(Item.id, Item.name)))
        assert (rows[milk["id"]], rows[bread["id"]]) == ("Bread", "Milk")

    def test_a_chain_of_renames_in_reverse_id_order(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any, items: Any
    ) -> None:
        milk, bread, eggs = items
        update = [
            {"id": eggs["id"], "name": "Four"},
            {"id": bread["id"], "name": "Eggs"},
            {"id": milk["id"], "name": "Bread"},
        ]
        response = batch(client, as_alice, store, update=update)
        assert response.status_code == 200, response.json
        assert names(app) == ["Bread", "Eggs", "Four"]

    def test_a_name_kept_as_it_is_stays(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any, items: Any
    ) -> None:
        milk = items[0]
        etag = client.get(f"/items/{milk['id']}").headers["ETag"]
        events = query(app, select(Event.id))
        response = batch(client, as_alice, store, update=[{"id": milk["id"], "name": "Milk"}])
        assert response.status_code == 200
        assert names(app) == ["Bread", "Eggs", "Milk"]
        # Nothing changed: the item is as it was (its updated_at, its ETag), no event.
        assert response.json["updated"] == [client.get(f"/items/{milk['id']}").json]
        assert response.json["updated"][0]["updated_at"] == milk["updated_at"]
        assert client.get(f"/items/{milk['id']}").headers["ETag"] == etag
        assert query(app, select(Event.id)) == events


class TestWho:
    def test_the_owner_or_an_admin(
        self,
        app: Flask,
        client: Client,
        auth: Callable[[User], dict[str, str]],
        bob: User,
        admin: User,
        store: Any,
        items: Any,
    ) -> None:
        before = snapshot(app)
        assert_error(batch(client, auth(bob), store, delete=[items[0]["id"]]), 403)
        assert_error(batch(client, {}, store), 401)
        assert snapshot(app) == before
        assert batch(client, auth(admin), store, delete=[items[0]["id"]]).status_code == 200

    def test_deletes_need_a_fresh_token(
        self,
        app: Flask,
        client: Client,
        login: Callable[..., dict[str, Any]],
        alice: User,
        store: Any,
        items: Any,
    ) -> None:
        tokens = login(alice)
        stale = bearer(
            client.post("/refresh", headers=bearer(tokens["refresh_token"])).json["access_token"]
        )
        before = snapshot(app)
        response = batch(client, stale, store, delete=[items[0]["id"]])
        assert_error(response, 401, error="fresh_token_required")
        assert snapshot(app) == before
        assert batch(client, stale, store, create=[{"name": "Tea", "price": 1}]).status_code == 200

    def test_an_unknown_store_is_404(self, client: Client, as_alice: dict[str, str]) -> None:
        assert_error(batch(client, as_alice, {"id": 999}), 404)


def test_a_retried_batch_is_applied_once(
    app: Flask, client: Client, as_alice: dict[str, str], store: Any
) -> None:
    headers = as_alice | {"Idempotency-Key": "batch-1"}
    first = batch(client, headers, store, create=[{"name": "Tea", "price": 1}])
    again = batch(client, headers, store, create=[{"name": "Tea", "price": 1}])
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json == first.json
    assert names(app) == ["Tea"]


@pytest.mark.postgres
def test_a_single_create_of_the_same_name_meanwhile_is_no_deadlock(
    app: Flask,
    client: Client,
    api: CatalogFactory,
    as_alice: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch holds its store's lock while a POST /items of the name it creates
    runs. The POST's foreign-key check (FOR KEY SHARE of the store) waited for a
    FOR UPDATE lock, holding its new name, which the batch then waited for: a
    deadlock, a 503 to one of them. The store's lock is FOR NO KEY UPDATE now: the
    POST goes through, the batch's create is the 409 that names the name."""
    store = api.store(as_alice)
    answers: list[int] = []

    def other_request() -> None:
        body = {"name": "Twin", "price": 1, "store_id": store["id"]}
        answers.append(client_of(app).post("/items", json=body, headers=as_alice).status_code)

    other = meanwhile(monkeypatch, Plan, "__init__", other_request)  # once planned
    done = batch(client, as_alice, store, create=[{"name": "Twin", "price": 2}])
    other.join(10)
    assert answers == [201]
    assert "'Twin'" in assert_error(done, 409)["message"]
    assert names(app) == ["Twin"]


@pytest.mark.postgres
@pytest.mark.parametrize("other_write", ["patch", "delete"])
def test_a_write_to_an_item_meanwhile_waits_for_the_batch(
    app: Flask,
    client: Client,
    api: CatalogFactory,
    as_alice: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    other_write: str,
) -> None:
    """Another request changes an item the batch has read: it waits for the batch's
    commit, then applies to what the batch wrote. Before the batch locked its items,
    a PATCH's metadata key was lost (the batch wrote its own merge over it) and a
    DELETE made the batch answer 500 (its UPDATE matched no row)."""
    store = api.store(as_alice)
    item = api.item(as_alice, store, "X", metadata={"k": "v"})
    answers: list[int] = []

    def other_request() -> None:
        other = client_of(app)
        if other_write == "patch":
            sent = other.patch(
                f"/items/{item['id']}", json={"metadata": {"p": "1"}}, headers=as_alice
            )
        else:
            sent = other.delete(f"/items/{item['id']}", headers=as_alice)
        answers.append(sent.status_code)

    # Once planned: it waits for the batch's lock (before: it went through).
    other = meanwhile(monkeypatch, Plan, "__init__", other_request)
    update = {"id": item["id"], "metadata": {"b": "1"}}
    done = client.post(
        f"/stores/{store['id']}/items/batch", json={"update": [update]}, headers=as_alice
    )
    other.join(10)
    assert done.status_code == 200, done.json
    assert done.json["updated"][0]["metadata"] == {"k": "v", "b": "1"}
    if other_write == "patch":
        assert answers == [200]
        assert client.get(f"/items/{item['id']}").json["metadata"] == {"k": "v", "b": "1", "p": "1"}
    else:
        assert answers == [204]
        assert client.get(f"/items/{item['id']}").status_code == 404
