"""Last-Modified, If-Modified-Since and If-Unmodified-Since on items, stores and tags
(contract §14, §16; core/web/conditions.py)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import update
from werkzeug.http import http_date

from db import db
from helpers import CatalogFactory, Client, assert_error, snapshot
from models import Item, Store, Tag

T0 = datetime(2026, 11, 21, 10, 0, 0, 250000, tzinfo=UTC)  # a quarter second past
HTTP_T0 = "Sat, 21 Nov 2026 10:00:00 GMT"


def set_updated_at(app: Flask, model: Any, row_id: int, when: datetime) -> None:
    with app.app_context():
        db.session.execute(update(model).where(model.id == row_id).values(updated_at=when))
        db.session.commit()


@pytest.fixture
def catalog(app: Flask, as_alice: dict[str, str], api: CatalogFactory) -> dict[str, Any]:
    store = api.store(as_alice)
    tag = api.tag(as_alice, store)
    item = api.link(as_alice, api.item(as_alice, store), tag)
    for model, row in ((Store, store), (Tag, tag), (Item, item)):
        set_updated_at(app, model, row["id"], T0)
    return {"store": store, "tag": tag, "item": item}


def path(catalog: dict[str, Any], kind: str) -> str:
    return f"/{kind}s/{catalog[kind]['id']}"


KINDS = ["item", "store", "tag"]


class TestLastModified:
    @pytest.mark.parametrize("kind", KINDS)
    def test_is_updated_at_to_the_second(
        self, client: Client, catalog: dict[str, Any], kind: str
    ) -> None:
        response = client.get(path(catalog, kind))
        assert response.status_code == 200
        assert response.headers["Last-Modified"] == HTTP_T0
        assert response.json["updated_at"] == T0.isoformat()
        head = client.head(path(catalog, kind))
        assert head.headers["Last-Modified"] == HTTP_T0

    def test_an_item_shows_when_its_store_or_a_tag_changed(
        self, app: Flask, client: Client, catalog: dict[str, Any]
    ) -> None:
        item = path(catalog, "item")
        later = T0 + timedelta(minutes=5)
        set_updated_at(app, Store, catalog["store"]["id"], later)
        assert client.get(item).headers["Last-Modified"] == http_date(later.replace(microsecond=0))
        latest = T0 + timedelta(hours=1)
        set_updated_at(app, Tag, catalog["tag"]["id"], latest)
        assert client.get(item).headers["Last-Modified"] == http_date(latest.replace(microsecond=0))

    def test_not_on_lists(self, client: Client, catalog: dict[str, Any]) -> None:
        store_id = catalog["store"]["id"]
        for url in ("/items", "/stores", f"/stores/{store_id}/items", f"/stores/{store_id}/tags"):
            assert "Last-Modified" not in client.get(url).headers


class TestIfModifiedSince:
    @pytest.mark.parametrize("kind", KINDS)
    def test_not_modified_since_the_date_sent(
        self, client: Client, catalog: dict[str, Any], kind: str
    ) -> None:
        etag = client.get(path(catalog, kind)).headers["ETag"]
        for since in (HTTP_T0, "Sat, 21 Nov 2026 10:00:01 GMT"):
            response = client.get(path(catalog, kind), headers={"If-Modified-Since": since})
            assert response.status_code == 304
            assert response.get_data() == b""
            # RFC 9110 15.4.5: the ETag, not Last-Modified (Werkzeug drops it on a 304).
            assert response.headers["ETag"] == etag

    @pytest.mark.parametrize("since", ["Sat, 21 Nov 2026 09:59:59 GMT", "yesterday", ""])
    def test_modified_or_not_a_date(
        self, client: Client, catalog: dict[str, Any], since: str
    ) -> None:
        response = client.get(path(catalog, "store"), headers={"If-Modified-Since": since})
        assert response.status_code == 200
        assert response.json["id"] == catalog["store"]["id"]

    def test_if_none_match_takes_precedence(self, client: Client, catalog: dict[str, Any]) -> None:
        store = path(catalog, "store")
        etag = client.get(store).headers["ETag"]
        # The date says "not modified", the ETag does not match: the ETag decides.
        stale = client.get(store, headers={"If-Modified-Since": HTTP_T0, "If-None-Match": '"x"'})
        assert stale.status_code == 200
        # The date says "modified", the ETag matches: the ETag decides.
        old = "Sat, 21 Nov 2026 09:00:00 GMT"
        fresh = client.get(store, headers={"If-Modified-Since": old, "If-None-Match": etag})
        assert fresh.status_code == 304

    def test_a_change_is_seen(
        self, client: Client, as_alice: dict[str, str], catalog: dict[str, Any]
    ) -> None:
        store = path(catalog, "store")
        assert client.patch(store, json={"name": "Renamed"}, headers=as_alice).status_code == 200
        response = client.get(store, headers={"If-Modified-Since": HTTP_T0})
        assert response.status_code == 200
        assert response.json["name"] == "Renamed"
        # The item shows its store's name: it changed too.
        item = client.get(path(catalog, "item"), headers={"If-Modified-Since": HTTP_T0})
        assert item.status_code == 200
        assert item.json["store"]["name"] == "Renamed"


class TestIfUnmodifiedSince:
    @pytest.mark.parametrize(
        ("kind", "method", "body"),
        [
            ("item", "patch", {"price": 9}),
            ("item", "put", {"name": "Milk", "price": 9}),
            ("item", "delete", None),
            ("store", "patch", {"name": "New"}),
            ("store", "put", {"name": "New"}),
            ("tag", "patch", {"name": "milk"}),
        ],
    )
    def test_changed_since_is_412_and_nothing_changes(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        catalog: dict[str, Any],
        kind: str,
        method: str,
        body: Any,
    ) -> None:
        before = snapshot(app)
        headers = as_alice | {"If-Unmodified-Since": "Sat, 21 Nov 2026 09:59:59 GMT"}
        response = getattr(client, method)(path(catalog, kind), json=body, headers=headers)
        envelope = assert_error(response, 412)
        assert "If-Unmodified-Since" in envelope["message"]
        assert snapshot(app) == before

    @pytest.mark.parametrize("since", [HTTP_T0, "Sun, 22 Nov 2026 00:00:00 GMT", "not a date"])
    def test_unchanged_since_goes_ahead(
        self, client: Client, as_alice: dict[str, str], catalog: dict[str, Any], since: str
    ) -> None:
        headers = as_alice | {"If-Unmodified-Since": since}
        response = client.patch(path(catalog, "item"), json={"price": 9}, headers=headers)
        assert response.status_code == 200
        assert response.json["price"] == 9

    def test_an_item_changed_by_its_tag(
        self, app: Flask, client: Client, as_alice: dict[str, str], catalog: dict[str, Any]
    ) -> None:
        set_updated_at(app, Tag, catalog["tag"]["id"], T0 + timedelta(seconds=1))
        headers = as_alice | {"If-Unmodified-Since": HTTP_T0}
        response = client.patch(path(catalog, "item"), json={"price": 9}, headers=headers)
        assert_error(response, 412)

    def test_if_match_takes_precedence(
        self, client: Client, as_alice: dict[str, str], catalog: dict[str, Any]
    ) -> None:
        store = path(catalog, "store")
        etag = client.get(store).headers["ETag"]
        old = "Sat, 21 Nov 2026 09:00:00 GMT"
        # The date says "changed", the ETag matches: the ETag decides.
        headers = as_alice | {"If-Unmodified-Since": old, "If-Match": etag}
        assert client.patch(store, json={"name": "New"}, headers=headers).status_code == 200
        # The date says "unchanged", the ETag does not match: 412.
        headers = as_alice | {"If-Unmodified-Since": HTTP_T0, "If-Match": etag}
        assert_error(client.patch(store, json={"name": "Newer"}, headers=headers), 412)


def test_openapi_documents_the_headers(client: Client) -> None:
    paths = client.get("/openapi.json").json["paths"]

    def refs(path: str, method: str) -> list[str]:
        return [p.get("$ref", "").rsplit("/", 1)[-1] for p in paths[path][method]["parameters"]]

    for path in ("/items/{item_id}", "/stores/{store_id}", "/tags/{tag_id}"):
        assert "Last-Modified" in paths[path]["get"]["responses"]["200"]["headers"]
        assert "IF_MODIFIED_SINCE" in refs(path, "get")
        for method in ("patch", "delete"):
            assert "IF_UNMODIFIED_SINCE" in refs(path, method)
    # Users have no Last-Modified (§16), lists neither.
    assert "IF_MODIFIED_SINCE" not in refs("/users/{user_id}", "get")
    assert "IF_UNMODIFIED_SINCE" not in refs("/users/{user_id}", "patch")
    assert "IF_MODIFIED_SINCE" not in refs("/items", "get")
