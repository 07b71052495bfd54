"""The error envelope from every layer: routing, bodies that are not JSON or too
large, validation, an unexpected exception, and a database or Redis that is down."""

import io
import json
import logging
from collections.abc import Callable
from typing import Any, NoReturn

import marshmallow as ma
import pytest
from flask import Flask
from sqlalchemy import select

import schemas
from core.auth.security import start_session
from core.web import fields
from helpers import CatalogFactory, Client, assert_error, client_of, query
from models import SCOPES, Store, User

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class TestErrorEnvelope:
    def test_unknown_path(self, client: Client) -> None:
        body = assert_error(client.get("/nowhere"), 404)
        assert set(body) == {"code", "status", "message"}
        assert body["status"] == "Not Found"

    def test_wrong_method_carries_allow(self, client: Client) -> None:
        response = client.delete("/stores")
        assert_error(response, 405)
        assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}

    def test_options_is_a_204_with_allow(self, client: Client) -> None:
        """Flask's own answer was an empty 200 said to be text/html."""
        response = client.options("/stores")
        assert response.status_code == 204 and response.data == b""
        assert "Content-Type" not in response.headers
        assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}

    def test_routing_errors_are_never_cached(self, client: Client) -> None:
        """A 404 is cacheable by default (RFC 9111): a path that exists later would
        still answer 404 from a cache in front."""
        for response in (client.get("/nowhere"), client.delete("/stores")):
            assert response.headers["Cache-Control"] == "no-store"

    @pytest.mark.parametrize(
        "payload",
        [
            b'{"name": ',
            b"{'name': 'x'}",
            b'{"name": NaN}',
            b'{"price": Infinity}',
            b"[" * 100_000,
            b'{"n": ' + b"9" * 5000 + b"}",
            b'{"name": "\xff"}',
        ],
    )
    def test_malformed_json(
        self, app: Flask, client: Client, as_alice: dict[str, str], payload: Any
    ) -> None:
        response = client.post(
            "/stores", data=payload, headers=as_alice | {"Content-Type": "application/json"}
        )
        body = assert_error(response, 400)
        assert body["message"] == "Malformed JSON body."
        assert "json" in body["errors"]
        assert query(app, select(Store.id)) == []

    @pytest.mark.parametrize("payload", ["[]", '"name"', "42", "null"])
    def test_json_that_is_not_an_object(
        self, app: Flask, client: Client, as_alice: dict[str, str], payload: Any
    ) -> None:
        response = client.post(
            "/stores", data=payload, headers=as_alice | {"Content-Type": "application/json"}
        )
        assert "json" in assert_error(response, 422)["errors"]

    @pytest.mark.parametrize(
        ("data", "content_type"),
        [
            ("name=x", "application/x-www-form-urlencoded"),
            ('{"name": "x"}', "text/plain"),
            ('{"name": "x"}', None),
        ],
    )
    def test_a_body_that_is_not_json(
        self,
        app: Flask,
        client: Client,
        as_alice: dict[str, str],
        data: Any,
        content_type: Any,
    ) -> None:
        headers = as_alice | ({"Content-Type": content_type} if content_type else {})
        response = client.post("/stores", data=data, headers=headers)
        assert_error(response, 415)
        assert query(app, select(Store.id)) == []

    def test_json_with_a_charset_or_a_suffix_is_json(
        self, app: Flask, client: Client, as_alice: dict[str, str]
    ) -> None:
        for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
            response = client.post(
                "/stores",
                data=json.dumps({"name": content_type}),
                headers=as_alice | {"Content-Type": content_type},
            )
            assert response.status_code == 201 and response.json["name"] == content_type
        assert sorted(n for (n,) in query(app, select(Store.name))) == [
            "application/json; charset=utf-8",
            "application/merge-patch+json",
        ]

    @pytest.mark.config(MAX_CONTENT_LENGTH=200)
    def test_a_body_too_large(self, app: Flask, client: Client, as_alice: dict[str, str]) -> None:
        response = client.post(
            "/stores", json={"name": "x", "address": "a" * 300}, headers=as_alice
        )
        assert_error(response, 413)
        assert query(app, select(Store.id)) == []

    @pytest.mark.config(MAX_CONTENT_LENGTH=200)
    def test_a_chunked_body_too_large_is_refused_not_truncated(
        self, app: Flask, client: Client, as_alice: dict[str, str]
    ) -> None:
        padded = b'{"name": "Chunked", "address": "' + b"a" * 250 + b'"}'
        headers = as_alice | {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        response = client.post("/stores", input_stream=io.BytesIO(padded), headers=headers)
        assert_error(response, 413)
        assert query(app, select(Store.id)) == []
        small = b'{"name": "Chunked"}'
        response = client.post("/stores", input_stream=io.BytesIO(small), headers=headers)
        assert response.status_code == 201 and response.json["name"] == "Chunked"

    def test_validation_lists_every_field(self, client: Client, as_alice: dict[str, str]) -> None:
        body = assert_error(
            client.post("/stores", json={"name": "", "contact_email": "x"}, headers=as_alice), 422
        )
        assert set(body["errors"]["json"]) == {"name", "contact_email"}

    def test_an_unexpected_exception_is_a_generic_500(
        self, make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
    ) -> None:
        app = make_app()

        @app.get("/boom")
        def boom() -> NoReturn:
            raise RuntimeError("secret database password in a traceback")

        with caplog.at_level(logging.ERROR):
            response = client_of(app).get(
                "/boom", headers={"X-Request-ID": "trace-me-42", "traceparent": TRACEPARENT}
            )
        body = assert_error(response, 500)
        assert body == {
            "code": 500,
            "status": "Internal Server Error",
            "message": "Internal server error.",
            "request_id": "trace-me-42",
            "trace_id": TRACE_ID,  # the caller's trace, continued
        }
        assert "secret" not in response.get_data(as_text=True)
        assert response.headers["X-Request-ID"] == "trace-me-42"
        logged = [r for r in caplog.records if r.exc_info]
        exc_info = logged[0].exc_info if logged else None
        assert exc_info and "secret database password" in str(exc_info[1])

    def test_database_down_is_a_503_with_retry_after(self, make_app: Callable[..., Flask]) -> None:
        # Nothing listens on port 1: the connection is refused at once.
        client = client_of(
            make_app(SQLALCHEMY_DATABASE_URI="postgresql+psycopg://u@127.0.0.1:1/db")
        )
        response = client.get("/stores")
        body = assert_error(response, 503)
        assert response.headers["Retry-After"] == "5"
        assert "request_id" in body
        assert "127.0.0.1" not in response.get_data(as_text=True)
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert_error(ready, 503)
        assert "database" in ready.json["message"]

    def test_redis_down_fails_closed_for_tokens(
        self, make_app: Callable[..., Flask], alice: User
    ) -> None:
        app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
        client = client_of(app)
        with app.test_request_context():
            token = start_session(alice)["access_token"]
        response = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        assert_error(response, 503)
        assert response.headers["Retry-After"] == "5"
        assert "redis" in client.get("/ready").json["message"]


MANY = 20_000  # a body of ~100 KB: without the bound checked first, a 422 of megabytes


def over_long(store_id: int) -> list[tuple[str, dict[str, Any], str, str]]:
    """Every bounded list and map of a body: (path, body, field, the bound's message)."""
    batch = f"/stores/{store_id}/items/batch"
    return [
        ("/webhooks", {"url": "https://example.com/h", "events": ["x"] * MANY}, "events", "16"),
        # Distinct: scopes are a set, a repeated one counts once.
        (
            "/api-keys",
            {"name": "k", "scopes": [f"x{i}" for i in range(MANY)]},
            "scopes",
            f"{len(SCOPES)}",
        ),
        (batch, {"create": [{}] * MANY}, "create", "100"),
        (batch, {"update": [{}] * MANY}, "update", "100"),
        (batch, {"delete": [0] * MANY}, "delete", "100"),
        (
            "/items",
            {"name": "Tea", "price": 1, "store_id": store_id}
            | {"metadata": {f"\x01{i}": "\x01" for i in range(MANY)}},
            "metadata",
            "50",
        ),
    ]


class TestBoundedErrors:
    """§2: every client-controlled parameter is bounded, and a 422 stays small."""

    @pytest.mark.parametrize("case", range(6))
    def test_an_over_long_list_gets_one_message_naming_its_bound(
        self, client: Client, api: Any, as_alice: dict[str, str], case: int
    ) -> None:
        path, body, field, bound = over_long(api.store(as_alice)["id"])[case]
        response = client.post(path, json=body, headers=as_alice)
        errors = assert_error(response, 422)["errors"]["json"]
        [message] = errors[field]
        assert bound in message, message
        assert len(response.get_data()) < 1000

    @pytest.mark.parametrize("query_string", [{"tag": [""] * 11}, {"type": ["x"] * 21}])
    def test_an_over_long_repeated_parameter_gets_one_message(
        self, client: Client, as_alice: dict[str, str], query_string: dict[str, list[str]]
    ) -> None:
        path = "/items" if "tag" in query_string else "/events"
        body = assert_error(client.get(path, query_string=query_string, headers=as_alice), 422)
        [[name, messages]] = body["errors"]["query"].items()
        assert name in query_string and len(messages) == 1

    def test_a_list_within_its_bound_is_checked_element_by_element(
        self, client: Client, as_alice: dict[str, str]
    ) -> None:
        body = {"url": "https://example.com/h", "events": ["x", "stock.out", "y"]}
        errors = assert_error(client.post("/webhooks", json=body, headers=as_alice), 422)
        assert set(errors["errors"]["json"]["events"]) == {"0", "2"}
        keys = {"name": "k", "scopes": ["jobs", "nope"]}
        errors = assert_error(client.post("/api-keys", json=keys, headers=as_alice), 422)
        assert list(errors["errors"]["json"]["scopes"]) == ["1"]

    def test_a_422_lists_at_most_100_messages_and_says_how_many_there_were(
        self, client: Client, as_alice: dict[str, str]
    ) -> None:
        fields = {f"unknown_{i}": 1 for i in range(MANY)}
        response = client.post("/stores", json={"name": "Shop", **fields}, headers=as_alice)
        body = assert_error(response, 422)
        listed = body["errors"]["json"]
        assert len(listed) == 100 and set(listed) < set(fields)
        assert all(messages == ["Unknown field."] for messages in listed.values())
        assert body["message"] == (
            f"Validation failed; see errors. The first 100 of {MANY} messages are listed."
        )
        assert len(response.get_data()) < 10_000

    def test_every_bounded_list_in_the_schemas_is_checked_before_its_elements(self) -> None:
        bounded = [
            (schema.__name__, name, field)
            for schema in vars(schemas).values()
            if isinstance(schema, type) and issubclass(schema, ma.Schema)
            for name, field in schema._declared_fields.items()
            if isinstance(field, ma.fields.List | ma.fields.Mapping)
            and any(isinstance(rule, ma.validate.Length) for rule in field.validators)
        ]
        assert len(bounded) >= 8
        for schema_name, name, field in bounded:
            assert isinstance(field, fields.List | fields.Dict), (schema_name, name)


def test_every_409_names_its_rule(
    client: Client,
    api: CatalogFactory,
    as_alice: dict[str, str],
    alice: User,
    admin: User,
    auth: Callable[[User], dict[str, str]],
) -> None:
    """A program tells the conflicts apart by ``error`` (§2), not by the message."""
    store = api.store(as_alice, name="Corner")
    item = api.item(as_alice, store, name="Milk")
    tag = api.tag(as_alice, store, name="dairy")
    api.link(as_alice, item, tag)
    taken = {
        "a store name": client.post("/stores", json={"name": "corner"}, headers=as_alice),
        "a username": client.post(
            "/register",
            json={
                "username": alice.username,
                "email": "x@example.com",
                "password": "a l0ng passw0rd",
            },
        ),
        "a name twice in one batch": client.post(
            f"/stores/{store['id']}/items/batch",
            json={"create": [{"name": "Tea", "price": 1}, {"name": "tea", "price": 2}]},
            headers=as_alice,
        ),
    }
    for what, response in taken.items():
        assert assert_error(response, 409)["error"] == "already_exists", what
    in_use = client.delete(f"/tags/{tag['id']}", headers=as_alice)
    assert_error(in_use, 409, error="tag_in_use")
    owner = client.delete(f"/users/{alice.id}", headers=auth(admin))
    assert_error(owner, 409, error="user_owns_stores")
    last = client.patch(f"/users/{admin.id}", json={"role": "user"}, headers=auth(admin))
    assert_error(last, 409, error="last_admin")
