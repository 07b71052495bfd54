"""API versions (§14, §16): /v1 and the vendor media type, API-Version, unknown versions."""

import io
import json
from typing import Any

import pytest
from flask import Flask

from helpers import CatalogFactory, Client, assert_error, snapshot

VENDOR = "application/vnd.stores.v1+json"


@pytest.fixture
def milk(api: CatalogFactory, as_alice: dict[str, str]) -> Any:
    return api.item(as_alice, api.store(as_alice), name="Milk")


class TestPrefix:
    def test_v1_serves_the_same_resource_as_the_unprefixed_path(
        self, client: Client, milk: Any
    ) -> None:
        plain = client.get(f"/items/{milk['id']}")
        versioned = client.get(f"/v1/items/{milk['id']}")
        assert versioned.status_code == 200
        # The same item; its links keep the version the client used (so its ETag,
        # of the body as sent, differs).
        plain_item, versioned_item = dict(plain.json), dict(versioned.json)
        plain_links, versioned_links = plain_item.pop("links"), versioned_item.pop("links")
        assert versioned_item == plain_item
        assert versioned_links == {name: f"/v1{url}" for name, url in plain_links.items()}
        assert versioned.mimetype == plain.mimetype == "application/json"
        assert versioned.headers["API-Version"] == plain.headers["API-Version"] == "1"
        # The default is version 1 and stays: the unprefixed path is not deprecated.
        assert "Deprecation" not in plain.headers and "Sunset" not in plain.headers

    def test_a_write_under_v1_answers_with_v1_urls(
        self, app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        store = api.store(as_alice)
        body = {"name": "Tea", "price": "2.00", "store_id": store["id"]}
        created = client.post("/v1/items", json=body, headers=as_alice)
        assert created.status_code == 201
        assert created.headers["Location"] == f"/v1/items/{created.json['id']}"
        assert created.headers["API-Version"] == "1"
        assert created.json["links"]["self"] == created.headers["Location"]
        read = client.get(f"/v1/items/{created.json['id']}").json
        assert read == created.json

    def test_list_links_keep_the_prefix(
        self, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        store = api.store(as_alice)
        for name in ("A", "B", "C"):
            api.item(as_alice, store, name=name)
        page = client.get("/v1/items?page_size=2")
        assert page.status_code == 200
        assert [i["name"] for i in page.json] == ["A", "B"]
        assert page.headers["Link"].startswith("</v1/items?page_size=2&cursor=")
        follow = page.headers["Link"].split(">")[0][1:]
        assert [i["name"] for i in client.get(follow).json] == ["C"]

    def test_v2_is_404_in_the_envelope_naming_the_versions(self, client: Client) -> None:
        for path in ("/v2/items", "/v2", "/v0/stores/1"):
            body = assert_error(client.get(path), 404)
            version = path.split("/")[1][1:]
            assert body["message"] == (
                f"API version {version} does not exist; supported versions: 1 (/v1/...)."
            )

    def test_an_unknown_path_under_v1_is_the_ordinary_404(self, client: Client) -> None:
        response = client.get("/v1/nothing")
        assert assert_error(response, 404)["message"] == "Not found: no resource at this path."
        assert response.headers["API-Version"] == "1"

    def test_deprecated_singular_paths_are_not_served_under_v1(
        self, app: Flask, client: Client, as_alice: dict[str, str], milk: Any
    ) -> None:
        assert client.get(f"/item/{milk['id']}").status_code == 200  # still, deprecated
        response = client.get(f"/v1/item/{milk['id']}")
        assert_error(response, 404)
        assert "Deprecation" not in response.headers
        before = snapshot(app)
        store = {"name": "Nope"}
        assert_error(client.post("/v1/store", json=store, headers=as_alice), 404)
        assert snapshot(app) == before

    def test_errors_and_probes_carry_api_version_too(self, client: Client) -> None:
        for response in (
            client.get("/health"),
            client.get("/v1/health"),
            client.get("/items/999"),
            client.delete("/items"),
        ):
            assert response.headers["API-Version"] == "1"


class TestMediaType:
    def test_the_vendor_type_selects_v1_and_comes_back(self, client: Client, milk: Any) -> None:
        response = client.get(f"/items/{milk['id']}", headers={"Accept": VENDOR})
        assert response.status_code == 200
        assert response.headers["Content-Type"] == VENDOR
        assert response.json["id"] == milk["id"]
        assert response.headers["API-Version"] == "1"
        assert "Accept" in response.vary
        listed = client.get("/v1/items", headers={"Accept": f"{VENDOR}, application/json;q=0.5"})
        assert listed.headers["Content-Type"] == VENDOR
        assert [i["id"] for i in listed.json] == [milk["id"]]

    def test_plain_json_otherwise(self, client: Client, milk: Any) -> None:
        for accept in ("application/json", "*/*", "application/*", None):
            headers = {"Accept": accept} if accept else {}
            response = client.get(f"/items/{milk['id']}", headers=headers)
            assert response.status_code == 200
            assert response.headers["Content-Type"] == "application/json"

    def test_an_unknown_version_in_accept_is_406_naming_the_versions(
        self, client: Client, milk: Any
    ) -> None:
        response = client.get(
            f"/items/{milk['id']}", headers={"Accept": "application/vnd.stores.v2+json"}
        )
        body = assert_error(response, 406)
        assert body["message"] == (
            "API version 2 does not exist; supported versions: 1 (application/vnd.stores.v1+json)."
        )
        assert response.headers["API-Version"] == "1"

    def test_an_error_asked_for_in_the_vendor_type_comes_in_it(self, client: Client) -> None:
        response = client.get("/items/999", headers={"Accept": VENDOR})
        assert response.status_code == 404
        assert response.headers["Content-Type"] == VENDOR
        assert response.json["message"] == "Item 999 not found."

    @pytest.mark.config(MAX_CONTENT_LENGTH=200)
    def test_errors_raised_before_negotiation_come_in_it_too(
        self, app: Flask, client: Client
    ) -> None:
        """Routing, the request head and the body are refused before an operation is
        chosen: those errors are the ones a view raises, in the type asked for."""
        asked = {"Accept": VENDOR}
        user = {"username": "zoe", "email": "zoe@example.com", "password": "correct horse"}
        chunked = {**asked, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        before = snapshot(app)
        for response, status, message in (
            (client.get("/nothing", headers=asked), 404, "Not found: no resource at this path."),
            (client.get("/v2/items", headers=asked), 404, "API version 2 does not exist; "),
            (client.delete("/items", headers=asked), 405, "Method not allowed."),
            (
                client.get(f"/items?x={'a' * 8200}", headers=asked),
                414,
                "The request target is over 8190 bytes.",
            ),
            (
                client.get("/items", headers={**asked, "X-Long": "y" * 8200}),
                431,
                "The X-Long header is over 8190 bytes.",
            ),
            (
                client.post(
                    "/register",
                    data=json.dumps(user),
                    headers={**asked, "Content-Type": "text/plain"},
                ),
                415,
                "Request bodies must be JSON (Content-Type: application/json).",
            ),
            (
                client.post(
                    "/register",
                    input_stream=io.BytesIO(json.dumps(user | {"bio": "a" * 300}).encode()),
                    headers=chunked,
                ),
                413,
                "Request body too large.",
            ),
        ):
            assert response.status_code == status, response.get_data(as_text=True)
            assert response.headers["Content-Type"] == VENDOR, status
            assert response.json["code"] == status
            assert response.json["message"].startswith(message)
            assert set(response.json) == {"code", "status", "message"}
            assert "Accept" in response.vary
            assert response.headers["API-Version"] == "1"
        assert snapshot(app) == before

    def test_a_write_in_the_vendor_type(
        self, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        store = api.store(as_alice)
        body = {"name": "Tea", "price": "2.00", "store_id": store["id"]}
        response = client.post("/v1/items", json=body, headers={**as_alice, "Accept": VENDOR})
        assert response.status_code == 201
        assert response.headers["Content-Type"] == VENDOR


def test_openapi_lists_each_path_once_with_both_servers(client: Client) -> None:
    spec = client.get("/openapi.json").json
    assert [s["url"] for s in spec["servers"]] == ["/", "/v1"]
    assert "/items" in spec["paths"]
    assert not any(path.startswith("/v1") for path in spec["paths"])
    assert client.get("/v1/openapi.json").json == spec
