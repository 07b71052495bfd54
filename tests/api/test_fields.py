"""Sparse fieldsets: ``?fields=`` on the reads and lists of items, stores, tags and
users (contract §14; core/web/sparse.py)."""

import hashlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask

from helpers import CatalogFactory, Client, assert_error, count_queries


@pytest.fixture
def catalog(as_alice: dict[str, str], api: CatalogFactory) -> dict[str, Any]:
    store = api.store(as_alice)
    tag = api.tag(as_alice, store)
    items = [
        api.item(as_alice, store, name=f"Item {i}", price=f"{i}.50", description=f"Text {i}")
        for i in range(3)
    ]
    api.link(as_alice, items[0], tag)
    return {"store": store, "tag": tag, "items": items}


def next_link(response: Any) -> str:
    for part in response.headers["Link"].split(", "):
        url, rel = part.split("; ")
        if rel == 'rel="next"':
            return str(url.strip("<>"))
    raise AssertionError("no next link")


class TestSingleReads:
    def test_an_item_with_some_fields(self, client: Client, catalog: dict[str, Any]) -> None:
        item = catalog["items"][0]
        response = client.get(f"/items/{item['id']}?fields=name,price")
        assert response.status_code == 200
        assert response.json == {"id": item["id"], "name": "Item 0", "price": 0.5}

    def test_the_etag_is_of_the_representation_sent(
        self, client: Client, catalog: dict[str, Any]
    ) -> None:
        path = f"/items/{catalog['items'][0]['id']}"
        sparse = client.get(f"{path}?fields=name")
        full = client.get(path)
        digest = hashlib.sha1(sparse.get_data(), usedforsecurity=False).hexdigest()
        assert sparse.headers["ETag"] == f'"{digest}"'
        assert sparse.headers["ETag"] != full.headers["ETag"]
        cached = client.get(
            f"{path}?fields=name", headers={"If-None-Match": sparse.headers["ETag"]}
        )
        assert cached.status_code == 304
        # The full representation's ETag does not validate the sparse one, nor back.
        assert (
            client.get(path, headers={"If-None-Match": sparse.headers["ETag"]}).status_code == 200
        )

    def test_links_only_when_named(self, client: Client, catalog: dict[str, Any]) -> None:
        store = catalog["store"]
        body = client.get(f"/stores/{store['id']}?fields=name,links").json
        assert body == {
            "id": store["id"],
            "name": store["name"],
            "links": {
                "self": f"/stores/{store['id']}",
                "items": f"/stores/{store['id']}/items",
                "tags": f"/stores/{store['id']}/tags",
            },
        }
        assert "links" not in client.get(f"/stores/{store['id']}?fields=name").json

    def test_a_tag_and_a_user(
        self, client: Client, as_alice: dict[str, str], catalog: dict[str, Any]
    ) -> None:
        tag = catalog["tag"]
        assert client.get(f"/tags/{tag['id']}?fields=store_id").json == {
            "id": tag["id"],
            "store_id": catalog["store"]["id"],
        }
        me = client.get("/users/me?fields=username", headers=as_alice)
        assert me.status_code == 200
        assert me.json == {"id": me.json["id"], "username": "alice"}
        by_id = client.get(f"/users/{me.json['id']}?fields=email", headers=as_alice)
        assert by_id.json == {"id": me.json["id"], "email": "alice@example.com"}

    def test_id_and_repeats(self, client: Client, catalog: dict[str, Any]) -> None:
        item = catalog["items"][1]
        response = client.get(f"/items/{item['id']}?fields=id,stock,stock")
        assert response.json == {"id": item["id"], "stock": 0}


class TestRefusals:
    @pytest.mark.parametrize(
        "path", ["/items/{item}", "/items", "/stores/{store}", "/stores", "/tags/{tag}"]
    )
    def test_an_unknown_field_is_named(
        self, client: Client, catalog: dict[str, Any], path: str
    ) -> None:
        url = path.format(
            item=catalog["items"][0]["id"], store=catalog["store"]["id"], tag=catalog["tag"]["id"]
        )
        body = assert_error(client.get(f"{url}?fields=name,colour,weight"), 422)
        message = body["errors"]["query"]["fields"][0]
        assert message.startswith("Unknown fields: 'colour', 'weight'. Known: id, name")

    def test_a_field_of_another_resource(self, client: Client, catalog: dict[str, Any]) -> None:
        store = catalog["store"]
        body = assert_error(client.get(f"/stores/{store['id']}?fields=price"), 422)
        assert body["errors"]["query"]["fields"][0].startswith("Unknown field: 'price'.")

    @pytest.mark.parametrize("field", ["links", "password"])
    def test_what_a_user_does_not_show(
        self, client: Client, as_alice: dict[str, str], field: str
    ) -> None:
        body = assert_error(client.get(f"/users/me?fields={field}", headers=as_alice), 422)
        assert body["errors"]["query"]["fields"][0].startswith(f"Unknown field: {field!r}.")

    @pytest.mark.parametrize("value", ["", ",", "name,,price", "name, price", "name%0A"])
    def test_empty_names(self, client: Client, catalog: dict[str, Any], value: str) -> None:
        assert_error(client.get(f"/items?fields={value}"), 422)

    def test_bounded(self, client: Client, catalog: dict[str, Any]) -> None:
        body = assert_error(client.get("/items?fields=" + ",".join(["name"] * 120)), 422)
        assert body["errors"]["query"]["fields"] == ["At most 500 characters."]
        body = assert_error(client.get("/tags/1?fields=" + ",".join(["name"] * 7)), 422)
        assert body["errors"]["query"]["fields"] == ["At most 6 names."]
        # Every name once: within both bounds.
        names = client.get("/openapi.json").json["components"]["schemas"]["Item"]["properties"]
        assert client.get("/items?fields=" + ",".join(names)).status_code == 200


