"""Negotiation (§14, §16): 406, CSV lists, Vary, problem details, unknown query parameters."""

import re
from http import HTTPStatus
from typing import Any

import pytest
from flask import Flask

from core.web import query
from helpers import CatalogFactory, Client, assert_error, snapshot

PROBLEM = "application/problem+json"
JSON = "application/json"
VENDOR = "application/vnd.stores.v1+json"


def assert_problem(response: Any, status: int, instance: str) -> dict[str, Any]:
    """An error as the problem details its Accept asked for."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.headers["Content-Type"] == PROBLEM
    assert "Accept" in response.vary
    body = dict(response.json)
    assert body["status"] == body["code"] == status
    assert body["title"] == HTTPStatus(status).phrase
    assert body["type"].endswith(f"#/components/responses/{HTTPStatus(status).name}")
    assert body["instance"] == instance
    return body


@pytest.fixture
def catalog(api: CatalogFactory, as_alice: dict[str, str]) -> Any:
    store = api.store(as_alice)
    milk = api.item(as_alice, store, name="Milk", price="1.50", stock=3)
    tea = api.item(as_alice, store, name="Tea", price="4.00")
    other = api.store(as_alice, "Other Shop")
    bread = api.item(as_alice, other, name="Bread", price="2.00")
    return {"store": store, "milk": milk, "tea": tea, "bread": bread}


class TestNotAcceptable:
    def test_an_accept_nothing_satisfies_is_406_listing_what_is(
        self, client: Client, catalog: Any
    ) -> None:
        response = client.get(f"/items/{catalog['milk']['id']}", headers={"Accept": "text/xml"})
        body = assert_error(response, 406)
        assert body["message"] == (
            "Cannot answer with Accept: text/xml; this resource is available as "
            "application/json, application/vnd.stores.v1+json."
        )
        assert "Accept" in response.vary
        listed = assert_error(client.get("/items", headers={"Accept": "application/xml"}), 406)
        assert listed["message"].endswith(
            "available as application/json, application/vnd.stores.v1+json, text/csv."
        )

    def test_a_refused_write_changes_nothing(
        self, app: Flask, client: Client, as_alice: dict[str, str]
    ) -> None:
        before = snapshot(app)
        response = client.post(
            "/stores", json={"name": "X"}, headers={**as_alice, "Accept": "text/html"}
        )
        assert_error(response, 406)
        assert snapshot(app) == before

    def test_a_write_is_never_answered_as_csv(
        self, app: Flask, client: Client, as_alice: dict[str, str], catalog: Any
    ) -> None:
        before = snapshot(app)
        body = {"name": "Jam", "price": "3.00", "store_id": catalog["store"]["id"]}
        for accept in ("text/csv", "text/*"):
            response = client.post("/items", json=body, headers={**as_alice, "Accept": accept})
            message = assert_error(response, 406)["message"]
            assert message.endswith(
                "available as application/json, application/vnd.stores.v1+json."
            )
        assert snapshot(app) == before

    def test_a_csv_export_is_not_json(self, client: Client, catalog: Any) -> None:
        body = assert_error(client.get("/items.csv", headers={"Accept": "application/json"}), 406)
        assert body["message"].endswith("this resource is available as text/csv.")
        assert client.get("/items.csv", headers={"Accept": "text/*"}).status_code == 200

    def test_problem_json_never_causes_406(self, client: Client, catalog: Any) -> None:
        response = client.get("/items", headers={"Accept": PROBLEM})
        assert response.status_code == 200
        assert response.mimetype == "application/json"
        assert len(response.json) == 3
        for path, accept, mimetype in (
            ("/items.csv", PROBLEM, "text/csv"),
            ("/items.csv", f"text/csv, {PROBLEM}", "text/csv"),
            (f"/items/{catalog['milk']['id']}", f"application/json, {PROBLEM}", JSON),
        ):
            answer = client.get(path, headers={"Accept": accept})
            answer.get_data()
            assert answer.status_code == 200, accept
            assert answer.mimetype == mimetype, accept

    def test_problem_json_does_not_stop_a_406(
        self, app: Flask, client: Client, catalog: Any
    ) -> None:
        """The other types in Accept are judged as if problem+json were not there; the
        406 is then written as the problem details asked for."""
        milk = f"/items/{catalog['milk']['id']}"
        v2 = "application/vnd.stores.v2+json"
        for path, accept, detail in (
            (milk, f"{v2}, {PROBLEM}", "API version 2 does not exist; supported versions: 1"),
            (milk, f"text/html, {PROBLEM}", "Cannot answer with Accept: text/html, "),
            ("/items.csv", f"application/json, {PROBLEM}", "Cannot answer with Accept: "),
        ):
            response = client.get(path, headers={"Accept": accept})
            body = assert_problem(response, 406, path)
            assert body["detail"].startswith(detail), accept
        before = snapshot(app)
        user = {"username": "zoe", "email": "zoe@example.com", "password": "correct horse"}
        response = client.post("/register", json=user, headers={"Accept": f"{v2}, {PROBLEM}"})
        assert assert_problem(response, 406, "/register")["detail"].startswith("API version 2")
        assert snapshot(app) == before


class TestCsvLists:
    def test_accept_csv_on_items_is_the_export(self, client: Client, catalog: Any) -> None:
        query = f"?store_id={catalog['store']['id']}&sort=-price"
        response = client.get(f"/items{query}", headers={"Accept": "text/csv"})
        assert response.is_streamed
        body = response.get_data()  # (a stream keeps its request until it is read)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert response.headers["Content-Disposition"] == 'attachment; filename="items.csv"'
        assert response.headers["Cache-Control"] == "no-store"
        assert "Accept" in response.vary
        assert body == client.get(f"/items.csv{query}").get_data()
        lines = response.get_data(as_text=True).splitlines()
        assert [line.split(",")[1] for line in lines] == ["name", "Tea", "Milk"]

    def test_accept_csv_on_a_stores_items(self, client: Client, catalog: Any) -> None:
        store_id = catalog["store"]["id"]
        response = client.get(f"/v1/stores/{store_id}/items", headers={"Accept": "text/csv"})
        body = response.get_data()
        assert response.status_code == 200
        assert response.headers["Content-Disposition"] == (
            f'attachment; filename="store-{store_id}-items.csv"'
        )
        assert body == client.get(f"/stores/{store_id}/items.csv").get_data()

    def test_the_export_bounds_hold(self, client: Client, catalog: Any) -> None:
        """The whole list, never a page of it: paging parameters are the export's
        unknown ones; the export's refusals come too."""
        csv = {"Accept": "text/csv"}
        body = assert_error(client.get("/items?page_size=2", headers=csv), 422)
        assert body["errors"] == {"query": {"page_size": ["Unknown query parameter."]}}
        assert_error(client.get("/items?status=draft", headers=csv), 403)
        assert_error(client.get("/stores/999/items", headers=csv), 404)

    def test_json_is_preferred_when_both_are_as_good(self, client: Client, catalog: Any) -> None:
        response = client.get("/items", headers={"Accept": "text/csv, application/json"})
        assert response.mimetype == "application/json"
        csv_first = client.get("/items", headers={"Accept": "text/csv, application/json;q=0.5"})
        assert csv_first.mimetype == "text/csv"

    def test_single_items_have_no_csv(self, client: Client, catalog: Any) -> None:
        response = client.get(f"/items/{catalog['milk']['id']}", headers={"Accept": "text/csv"})
        assert_error(response, 406)


