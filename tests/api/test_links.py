"""Links in resources and the index at ``GET /`` (contract §14, §16)."""

from typing import Any

import pytest
from flask import Flask

from helpers import CatalogFactory, Client, count_queries


@pytest.fixture
def catalog(as_alice: dict[str, str], api: CatalogFactory) -> dict[str, Any]:
    store = api.store(as_alice)
    tag = api.tag(as_alice, store)
    item = api.item(as_alice, store)
    item = api.link(as_alice, item, tag)
    return {"store": store, "tag": tag, "item": item}


class TestIndex:
    def test_lists_every_collection_and_the_docs(self, client: Client) -> None:
        response = client.get("/")
        assert response.status_code == 200
        assert response.json == {
            "name": "Stores REST API",
            "version": "1",
            "links": {
                "self": "/",
                "items": "/items",
                "stores": "/stores",
                "users": "/users",
                "events": "/events",
                "webhooks": "/webhooks",
                "jobs": "/jobs",
                "api_keys": "/api-keys",
                "audit": "/audit",
                "openapi": "/openapi.json",
                "swagger_ui": "/swagger-ui",
            },
        }
        assert response.headers["Cache-Control"] == "public, no-cache"
        cached = client.get("/", headers={"If-None-Match": response.headers["ETag"]})
        assert cached.status_code == 304

    def test_its_links_answer(self, client: Client, admin: Any, auth: Any) -> None:
        headers = auth(admin)
        for name, path in client.get("/").json["links"].items():
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (name, response.status_code)


class TestResources:
    def test_an_item_links_itself_its_store_and_its_stock(
        self, client: Client, catalog: dict[str, Any]
    ) -> None:
        item, store = catalog["item"], catalog["store"]
        expected = {
            "self": f"/items/{item['id']}",
            "store": f"/stores/{store['id']}",
            "stock": f"/items/{item['id']}/stock",
        }
        assert item["links"] == expected
        assert client.get(f"/items/{item['id']}").json["links"] == expected
        assert client.get("/items").json[0]["links"] == expected
        assert client.get(f"/stores/{store['id']}/items").json[0]["links"] == expected
        # Nested summaries carry none.
        assert item["store"] == {"id": store["id"], "name": store["name"]}
        assert item["tags"] == [{"id": catalog["tag"]["id"], "name": "dairy"}]
        assert client.get(expected["self"]).json == client.get(f"/items/{item['id']}").json
        assert client.get(expected["store"]).json == client.get(f"/stores/{store['id']}").json
        assert client.get(expected["stock"]).status_code == 200

    def test_a_store_links_itself_its_items_and_its_tags(
        self, client: Client, catalog: dict[str, Any]
    ) -> None:
        store = catalog["store"]
        links = client.get(f"/stores/{store['id']}").json["links"]
        assert links == {
            "self": f"/stores/{store['id']}",
            "items": f"/stores/{store['id']}/items",
            "tags": f"/stores/{store['id']}/tags",
        }
        assert client.get("/stores").json[0]["links"] == links
        assert [i["id"] for i in client.get(links["items"]).json] == [catalog["item"]["id"]]
        assert [t["id"] for t in client.get(links["tags"]).json] == [catalog["tag"]["id"]]

    def test_a_tag_links_itself_and_its_store(
        self, client: Client, catalog: dict[str, Any]
    ) -> None:
        tag, store = catalog["tag"], catalog["store"]
        expected = {"self": f"/tags/{tag['id']}", "store": f"/stores/{store['id']}"}
        assert tag["links"] == expected
        assert client.get(f"/tags/{tag['id']}").json["links"] == expected
        assert client.get(f"/stores/{store['id']}/tags").json[0]["links"] == expected

    def test_users_have_none(self, client: Client, as_alice: dict[str, str]) -> None:
        assert "links" not in client.get("/users/me", headers=as_alice).json

    def test_events_record_the_resource_without_links(
        self, client: Client, as_alice: dict[str, str], catalog: dict[str, Any]
    ) -> None:
        events = client.get("/events?page_size=100", headers=as_alice).json
        objects = [e["data"]["object"] for e in events if e["type"].endswith(".created")]
        assert objects
        assert all("links" not in obj for obj in objects)

    def test_links_cost_no_statement(
        self, app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        """A page of 2 items and one of 30 run the same statements (links are built
        from each row)."""
        store = api.store(as_alice, name="Big")
        for i in range(40):
            api.item(as_alice, store, name=f"Item {i}")
        with count_queries(app) as few:
            assert len(client.get("/items?page_size=2").json) == 2
        with count_queries(app) as many:
            page = client.get("/items?page_size=30").json
        assert len(page) == 30
        assert all(row["links"]["self"] == f"/items/{row['id']}" for row in page)
        assert len(many) == len(few)


def test_openapi_documents_the_links(client: Client) -> None:
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    assert schemas["Item"]["properties"]["links"] == {
        "readOnly": True,
        "allOf": [{"$ref": "#/components/schemas/ItemLinks"}],
    } or schemas["Item"]["properties"]["links"]["$ref"].endswith("ItemLinks")
    assert set(schemas["ItemLinks"]["properties"]) == {"self", "store", "stock"}
    assert set(schemas["StoreLinks"]["properties"]) == {"self", "items", "tags"}
    assert set(schemas["TagLinks"]["properties"]) == {"self", "store"}
    assert "links" not in schemas["User"]["properties"]
    assert "/" in client.get("/openapi.json").json["paths"]
