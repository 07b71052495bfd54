"""Tags: created under a store, unique per store, renamed, deleted once unused."""

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

import resources.items as items_resource
from helpers import CatalogFactory, Client, assert_error, client_of, meanwhile, query, snapshot
from models import Tag, item_tags


@pytest.fixture
def store(as_alice: dict[str, str], api: CatalogFactory) -> Any:
    return api.store(as_alice)


class TestTags:
    def test_create_read_and_list(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any
    ) -> None:
        response = client.post(
            f"/stores/{store['id']}/tags", json={"name": " dairy "}, headers=as_alice
        )
        assert response.status_code == 201
        tag = response.json
        assert tag == {
            "id": tag["id"],
            "name": "dairy",
            "store_id": store["id"],
            "created_at": tag["created_at"],
            "updated_at": tag["updated_at"],
            "links": {"self": f"/tags/{tag['id']}", "store": f"/stores/{store['id']}"},
        }
        assert response.headers["Location"] == f"/tags/{tag['id']}"
        got = client.get(f"/tags/{tag['id']}")
        assert got.json == tag
        assert got.headers["ETag"]
        listing = client.get(f"/stores/{store['id']}/tags")
        assert listing.json == [tag]
        assert listing.headers["X-Total-Count"] == "1"

    def test_names_are_unique_within_a_store_ignoring_case(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        api: CatalogFactory,
    ) -> None:
        api.tag(as_alice, store, "Dairy")
        before = snapshot(app)
        response = client.post(
            f"/stores/{store['id']}/tags", json={"name": "DAIRY"}, headers=as_alice
        )
        assert "already has a tag named" in assert_error(response, 409)["message"]
        assert snapshot(app) == before
        api.tag(as_alice, api.store(as_alice, "Other"), "Dairy")
        assert len(query(app, select(Tag.id))) == 2

    @pytest.mark.parametrize(
        "body", [{}, {"name": ""}, {"name": "x" * 81}, {"name": "ok", "store_id": 1}]
    )
    def test_invalid_input(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any, body: Any
    ) -> None:
        assert_error(client.post(f"/stores/{store['id']}/tags", json=body, headers=as_alice), 422)
        assert query(app, select(Tag.id)) == []

    def test_unknown_store(self, client: Client, as_alice: dict[str, str]) -> None:
        assert_error(client.post("/stores/9/tags", json={"name": "x"}, headers=as_alice), 404)

    def test_rename(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        api: CatalogFactory,
    ) -> None:
        tag = api.tag(as_alice, store)
        response = client.patch(f"/tags/{tag['id']}", json={"name": "milk"}, headers=as_alice)
        assert response.status_code == 200
        assert response.json["name"] == "milk"
        assert query(app, select(Tag.name)) == [("milk",)]

    def test_rename_to_a_taken_name(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        api: CatalogFactory,
    ) -> None:
        api.tag(as_alice, store, "dairy")
        tag = api.tag(as_alice, store, "milk")
        before = snapshot(app)
        assert_error(
            client.patch(f"/tags/{tag['id']}", json={"name": "Dairy"}, headers=as_alice), 409
        )
        assert snapshot(app) == before

    def test_delete_an_unused_tag(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        api: CatalogFactory,
    ) -> None:
        tag = api.tag(as_alice, store)
        assert client.delete(f"/tags/{tag['id']}", headers=as_alice).status_code == 204
        assert query(app, select(Tag.id)) == []
        assert_error(client.get(f"/tags/{tag['id']}"), 404)

    def test_a_tag_still_on_an_item_is_kept(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        api: CatalogFactory,
    ) -> None:
        tag = api.tag(as_alice, store)
        api.link(as_alice, api.item(as_alice, store), tag)
        before = snapshot(app)
        body = assert_error(client.delete(f"/tags/{tag['id']}", headers=as_alice), 409)
        assert "still on items" in body["message"]
        assert snapshot(app) == before

    @pytest.mark.postgres
    def test_a_link_and_the_tags_deletion_take_turns(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        api: CatalogFactory,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The tag is deleted while a link of it is under way: the deletion waits for
        the link and finds the tag in use. (It used to commit first, and the link's
        commit failed on its foreign key: a 409 ``conflict`` for a tag now gone.)"""
        tag, item = api.tag(as_alice, store), api.item(as_alice, store)
        answers: list[Any] = []

        def deletion() -> None:
            sent = client_of(app).delete(f"/tags/{tag['id']}", headers=as_alice)
            answers.append((sent.status_code, sent.json))

        other = meanwhile(monkeypatch, items_resource, "_record_update", deletion)
        linked = client.post(f"/items/{item['id']}/tags/{tag['id']}", headers=as_alice)
        other.join(10)
        assert linked.status_code == 201, linked.json
        [(status, body)] = answers
        assert (status, body["error"]) == (409, "tag_in_use")
        assert query(app, select(item_tags)) == [(item["id"], tag["id"])]
        # Once it is gone, a link of it is 404.
        client.delete(f"/items/{item['id']}/tags/{tag['id']}", headers=as_alice)
        assert client.delete(f"/tags/{tag['id']}", headers=as_alice).status_code == 204
        response = client.post(f"/items/{item['id']}/tags/{tag['id']}", headers=as_alice)
        assert_error(response, 404)

    def test_unknown_tag(self, client: Client, as_alice: dict[str, str]) -> None:
        assert_error(client.get("/tags/5"), 404)
        assert_error(client.patch("/tags/5", json={"name": "x"}, headers=as_alice), 404)
        assert_error(client.delete("/tags/5", headers=as_alice), 404)


@pytest.mark.parametrize("name", ["a|b", "|", " dairy|organic "])
def test_a_name_with_the_csv_tag_separator_is_refused(
    app: Flask, client: Client, as_alice: dict[str, str], store: Any, api: CatalogFactory, name: str
) -> None:
    """§4: the CSV export joins tags with `|`: such a name would come back as two tags."""
    tag = api.tag(as_alice, store, "dairy")
    before = snapshot(app)
    created = client.post(f"/stores/{store['id']}/tags", json={"name": name}, headers=as_alice)
    renamed = client.patch(f"/tags/{tag['id']}", json={"name": name}, headers=as_alice)
    for response in (created, renamed):
        body = assert_error(response, 422)
        assert body["errors"]["json"]["name"] == [
            "Must not contain '|' (CSV exports join tags with it)."
        ]
    assert snapshot(app) == before