class TestParameters:
    """A media type's parameters other than q are not matched: the API answers UTF-8,
    its CSV with a header row."""

    @pytest.mark.parametrize(
        "accept", ["text/csv; charset=utf-8", "text/csv; header=present", "Text/CSV;Charset=UTF-8"]
    )
    def test_the_csv_with_parameters(self, client: Client, catalog: Any, accept: str) -> None:
        response = client.get("/items", headers={"Accept": accept})
        body = response.get_data()
        assert response.status_code == 200, body
        assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert "Accept" in response.vary
        assert body == client.get("/items.csv").get_data()
        export = client.get("/items.csv", headers={"Accept": accept})
        assert export.status_code == 200 and export.get_data() == body

    @pytest.mark.parametrize("accept", [JSON, VENDOR])
    def test_json_with_a_charset(
        self, client: Client, catalog: Any, as_alice: dict[str, str], accept: str
    ) -> None:
        headers = {"Accept": f"{accept}; charset=utf-8"}
        response = client.get(f"/items/{catalog['milk']['id']}", headers=headers)
        assert response.status_code == 200, response.json
        assert response.headers["Content-Type"] == accept
        assert response.json["id"] == catalog["milk"]["id"]
        assert "Accept" in response.vary
        created = client.post("/stores", json={"name": "New"}, headers=as_alice | headers)
        assert created.status_code == 201, created.json
        assert created.headers["Content-Type"] == accept
        missing = client.get("/items/999", headers=headers)
        assert missing.status_code == 404
        assert missing.headers["Content-Type"] == accept
        assert missing.json == {
            "code": 404,
            "status": "Not Found",
            "message": "Item 999 not found.",
        }
        nowhere = client.get("/nothing", headers=headers)
        assert nowhere.status_code == 404 and nowhere.headers["Content-Type"] == accept

    def test_q_still_counts(
        self, app: Flask, client: Client, catalog: Any, as_alice: dict[str, str]
    ) -> None:
        both = "text/csv; charset=utf-8; q=0.5, application/json; charset=utf-8"
        assert client.get("/items", headers={"Accept": both}).mimetype == JSON
        csv_first = "text/csv; header=present, application/json; charset=utf-8; q=0.5"
        assert client.get("/items", headers={"Accept": csv_first}).mimetype == "text/csv"
        refused = "text/csv; header=present; q=0"
        body = assert_error(client.get("/items.csv", headers={"Accept": refused}), 406)
        assert body["message"] == (
            f"Cannot answer with Accept: {refused}; this resource is available as text/csv."
        )
        before = snapshot(app)
        no_json = {"Accept": "application/json; charset=utf-8; q=0"}
        response = client.post("/stores", json={"name": "New"}, headers=as_alice | no_json)
        assert_error(response, 406)
        assert "Accept" in response.vary
        assert snapshot(app) == before

    def test_problem_json_with_a_charset(self, client: Client) -> None:
        response = client.get("/items/999", headers={"Accept": f"{PROBLEM}; charset=utf-8"})
        assert assert_problem(response, 404, "/items/999")["detail"] == "Item 999 not found."
        plain_first = f"{JSON}; charset=utf-8, {PROBLEM}; q=0.5"
        assert_error(client.get("/items/999", headers={"Accept": plain_first}), 404)


