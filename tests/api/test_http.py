"""HTTP behaviour: conditional requests, request ids and logs, headers, CORS,
deprecated paths, probes and docs (the error envelope: test_error_envelope.py)."""

import json
import logging
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from core.web.request_log import JsonFormatter
from helpers import CatalogFactory, Client, assert_error, bearer, count_queries, query, snapshot
from models import Store, User


class TestConditionalRequests:
    @pytest.fixture
    def store(self, as_alice: dict[str, str], api: CatalogFactory) -> Any:
        return api.store(as_alice)

    def test_etag_and_if_none_match(self, client: Client, store: Any) -> None:
        response = client.get(f"/stores/{store['id']}")
        etag = response.headers["ETag"]
        cached = client.get(f"/stores/{store['id']}", headers={"If-None-Match": etag})
        assert cached.status_code == 304
        assert cached.get_data() == b""
        assert cached.headers["ETag"] == etag
        assert (
            client.get(f"/stores/{store['id']}", headers={"If-None-Match": '"other"'}).status_code
            == 200
        )

    def test_head(self, client: Client, store: Any) -> None:
        response = client.head(f"/stores/{store['id']}")
        assert response.status_code == 200
        assert response.get_data() == b""
        assert response.headers["ETag"] == client.get(f"/stores/{store['id']}").headers["ETag"]

    # As in production, where flask-smorest's "ETag not checked" is a warning, not an
    # error: a write that skipped the check would go ahead, and only the 412 tells.
    @pytest.mark.filterwarnings("default")
    @pytest.mark.parametrize(
        ("method", "body"), [("put", {"name": "New"}), ("patch", {"name": "New"}), ("delete", None)]
    )
    # An If-Match with no entity-tag to read matches nothing either (RFC 9110 13.1.1).
    @pytest.mark.parametrize("sent", ['"stale"', ",", '"', "W/"])
    def test_stale_if_match_changes_nothing(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        method: Any,
        body: Any,
        sent: str,
    ) -> None:
        before = snapshot(app)
        headers = as_alice | {"If-Match": sent}
        response = getattr(client, method)(f"/stores/{store['id']}", json=body, headers=headers)
        assert_error(response, 412)
        assert snapshot(app) == before

    def test_current_if_match_goes_ahead_and_the_etag_changes(
        self, client: Client, as_alice: dict[str, str], store: Any
    ) -> None:
        etag = client.get(f"/stores/{store['id']}").headers["ETag"]
        response = client.patch(
            f"/stores/{store['id']}", json={"name": "New"}, headers=as_alice | {"If-Match": etag}
        )
        assert response.status_code == 200
        assert response.headers["ETag"] != etag
        assert response.headers["ETag"] == client.get(f"/stores/{store['id']}").headers["ETag"]
        # The old value is now stale.
        again = client.patch(
            f"/stores/{store['id']}", json={"name": "Newer"}, headers=as_alice | {"If-Match": etag}
        )
        assert_error(again, 412)

    @pytest.mark.filterwarnings("default")
    def test_item_and_tag_etags(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        api: CatalogFactory,
    ) -> None:
        item = api.item(as_alice, store)
        tag = api.tag(as_alice, store)
        item_etag = client.get(f"/items/{item['id']}").headers["ETag"]
        api.link(as_alice, item, tag)  # the representation changed: so did the ETag
        response = client.patch(
            f"/items/{item['id']}", json={"price": 9}, headers=as_alice | {"If-Match": item_etag}
        )
        assert_error(response, 412)
        tag_etag = client.get(f"/tags/{tag['id']}").headers["ETag"]
        ok = client.patch(
            f"/tags/{tag['id']}", json={"name": "milk"}, headers=as_alice | {"If-Match": tag_etag}
        )
        assert ok.status_code == 200
        assert_error(
            client.delete(f"/tags/{tag['id']}", headers=as_alice | {"If-Match": tag_etag}), 412
        )

    @pytest.mark.filterwarnings("default")
    def test_taking_a_tag_off_checks_the_items_etag(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        api: CatalogFactory,
    ) -> None:
        """A link is part of its item: DELETE /items/{id}/tags/{tag_id} with a stale
        If-Match (the item's, before a change) is a 412 and the tag stays on."""
        item = api.item(as_alice, store)
        tag = api.tag(as_alice, store)
        api.link(as_alice, item, tag)
        stale = client.get(f"/items/{item['id']}").headers["ETag"]
        client.patch(f"/items/{item['id']}", json={"price": 9}, headers=as_alice)
        path = f"/items/{item['id']}/tags/{tag['id']}"
        before = snapshot(app)
        for sent in (stale, '"garbage"'):
            assert_error(client.delete(path, headers=as_alice | {"If-Match": sent}), 412)
        assert snapshot(app) == before
        current = client.get(f"/items/{item['id']}").headers["ETag"]
        assert client.delete(path, headers=as_alice | {"If-Match": current}).status_code == 204
        assert client.get(f"/items/{item['id']}").json["tags"] == []

    def test_if_match_star(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any
    ) -> None:
        response = client.patch(
            f"/stores/{store['id']}", json={"name": "New"}, headers=as_alice | {"If-Match": "*"}
        )
        assert response.status_code == 200
        assert response.json == store | {"name": "New", "updated_at": response.json["updated_at"]}
        assert response.json["updated_at"] > store["updated_at"]
        assert client.get(f"/stores/{store['id']}").json == response.json
        assert query(app, select(Store.name)) == [("New",)]
        # "*" matches any current representation, but not a missing one.
        missing = client.patch(
            "/stores/999", json={"name": "X"}, headers=as_alice | {"If-Match": "*"}
        )
        assert_error(missing, 404)

    @pytest.mark.parametrize(
        "header",
        ["W/{etag}", '"other", W/{etag}', "{etag}", '"other", {etag}', "*"],
    )
    def test_if_none_match_compares_weakly(self, client: Client, store: Any, header: Any) -> None:
        """RFC 9110 13.1.2: a weak ETag in If-None-Match matches the strong one."""
        etag = client.get(f"/stores/{store['id']}").headers["ETag"]
        headers = {"If-None-Match": header.format(etag=etag)}
        for response in (
            client.get(f"/stores/{store['id']}", headers=headers),
            client.head(f"/stores/{store['id']}", headers=headers),
        ):
            assert response.status_code == 304
            assert response.get_data() == b""
            assert response.headers["ETag"] == etag
        other = client.get(f"/stores/{store['id']}", headers={"If-None-Match": 'W/"other"'})
        assert other.status_code == 200
        assert other.json == store

    @pytest.mark.filterwarnings("default")
    @pytest.mark.parametrize("method", ["put", "patch", "delete"])
    def test_if_match_compares_strongly(
        self, app: Flask, client: Client, as_alice: dict[str, str], store: Any, method: Any
    ) -> None:
        """RFC 9110 13.1.1: a weak ETag never matches in If-Match."""
        etag = client.get(f"/stores/{store['id']}").headers["ETag"]
        before = snapshot(app)
        headers = as_alice | {"If-Match": f"W/{etag}"}
        body = None if method == "delete" else {"name": "New"}
        response = getattr(client, method)(f"/stores/{store['id']}", json=body, headers=headers)
        assert_error(response, 412)
        assert snapshot(app) == before
        assert client.get(f"/stores/{store['id']}").json == store

    @pytest.mark.filterwarnings("default")
    @pytest.mark.parametrize("method", ["put", "patch", "delete"])
    @pytest.mark.parametrize("header", ["*", "{etag}", 'W/{etag}, "other"'])
    def test_if_none_match_on_a_change(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        store: Any,
        method: Any,
        header: Any,
    ) -> None:
        """RFC 9110 13.1.2: on a change, an If-None-Match that matches the current
        representation ("*" matches any) is false: 412, nothing changes."""
        etag = client.get(f"/stores/{store['id']}").headers["ETag"]
        before = snapshot(app)
        body = None if method == "delete" else {"name": "New"}
        headers = as_alice | {"If-None-Match": header.format(etag=etag)}
        response = getattr(client, method)(f"/stores/{store['id']}", json=body, headers=headers)
        assert assert_error(response, 412)["message"].startswith(
            "The resource is as If-None-Match says you have it"
        )
        assert snapshot(app) == before
        other = as_alice | {"If-None-Match": '"other"'}
        response = getattr(client, method)(f"/stores/{store['id']}", json=body, headers=other)
        assert response.status_code == (204 if method == "delete" else 200)


