"""The OpenAPI document as a client generator and a reader of Swagger UI meet it
(contract §14): a short, unique operationId on every operation, request bodies that
are one object, examples that are valid, and request examples the service accepts."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import pytest
from flask import Flask
from jsonschema import Draft4Validator  # type: ignore[import-untyped]  # no stubs pinned
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4
from sqlalchemy import text

from core.web.extensions import limiter
from core.web.openapi import OPERATION_IDS
from db import db
from helpers import Client, bearer
from mailserver import Mailbox

SPEC_URI = "urn:stores:openapi"
METHODS = ("get", "post", "put", "patch", "delete")


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method, path, operation


def as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0's schema dialect as JSON Schema (draft 4, which it extends):
    ``nullable`` becomes a null type, local ``$ref``s point into the document."""
    if isinstance(node, list):
        return [as_json_schema(value) for value in node]
    if not isinstance(node, dict):
        return node
    out = {key: as_json_schema(value) for key, value in node.items()}
    if isinstance(out.get("$ref"), str) and out["$ref"].startswith("#"):
        out["$ref"] = SPEC_URI + out["$ref"]
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        if "$ref" in out or "allOf" in out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


class Examples:
    """Every example of the document with the schema it illustrates."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.document = as_json_schema(spec)
        resource = Resource.from_contents(self.document, default_specification=DRAFT4)
        self.registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
        self.found: list[tuple[str, Any, Any]] = []  # (where, example, schema)
        for name, schema in self.document["components"]["schemas"].items():
            self._schema(f"components/schemas/{name}", schema)
        for name, response in self.document["components"].get("responses", {}).items():
            self._content(f"components/responses/{name}", response.get("content", {}))
        for method, path, operation in operations(self.document):
            where = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                self._holder(f"{where} {parameter.get('name')}", parameter)
            self._content(f"{where} body", operation.get("requestBody", {}).get("content", {}))
            for status, response in operation["responses"].items():
                self._content(f"{where} {status}", response.get("content", {}))

    def _content(self, where: str, content: dict[str, Any]) -> None:
        for media_type, holder in content.items():
            self._holder(f"{where} {media_type}", holder)

    def _holder(self, where: str, holder: dict[str, Any]) -> None:
        """A media type or parameter: its example, and its inline schema's."""
        if "schema" not in holder:
            return
        if "example" in holder:
            self.found.append((where, holder["example"], holder["schema"]))
        if "$ref" not in holder["schema"]:
            self._schema(where, holder["schema"])

    def _schema(self, where: str, schema: Any) -> None:
        if not isinstance(schema, dict):
            return
        if "example" in schema:
            self.found.append((where, schema["example"], schema))
        for name, prop in schema.get("properties", {}).items():
            self._schema(f"{where}.{name}", prop)
        for key in ("items", "additionalProperties", "not"):
            self._schema(f"{where}/{key}", schema.get(key))
        for key in ("allOf", "anyOf", "oneOf"):
            for index, member in enumerate(schema.get(key, [])):
                self._schema(f"{where}/{key}/{index}", member)

    def errors(self, example: Any, schema: Any) -> list[str]:
        validator = Draft4Validator(schema, registry=self.registry)
        return [error.message for error in validator.iter_errors(example)]

    def component(self, name: str) -> Any:
        return {"$ref": f"{SPEC_URI}#/components/schemas/{name}"}


@pytest.fixture
def spec(client: Client) -> dict[str, Any]:
    """The document, its numbers read as decimals: 19.99 is a multiple of 0.01."""
    document: dict[str, Any] = json.loads(client.get("/openapi.json").data, parse_float=Decimal)
    return document


def test_every_operation_has_a_short_unique_operation_id(spec: dict[str, Any]) -> None:
    ids = [operation.get("operationId") for _m, _p, operation in operations(spec)]
    assert all(isinstance(i, str) and re.fullmatch(r"[a-z][A-Za-z]{2,31}", i) for i in ids), ids
    assert len(set(ids)) == len(ids)
    served = {(method, path) for method, path, _ in operations(spec)}
    assert set(OPERATION_IDS) <= served  # the table names no operation that is gone
    stock = spec["paths"]["/items/{item_id}/stock"]
    assert (stock["get"]["operationId"], stock["post"]["operationId"]) == (
        "listStockMovements",
        "createStockMovement",
    )
    assert spec["paths"]["/items"]["get"]["operationId"] == "listItems"