class TestVary:
    def test_lists_and_resources_vary_on_accept(self, client: Client, catalog: Any) -> None:
        for path in ("/items", f"/items/{catalog['milk']['id']}", "/stores", "/items/999"):
            response = client.get(path)
            assert "Accept" in response.vary, path
            assert "Origin" not in response.vary, path  # no CORS configured

    @pytest.mark.config(CORS_ORIGINS=["https://shop.example"])
    def test_with_cors_every_response_varies_on_origin(self, client: Client, catalog: Any) -> None:
        allowed = client.get("/items", headers={"Origin": "https://shop.example"})
        assert allowed.headers["Access-Control-Allow-Origin"] == "https://shop.example"
        for response in (
            allowed,
            client.get("/items"),
            client.get("/items", headers={"Origin": "https://evil.example"}),
        ):
            assert response.headers["Cache-Control"] == "public, no-cache"
            assert {"Origin", "Accept"} <= set(response.vary)
        assert "API-Version" in allowed.headers["Access-Control-Expose-Headers"]

    @pytest.mark.config(CORS_ORIGINS=["https://shop.example"])
    def test_a_preflight_with_a_query_is_answered(self, client: Client) -> None:
        preflight = client.options(
            "/items?q=milk",
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"},
        )
        assert preflight.status_code == 204  # an ok status (2xx) is what a browser asks
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://shop.example"