class TestLists:
    def test_every_row_has_the_fields(self, client: Client, catalog: dict[str, Any]) -> None:
        response = client.get("/items?fields=name,tags")
        assert response.status_code == 200
        assert response.json == [
            {"id": item["id"], "name": item["name"], "tags": item_tags}
            for item, item_tags in zip(
                catalog["items"],
                [[{"id": catalog["tag"]["id"], "name": "dairy"}], [], []],
                strict=True,
            )
        ]

    def test_the_store_the_links_and_the_store_lists(
        self, client: Client, catalog: dict[str, Any]
    ) -> None:
        store = catalog["store"]
        item = catalog["items"][0]
        rows = client.get(f"/stores/{store['id']}/items?fields=store,links&page_size=1").json
        assert rows == [
            {
                "id": item["id"],
                "store": {"id": store["id"], "name": store["name"]},
                "links": item["links"],
            }
        ]
        assert client.get("/stores?fields=owner_id").json == [
            {"id": store["id"], "owner_id": store["owner_id"]}
        ]
        assert client.get(f"/stores/{store['id']}/tags?fields=name").json == [
            {"id": catalog["tag"]["id"], "name": "dairy"}
        ]

    def test_users_list(self, client: Client, admin: Any, auth: Any) -> None:
        response = client.get("/users?fields=role", headers=auth(admin))
        assert response.status_code == 200
        assert response.json == [{"id": admin.id, "role": "admin"}]

    def test_next_pages_keep_the_fields_and_cursors_ignore_them(
        self, client: Client, catalog: dict[str, Any]
    ) -> None:
        first = client.get("/items?fields=price&page_size=2")
        url = next_link(first)
        assert parse_qs(urlsplit(url).query)["fields"] == ["price"]
        second = client.get(url)
        assert second.json == [{"id": catalog["items"][2]["id"], "price": 2.5}]
        # The same cursor, without fields: the same row, whole.
        cursor = parse_qs(urlsplit(url).query)["cursor"][0]
        whole = client.get("/items", query_string={"page_size": 2, "cursor": cursor})
        assert whole.status_code == 200
        assert whole.json == [catalog["items"][2]]

    def test_a_list_of_items_reads_only_what_it_shows(
        self, app: Flask, client: Client, catalog: dict[str, Any]
    ) -> None:
        with count_queries(app) as full:
            assert client.get("/items").status_code == 200
        with count_queries(app) as sparse:
            response = client.get("/items?fields=name,price")
        assert response.status_code == 200
        [page] = [s for s in sparse if "FROM items" in s and "LIMIT" in s]
        [whole] = [s for s in full if "FROM items" in s and "LIMIT" in s]
        selected = page.split("FROM")[0]
        assert "items.name" in selected and "items.price" in selected
        for column in ("description", "metadata", "sku", "stores.name", "stock", "created_at"):
            assert column not in selected, column
            assert column in whole.split("FROM")[0], column
        # No tags shown: their statement is not run.
        assert any("item_tags" in s for s in full)
        assert not any("item_tags" in s for s in sparse)

    def test_links_read_the_store_id_they_need(
        self, app: Flask, client: Client, catalog: dict[str, Any]
    ) -> None:
        with count_queries(app) as statements:
            rows = client.get("/items?fields=links").json
        assert [row["links"] for row in rows] == [item["links"] for item in catalog["items"]]
        [page] = [s for s in statements if "FROM items" in s and "LIMIT" in s]
        assert "items.store_id" in page.split("FROM")[0]


def test_openapi_documents_fields(client: Client) -> None:
    spec = client.get("/openapi.json").json
    for path in ("/items", "/items/{item_id}", "/stores/{store_id}/tags", "/users/me"):
        [fields] = [
            p for p in spec["paths"][path]["get"]["parameters"] if p.get("name") == "fields"
        ]
        assert fields["in"] == "query"
        assert fields["schema"]["type"] == "string"
    tag_fields = next(
        p for p in spec["paths"]["/tags/{tag_id}"]["get"]["parameters"] if p.get("name") == "fields"
    )
    name = "(?:id|name|store_id|created_at|updated_at|links)"
    assert tag_fields["schema"]["pattern"] == f"^{name}(?:,{name}){{0,5}}$"