def test_request_bodies_are_one_object(spec: dict[str, Any]) -> None:
    """No union at the top of a body: a generated client builds each with typed fields."""
    schemas = spec["components"]["schemas"]
    for method, path, operation in operations(spec):
        content = operation.get("requestBody", {}).get("content", {})
        if "application/json" not in content:
            continue
        schema = content["application/json"]["schema"]
        schema = schemas[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema
        assert schema["type"] == "object", (method, path)
        assert not {"oneOf", "anyOf", "not"} & set(schema), (method, path)
        assert schema.get("properties"), (method, path)


def test_the_stock_body_states_its_rules(spec: dict[str, Any]) -> None:
    examples = Examples(spec)
    body = examples.component("StockMovementInput")
    component = spec["components"]["schemas"]["StockMovementInput"]
    assert "Exactly one of `delta` and `set`" in component["description"]
    assert examples.errors({"delta": -2, "reason": "sale"}, body) == []
    assert examples.errors({"set": 10, "expected": 12, "reason": "count"}, body) == []
    for refused in (
        {"delta": 0, "reason": "sale"},
        {"delta": -2, "set": 10, "expected": 12, "reason": "sale"},
        {"set": 10, "reason": "count"},
        {"delta": 3, "reason": "count"},
        {"reason": "sale"},
    ):
        assert examples.errors(refused, body), refused


def test_response_schemas_require_what_is_always_sent(spec: dict[str, Any]) -> None:
    """A generated client types these fields as present (not Unset): every answer
    carries them (the contract tests check the answers against the document). A
    resource whose reads take ``fields=`` promises only its id."""
    schemas = spec["components"]["schemas"]
    for name in ("StockMovement", "Job", "Token"):
        assert schemas[name]["required"] == list(schemas[name]["properties"]), name
    for name in ("Item", "Store", "Tag", "User"):
        assert schemas[name]["required"] == ["id"], name
    assert schemas["Error"]["required"] == ["code", "status", "message"]
    assert schemas["Health"]["required"] == ["status"]
    assert schemas["AuditActor"]["required"] == ["type"]


def test_every_example_is_valid(spec: dict[str, Any]) -> None:
    """Each example (of a schema, a property, a parameter, a body or a response) is
    valid against the schema it stands for."""
    examples = Examples(spec)
    assert len(examples.found) > 200
    invalid = [
        (where, errors)
        for where, example, schema in examples.found
        if (errors := examples.errors(example, schema))
    ]
    assert invalid == []


def test_error_examples_are_one_envelope_each(spec: dict[str, Any]) -> None:
    """Each error response's example is one error as the service writes it: the code
    and reason phrase of its status, and only the members that status carries."""
    whole = spec["components"]["schemas"]["Error"]["example"]  # where a response has none
    for response in spec["components"]["responses"].values():
        if "content" not in response:
            continue
        example = response["content"]["application/json"].get("example", whole)
        assert example["code"] >= 400
        assert example["status"] == HTTPStatus(example["code"]).phrase
        assert set(example) <= {"code", "status", "message", "errors", "error"} | (
            {"request_id", "trace_id"} if example["code"] >= 500 else set()
        )
        assert ("errors" in example) == (example["code"] == 422), example


def test_the_csv_examples_are_csv(spec: dict[str, Any], client: Client) -> None:
    export = spec["paths"]["/items.csv"]["get"]["responses"]["200"]["content"]["text/csv"]
    header = client.get("/items.csv").get_data(as_text=True).splitlines()[0]
    assert export["example"].splitlines()[0] == header
    assert len(export["example"].splitlines()) >= 2
    body = spec["paths"]["/stores/{store_id}/imports"]["post"]["requestBody"]["content"]
    assert body["text/csv"]["example"].splitlines()[0] == header


# --- each request body's example, sent to a fresh service --------------------------

# What an example cannot hold: something only the running service makes (a mailed
# token), or a webhook address that resolves with no DNS (CI has none): replaced here.
RECEIVER = "http://127.0.0.1:9/hooks"


def reset(app: Flask) -> None:
    """An empty database, ids from 1 again: a fresh service for each example."""
    with app.app_context():
        tables = db.metadata.sorted_tables
        if db.engine.dialect.name == "sqlite":
            for table in reversed(tables):
                db.session.execute(table.delete())
            db.session.execute(text("DELETE FROM sqlite_sequence"))
        else:
            names = ", ".join(table.name for table in tables)
            db.session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        db.session.commit()
        limiter.reset()


# What Swagger UI writes for a value with no example.
SWAGGER_DEFAULTS = {"string": "string", "integer": 0, "number": 0, "boolean": True}


def assembled(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    """The example Swagger UI sends: the schema's own, else one made of its parts'."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "example" in schema:
        return schema["example"]
    if schema.get("type") == "array":
        return [assembled(spec, schema["items"])]
    if schema.get("type") in SWAGGER_DEFAULTS:
        return SWAGGER_DEFAULTS[schema["type"]]
    return {
        name: assembled(spec, prop)
        for name, prop in schema.get("properties", {}).items()
        if not prop.get("readOnly")
    }


def example_of(spec: dict[str, Any], operation: dict[str, Any]) -> tuple[str, Any]:
    media_type, holder = next(iter(operation["requestBody"]["content"].items()))
    return media_type, holder["example"] if "example" in holder else assembled(
        spec, holder["schema"]
    )


def send(client: Client, method: str, path: str, media_type: str, body: Any, **kw: Any) -> Any:
    if media_type == "application/json":
        return client.open(path, method=method.upper(), json=body, **kw)
    return client.open(path, method=method.upper(), data=body, content_type=media_type, **kw)


class Service:
    """The examples' own world: the user of the register example, signed in with
    the login example, with store 1, items 1 to 3, tag 1 and webhook 1."""

    def __init__(self, spec: dict[str, Any], client: Client, mailbox: Mailbox) -> None:
        self.spec, self.client, self.mailbox = spec, client, mailbox

    def example(self, method: str, path: str) -> Any:
        return example_of(self.spec, self.spec["paths"][path][method])[1]

    def build(self) -> dict[str, str]:
        register = self.example("post", "/register")
        assert self.client.post("/register", json=register).status_code == 201
        login = self.client.post("/login", json=self.example("post", "/login"))
        assert login.status_code == 200, login.json
        headers = bearer(login.json["access_token"])
        assert (
            self.client.post("/stores", json={"name": "Shop"}, headers=headers).status_code == 201
        )
        for name in ("Bread", "Eggs", "Butter"):  # not the names the examples create
            body = {"name": name, "price": "1.50", "store_id": 1, "stock": 20}
            assert self.client.post("/items", json=body, headers=headers).status_code == 201
        response = self.client.post("/stores/1/tags", json={"name": "fresh"}, headers=headers)
        assert response.status_code == 201
        hook = {"url": RECEIVER, "events": ["*"]}
        assert self.client.post("/webhooks", json=hook, headers=headers).status_code == 201
        return headers

    def mailed_token(self, email: str) -> str:
        self.client.post("/password-reset", json={"email": email})
        mail = self.mailbox.wait_for(1)[0].message.get_content()
        token = re.search(r"token=([\w.-]+)", mail)
        assert token, mail
        return token.group(1)


@pytest.mark.config(WEBHOOK_ALLOW_HTTP=True, WEBHOOK_ALLOW_PRIVATE_NETWORKS=True)
def test_every_request_example_is_accepted(
    app: Flask, client: Client, spec: dict[str, Any], mailbox: Mailbox
) -> None:
    """Each operation's request body example, sent as it stands (path ids are 1) to a
    fresh service, succeeds: what "Try it out" sends works."""
    sent, refused = [], []
    for method, path, operation in operations(spec):
        if "requestBody" not in operation:
            continue
        reset(app)
        mailbox.received.clear()
        media_type, body = example_of(spec, operation)
        body = copy.deepcopy(body)
        service = Service(spec, client, mailbox)
        headers = {} if path == "/register" else service.build()
        if path == "/password-reset/confirm":
            body["token"] = service.mailed_token(service.example("post", "/register")["email"])
        if path.startswith("/webhooks"):
            body["url"] = RECEIVER
        response = send(
            client, method, re.sub(r"\{\w+\}", "1", path), media_type, body, headers=headers
        )
        if 200 <= response.status_code < 300:
            sent.append(operation["operationId"])
        else:
            refused.append((method, path, body, response.status_code, response.json))
    assert refused == [], "\n".join(map(str, refused))
    assert {"createStockMovement", "batchItems", "updateUser", "createImport"} <= set(sent)