class TestProblemDetails:
    def test_a_404_as_problem_details(self, client: Client) -> None:
        response = client.get(
            "/v1/items/999", headers={"Accept": PROBLEM, "X-Request-ID": "req-123456"}
        )
        assert response.status_code == 404
        assert response.headers["Content-Type"] == PROBLEM
        assert response.json == {
            "type": "http://localhost/openapi.json#/components/responses/NOT_FOUND",
            "title": "Not Found",
            "status": 404,
            "detail": "Item 999 not found.",
            "instance": "/v1/items/999",
            "code": 404,
            "request_id": "req-123456",
        }
        assert "Accept" in response.vary

    def test_its_type_is_in_the_openapi_document(self, client: Client) -> None:
        spec = client.get("/openapi.json").json
        for path, status in (("/items/999", 404), ("/items?x=1", 422), ("/stores/1", 401)):
            method = client.delete if status == 401 else client.get
            body = method(path, headers={"Accept": PROBLEM}).json
            assert body["status"] == status
            name = body["type"].split("#/components/responses/")[1]
            assert spec["components"]["responses"][name]["description"] == body["title"]

    def test_a_422_keeps_its_errors(self, client: Client, as_alice: dict[str, str]) -> None:
        response = client.post(
            "/stores", json={"name": ""}, headers={**as_alice, "Accept": PROBLEM}
        )
        assert response.status_code == 422
        assert response.mimetype == PROBLEM
        body = response.json
        assert body["title"] == "Unprocessable Entity"
        assert body["detail"] == "Validation failed; see errors."
        assert body["instance"] == "/stores"
        assert set(body["errors"]["json"]) == {"name"}
        assert body["code"] == 422

    def test_a_401_keeps_its_error_code(self, client: Client) -> None:
        response = client.post("/stores", json={"name": "A"}, headers={"Accept": PROBLEM})
        assert response.status_code == 401
        assert response.mimetype == PROBLEM
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json["error"] == "authorization_required"
        assert response.json["title"] == "Unauthorized"

    def test_the_envelope_without_asking(self, client: Client) -> None:
        for accept in (None, "application/json", f"application/json, {PROBLEM};q=0.5"):
            headers = {"Accept": accept} if accept else {}
            body = assert_error(client.get("/items/999", headers=headers), 404)
            assert body == {"code": 404, "status": "Not Found", "message": "Item 999 not found."}

    def test_routing_errors_too(self, client: Client) -> None:
        response = client.delete("/items", headers={"Accept": PROBLEM})
        assert response.status_code == 405
        assert response.mimetype == PROBLEM
        assert "GET" in response.headers["Allow"]
        assert response.json["status"] == 405
        unknown = client.get("/v2/items", headers={"Accept": PROBLEM})
        assert unknown.mimetype == PROBLEM
        assert unknown.json["instance"] == "/v2/items"
        assert unknown.json["detail"].startswith("API version 2 does not exist")