class TestRequestIdAndLogs:
    def test_a_sane_request_id_is_echoed(self, client: Client) -> None:
        assert (
            client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"]
            == "abc-123"
        )

    @pytest.mark.parametrize("bad", ["has space", "x" * 129, "tab\tchar", "ünïcode"])
    def test_an_insane_one_is_replaced(self, client: Client, bad: Any) -> None:
        returned = client.get("/health", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert returned != bad and len(returned) == 32

    def test_every_response_has_one_even_errors(self, client: Client) -> None:
        for response in (client.get("/health"), client.get("/nowhere"), client.delete("/stores")):
            assert len(response.headers["X-Request-ID"]) == 32

    def test_one_structured_line_per_request(
        self,
        client: Client,
        alice: User,
        as_alice: dict[str, str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        with caplog.at_level(logging.INFO, logger="stores.access"):
            client.get("/users/me", headers=as_alice | {"X-Request-ID": "req-1"})
        [record] = [r for r in caplog.records if r.name == "stores.access"]
        line = json.loads(JsonFormatter().format(record))
        assert line["request_id"] == "req-1"
        assert line["method"] == "GET" and line["path"] == "/users/me" and line["status"] == 200
        assert line["user_id"] == alice.id
        assert line["client_ip"] == "127.0.0.1"
        assert line["level"] == "INFO" and isinstance(line["duration_ms"], float)
        assert line["time"].endswith("+00:00")

    @pytest.mark.config(TRUSTED_PROXIES=1)
    def test_client_ip_from_a_trusted_proxy(
        self, client: Client, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO, logger="stores.access"):
            client.get("/health", headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7"})
        assert caplog.records[-1].__dict__["client_ip"] == "198.51.100.7"

    def test_forwarded_for_is_ignored_without_trusted_proxies(
        self, client: Client, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO, logger="stores.access"):
            client.get("/health", headers={"X-Forwarded-For": "203.0.113.9"})
        assert caplog.records[-1].__dict__["client_ip"] == "127.0.0.1"


class TestHeaders:
    def test_nosniff_everywhere_and_cache_rules(
        self, client: Client, alice: User, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        store = api.store(as_alice)
        assert client.get("/nowhere").headers["X-Content-Type-Options"] == "nosniff"
        assert client.get(f"/stores/{store['id']}").headers["Cache-Control"] == "public, no-cache"
        assert client.get("/users/me", headers=as_alice).headers["Cache-Control"] == "no-store"
        assert (
            client.post("/login", json={"username": "alice", "password": "x" * 8}).headers[
                "Cache-Control"
            ]
            == "no-store"
        )
        assert (
            client.patch(f"/stores/{store['id']}", json={}, headers=as_alice).headers[
                "Cache-Control"
            ]
            == "no-store"
        )
        assert "Strict-Transport-Security" not in client.get("/health").headers
        assert "Retry-After" not in client.get("/stores").headers

    def test_no_content_has_no_content_type(
        self, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        """A 204 or 304 has no body, so nothing to give a type (RFC 9110 §8.3)."""
        store = api.store(as_alice)
        item = api.item(as_alice, store)
        etag = client.get(f"/items/{item['id']}").headers["ETag"]
        not_modified = client.get(f"/items/{item['id']}", headers={"If-None-Match": etag})
        deleted = client.delete(f"/items/{item['id']}", headers=as_alice)
        assert (not_modified.status_code, deleted.status_code) == (304, 204)
        for response in (not_modified, deleted):
            assert response.get_data() == b""
            assert "Content-Type" not in response.headers
            assert response.headers["X-Content-Type-Options"] == "nosniff"

    @pytest.mark.config(HSTS_SECONDS=31536000)
    def test_hsts_when_configured(self, client: Client) -> None:
        assert (
            client.get("/health").headers["Strict-Transport-Security"]
            == "max-age=31536000; includeSubDomains"
        )

    def test_no_cors_by_default(self, client: Client) -> None:
        response = client.get("/stores", headers={"Origin": "https://shop.example"})
        assert "Access-Control-Allow-Origin" not in response.headers

    @pytest.mark.config(CORS_ORIGINS=["https://shop.example"])
    def test_cors_for_configured_origins(self, client: Client) -> None:
        preflight = client.options(
            "/items",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Authorization, Content-Type",
            },
        )
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://shop.example"
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        response = client.get("/stores", headers={"Origin": "https://shop.example"})
        assert "X-Total-Count" in response.headers["Access-Control-Expose-Headers"]
        other = client.get("/stores", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers


class TestLegacyPaths:
    def test_post_item_is_post_items_plus_deprecation(
        self, app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
    ) -> None:
        store = api.store(as_alice)
        body = {"name": "Milk", "price": "1.99", "store_id": store["id"]}
        legacy = client.post("/item", json=body, headers=as_alice)
        assert legacy.status_code == 201
        assert legacy.headers["Deprecation"] == "@1795219200"
        assert legacy.headers["Sunset"] == "Sat, 01 May 2027 00:00:00 GMT"
        assert legacy.headers["Link"] == '</items>; rel="successor-version"'
        assert legacy.headers["Location"] == f"/items/{legacy.json['id']}"
        assert legacy.json["links"]["self"] == legacy.headers["Location"]
        modern = client.post("/items", json=body | {"name": "Bread"}, headers=as_alice)
        assert "Deprecation" not in modern.headers
        assert {
            k: v
            for k, v in legacy.json.items()
            if k not in ("id", "name", "created_at", "updated_at", "links")
        } == {
            k: v
            for k, v in modern.json.items()
            if k not in ("id", "name", "created_at", "updated_at", "links")
        }

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            ("/store", "/stores"),
            ("/store/{s}", "/stores/{s}"),
            ("/store/{s}/tag", "/stores/{s}/tags"),
            ("/item", "/items"),
            ("/item/{i}", "/items/{i}"),
            ("/tag/{t}", "/tags/{t}"),
            ("/user/{u}", "/users/{u}"),
        ],
    )
    def test_reads_answer_like_the_canonical_path(
        self,
        client: Client,
        alice: User,
        as_alice: dict[str, str],
        api: CatalogFactory,
        old: Any,
        new: Any,
    ) -> None:
        store = api.store(as_alice)
        item, tag = api.item(as_alice, store), api.tag(as_alice, store)
        ids = {"s": store["id"], "i": item["id"], "t": tag["id"], "u": alice.id}
        old, new = old.format(**ids), new.format(**ids)
        legacy, canonical = client.get(old, headers=as_alice), client.get(new, headers=as_alice)
        assert legacy.status_code == canonical.status_code == 200
        assert legacy.json == canonical.json
        assert f'<{new}>; rel="successor-version"' in legacy.headers.getlist("Link")

    @pytest.mark.parametrize("old", ["/item/{i}/tag/{t}", "/items/{i}/tag/{t}"])
    def test_tag_links(
        self, client: Client, as_alice: dict[str, str], api: CatalogFactory, old: Any
    ) -> None:
        store = api.store(as_alice)
        item, tag = api.item(as_alice, store), api.tag(as_alice, store)
        path = old.format(i=item["id"], t=tag["id"])
        assert client.post(path, headers=as_alice).status_code == 201
        response = client.delete(path, headers=as_alice)
        assert response.status_code == 204
        assert response.headers["Deprecation"]

    def test_not_in_the_openapi_document(self, client: Client) -> None:
        paths = client.get("/openapi.json").json["paths"]
        assert not [
            p
            for p in paths
            if p.startswith(("/store/", "/item/", "/tag/", "/user/")) or p in ("/store", "/item")
        ]


class TestProbesAndDocs:
    # With credentials too: a gateway that adds its Authorization header to the probe
    # must not make liveness depend on the database (the token's user, the key's row).
    @pytest.mark.parametrize("sent", [None, "token", "sk_" + "A" * 43, "garbage"])
    def test_health_does_not_touch_the_database(
        self, app: Flask, client: Client, as_alice: dict[str, str], sent: str | None
    ) -> None:
        headers = {} if sent is None else as_alice if sent == "token" else bearer(sent)
        with count_queries(app) as statements:
            response = client.get("/health", headers=headers)
        assert response.json == {"status": "ok"}
        assert statements == []

    def test_ready(self, app: Flask, client: Client) -> None:
        response = client.get("/ready")
        assert response.status_code == 200
        expected = {"database": "ok"} | ({"redis": "ok"} if app.config["REDIS_URL"] else {})
        assert response.json == {"status": "ok", "checks": expected}

    def test_openapi_document(self, client: Client) -> None:
        spec = client.get("/openapi.json").json
        assert spec["openapi"].startswith("3.")
        assert spec["components"]["securitySchemes"]["bearerAuth"] == {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
        }
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                if method == "parameters":
                    continue
                assert operation.get("summary"), (method, path)
        assert spec["paths"]["/stores"]["post"]["security"] == [{"bearerAuth": []}]
        assert "security" not in spec["paths"]["/stores"]["get"]
        if_match = spec["components"]["parameters"]["IF_MATCH"]
        assert if_match["required"] is False

    def test_swagger_ui_is_served_without_a_cdn(self, client: Client) -> None:
        page = client.get("/swagger-ui").get_data(as_text=True)
        assert "/swagger-ui/assets/swagger-ui-bundle.js" in page
        assert "://" not in page.replace('url: "/openapi.json"', "")
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"):
            with client.get(f"/swagger-ui/assets/{asset}") as response:
                assert response.status_code == 200 and len(response.get_data()) > 10_000
        assert_error(client.get("/swagger-ui/assets/../../app.py"), 404)


def test_lists_have_an_etag_that_follows_the_page(
    client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    store = api.store(as_alice)
    first = client.get("/stores")
    etag = first.headers["ETag"]
    assert client.get("/stores", headers={"If-None-Match": etag}).status_code == 304
    api.store(as_alice, "Second")
    assert client.get("/stores", headers={"If-None-Match": etag}).status_code == 200
    assert client.get("/stores").headers["ETag"] != etag
    api.item(as_alice, store)
    items_etag = client.get("/items").headers["ETag"]
    client.patch(f"/stores/{store['id']}", json={"name": "Renamed"}, headers=as_alice)
    assert client.get("/items").headers["ETag"] != items_etag  # the nested store name changed


def test_every_field_of_every_schema_has_an_example(client: Client) -> None:
    """Swagger UI fills its forms and sample responses from these."""
    spec = client.get("/openapi.json").json
    missing = [
        f"{name}.{field}"
        for name, schema in spec["components"]["schemas"].items()
        if name != "PaginationMetadata"  # flask-smorest's; X-Pagination is documented as text
        for field, prop in schema.get("properties", {}).items()
        if "example" not in prop
        and "$ref" not in prop
        and prop.get("type") != "array"
        and "allOf" not in prop
    ]
    assert missing == []
    for name, response in spec["components"]["responses"].items():
        if name != "DEFAULT_ERROR" and "content" in response:
            example = response["content"]["application/json"]["example"]
            assert example["message"] and example["status"] == response["description"]


def test_hooks_run_in_the_boot_order(app: Flask) -> None:
    """app.BOOT_ORDER decides the hooks' order: the request id first, the security
    headers after the limiter's, an idempotency key claimed after the limiter."""

    def names(hooks: Any) -> Any:
        return [getattr(hook, "func", hook).__qualname__ for hook in hooks]

    before = names(app.before_request_funcs[None])
    assert before == [
        "_start_request",
        "_start",  # metrics: the request's clock
        "_continue_trace",
        "refuse_oversized_head",
        "refuse_empty_segments",  # before a body is judged: no route, whatever it is
        "require_json_body",
        "refuse_unknown_version",
        "Limiter._check_request_limit",
        "check_scopes",  # an API key within its scopes, after the limiter counted it
        "negotiate",
        "claim",
    ]
    # after_request and teardown hooks run last-registered first.
    after = names(reversed(app.after_request_funcs[None]))
    assert after == [
        "record",
        "label",
        "Limiter.__inject_headers",
        "version_header",
        "security_headers",
        "_observe",
        "_finish_request",
    ]
    teardowns = names(reversed(app.teardown_appcontext_funcs))
    assert teardowns == ["close_session", "SQLAlchemy._teardown_session"]


class TestRequestHead:
    """§2: a request head out of bounds is 414 / 431 in the envelope, and changes
    nothing (tests/system/test_request_head.py: the same under gunicorn)."""

    def test_a_long_target_is_414(
        self, app: Flask, client: Client, as_alice: dict[str, str]
    ) -> None:
        before = snapshot(app)
        response = client.post(f"/stores?x={'a' * 8200}", json={"name": "A"}, headers=as_alice)
        body = assert_error(response, 414)
        assert body["message"] == "The request target is over 8190 bytes."
        assert snapshot(app) == before
        assert client.get(f"/items?_x={'a' * 8000}").status_code == 200

    def test_a_long_header_is_431(self, client: Client) -> None:
        body = assert_error(client.get("/items", headers={"X-Long": "y" * 8200}), 431)
        assert body["message"] == "The X-Long header is over 8190 bytes."
        assert client.get("/items", headers={"X-Long": "y" * 8000}).status_code == 200

    def test_too_many_headers_is_431(self, client: Client) -> None:
        headers = {f"X-F{n}": "1" for n in range(101)}
        body = assert_error(client.get("/items", headers=headers), 431)
        assert body["message"] == "More than 100 header fields."

    @pytest.mark.config(MAX_HEADER_BYTES=100_000)
    def test_the_headers_total_is_bounded_too(self, client: Client) -> None:
        headers = {f"X-F{n}": "z" * 7000 for n in range(10)}
        body = assert_error(client.get("/items", headers=headers), 431)
        assert body["message"] == "The headers are over 65536 bytes."


class TestEmptyPathSegments:
    """A path with an empty segment is not a route: 404 in the envelope. Werkzeug merged
    the slashes by redirecting (308, HTML), to a Location built from the Host header."""

    @pytest.mark.parametrize("path", ["/items//1", "//items", "/stores//1/items", "/v1//items"])
    @pytest.mark.parametrize("method", ["GET", "POST"])
    def test_is_404_with_no_redirect(
        self, app: Flask, client: Client, as_alice: dict[str, str], path: str, method: str
    ) -> None:
        before = snapshot(app)
        response = client.open(
            method=method,
            json={"name": "Slashed"},
            headers=as_alice | {"Host": "evil.example"},
            # As a server sets them from the request target (as a test client's path,
            # "//items" would name a host).
            environ_overrides={"PATH_INFO": path, "RAW_URI": path},
        )
        body = assert_error(response, 404)
        assert body["message"] == "Not found: no resource at this path."
        assert "Location" not in response.headers
        assert snapshot(app) == before

    def test_no_route_redirects(self, app: Flask) -> None:
        """Nor does any rule redirect another way (strict slashes: only / ends in one)."""
        for rule in app.url_map.iter_rules():
            assert rule.merge_slashes is False, rule
            assert rule.redirect_to is None, rule
            assert not rule.rule.endswith("/") or rule.rule == "/", rule