class TestUnknownQueryParameters:
    def test_a_misspelt_filter_is_422_naming_it(self, client: Client, catalog: Any) -> None:
        body = assert_error(client.get("/items?updated_since=2026-01-01&q=milk"), 422)
        assert body["message"] == "Unknown query parameter(s): updated_since."
        assert body["errors"] == {"query": {"updated_since": ["Unknown query parameter."]}}

    def test_every_endpoint(
        self, app: Flask, client: Client, as_alice: dict[str, str], catalog: Any
    ) -> None:
        for path in (
            f"/items/{catalog['milk']['id']}?verbose=1",
            f"/v1/stores/{catalog['store']['id']}?b=2&a=1",
            "/health?probe=1",
            "/users/me?x=1",
            "/openapi.json?v=2",
        ):
            body = assert_error(client.get(path, headers=as_alice), 422)
            names = sorted(path.split("?")[1].replace("=1", "").replace("=2", "").split("&"))
            assert body["message"] == f"Unknown query parameter(s): {', '.join(names)}.", path
        before = snapshot(app)
        response = client.post("/stores?dry=1", json={"name": "New"}, headers=as_alice)
        assert assert_error(response, 422)["errors"] == {
            "query": {"dry": ["Unknown query parameter."]}
        }
        assert snapshot(app) == before

    def test_a_parameter_taking_one_value_is_given_once(
        self, app: Flask, client: Client, as_alice: dict[str, str], catalog: Any
    ) -> None:
        """`?sort=name&sort=-price` has no obvious reading (a proxy or cache in front
        may read the other one): 422 naming it, nothing done. Lists repeat."""
        body = assert_error(client.get("/items?sort=name&q=milk&sort=-price"), 422)
        assert body["message"] == "Query parameter(s) given more than once: sort."
        assert body["errors"] == {
            "query": {"sort": ["Give this parameter once; it takes one value."]}
        }
        same = "/items?page_size=1&page_size=1"  # even with the same value twice
        assert "page_size" in assert_error(client.get(same), 422)["errors"]["query"]
        before = snapshot(app)
        store = catalog["store"]["id"]
        response = client.post(
            f"/stores/{store}/imports?dry_run=true&dry_run=false",
            data="name,price\nNew,1\n",
            headers=as_alice | {"Content-Type": "text/csv"},
        )
        assert "dry_run" in assert_error(response, 422)["errors"]["query"]
        assert snapshot(app) == before
        tags = client.get("/items?tag=dairy&tag=organic&sort=name")
        assert tags.status_code == 200, tags.json

    def test_declared_parameters_still_work(self, client: Client, catalog: Any) -> None:
        response = client.get("/items?page_size=1&sort=-price&count=exact&min_price=1")
        assert response.status_code == 200
        assert [i["name"] for i in response.json] == ["Tea"]
        nxt = response.headers["Link"].split(">")[0][1:]
        assert client.get(nxt).status_code == 200
        assert client.get("/items?page=2&page_size=1").status_code == 200

    def test_cache_busters_are_taken_everywhere_fields_where_it_applies(
        self, client: Client, catalog: Any, as_alice: dict[str, str]
    ) -> None:
        assert client.get("/items?_=1700000000").status_code == 200
        assert client.get(f"/items/{catalog['milk']['id']}?_=1&fields=id").status_code == 200
        assert client.get("/health?_ts=1").status_code == 200
        for path, headers in (
            ("/events?fields=id", as_alice),
            ("/jobs?fields=id", as_alice),
            ("/items?fields=id", {"Accept": "text/csv"}),
        ):
            body = assert_error(client.get(path, headers=headers), 422)
            assert "fields" in body["errors"]["query"], path

    def test_swagger_ui_still_loads(self, client: Client) -> None:
        assert client.get("/swagger-ui").status_code == 200
        assert client.get("/openapi.json").status_code == 200


def test_each_endpoint_takes_the_query_parameters_openapi_publishes(app: Flask) -> None:
    """The check reads what each view declares: for every operation that is exactly the
    query parameters of the OpenAPI document (so Swagger UI never sends one it refuses)."""
    spec: dict[str, Any] = app.test_client().get("/openapi.json").json or {}
    checked = 0
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
                operation = spec["paths"].get(path, {}).get(method.lower())
                if operation is None:
                    continue
                published = {
                    p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"
                }
                view = query.view_of(rule.endpoint, method)
                assert query.declared(view) == published, path
                arrays = {
                    p["name"]
                    for p in operation.get("parameters", [])
                    if p.get("in") == "query" and p["schema"].get("type") == "array"
                }
                assert query.repeatable(view) == arrays, path
                checked += 1
    methods = {"get", "put", "post", "patch", "delete"}
    assert checked == sum(len(methods & set(ops)) for ops in spec["paths"].values())
