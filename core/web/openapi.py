"""What the OpenAPI document says beyond what flask-smorest derives, for the clients
generated from it (contract §14): apispec plugins.

- ``OperationIds``: every operation's short, stable ``operationId``, from one table
  (``OPERATION_IDS``); an operation missing from it gets one by a rule (verb + view).
- ``SchemaDoc``: what a schema class declares beyond its fields, published in its
  component: ``cross_field_rules`` (under ``allOf``, so that the top of a body stays one
  object with typed properties) and the docstring that states them in words,
  ``example`` (one coherent body, used by Swagger UI's "Try it out"), ``required`` of a
  ``ResponseSchema`` (what every answer carries), and ``NoneOf`` validators as ``not``.
"""

from __future__ import annotations

import copy
import inspect
import re
from typing import Any, ClassVar

import marshmallow as ma
from apispec import APISpec, BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_cls
from typing_extensions import override

# (method, path) -> operationId: verbs list, get, create, replace, update, delete, then
# what they act on. Renaming one breaks every client generated before: they are stable.
OPERATION_IDS: dict[tuple[str, str], str] = {
    ("post", "/register"): "register",
    ("post", "/login"): "login",
    ("post", "/refresh"): "refreshToken",
    ("post", "/logout"): "logout",
    ("post", "/password-reset"): "requestPasswordReset",
    ("post", "/password-reset/confirm"): "confirmPasswordReset",
    ("get", "/users/me"): "getCurrentUser",
    ("get", "/users"): "listUsers",
    ("get", "/users/{user_id}"): "getUser",
    ("patch", "/users/{user_id}"): "updateUser",
    ("delete", "/users/{user_id}"): "deleteUser",
    ("get", "/stores"): "listStores",
    ("post", "/stores"): "createStore",
    ("get", "/stores/{store_id}"): "getStore",
    ("put", "/stores/{store_id}"): "replaceStore",
    ("patch", "/stores/{store_id}"): "updateStore",
    ("delete", "/stores/{store_id}"): "deleteStore",
    ("get", "/stores/{store_id}/items"): "listStoreItems",
    ("get", "/stores/{store_id}/tags"): "listStoreTags",
    ("post", "/stores/{store_id}/tags"): "createTag",
    ("post", "/stores/{store_id}/items/batch"): "batchItems",
    ("get", "/items"): "listItems",
    ("post", "/items"): "createItem",
    ("get", "/items/{item_id}"): "getItem",
    ("put", "/items/{item_id}"): "replaceItem",
    ("patch", "/items/{item_id}"): "updateItem",
    ("delete", "/items/{item_id}"): "deleteItem",
    ("post", "/items/{item_id}/tags/{tag_id}"): "addItemTag",
    ("delete", "/items/{item_id}/tags/{tag_id}"): "removeItemTag",
    ("get", "/items/{item_id}/stock"): "listStockMovements",
    ("post", "/items/{item_id}/stock"): "createStockMovement",
    ("get", "/items/{item_id}/stock/{movement_id}"): "getStockMovement",
    ("get", "/tags/{tag_id}"): "getTag",
    ("patch", "/tags/{tag_id}"): "updateTag",
    ("delete", "/tags/{tag_id}"): "deleteTag",
    ("get", "/items.csv"): "exportItemsCsv",
    ("get", "/stores/{store_id}/items.csv"): "exportStoreItemsCsv",
    ("post", "/exports"): "createExport",
    ("post", "/stores/{store_id}/imports"): "createImport",
    ("get", "/jobs"): "listJobs",
    ("get", "/jobs/{job_id}"): "getJob",
    ("delete", "/jobs/{job_id}"): "cancelJob",
    ("get", "/jobs/{job_id}/file"): "getJobFile",
    ("get", "/events"): "listEvents",
    ("get", "/events/{event_id}"): "getEvent",
    ("get", "/webhooks"): "listWebhooks",
    ("post", "/webhooks"): "createWebhook",
    ("get", "/webhooks/{webhook_id}"): "getWebhook",
    ("patch", "/webhooks/{webhook_id}"): "updateWebhook",
    ("delete", "/webhooks/{webhook_id}"): "deleteWebhook",
    ("post", "/webhooks/{webhook_id}/test"): "testWebhook",
    ("get", "/webhooks/{webhook_id}/deliveries"): "listWebhookDeliveries",
    ("post", "/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): "retryWebhookDelivery",
    ("get", "/api-keys"): "listApiKeys",
    ("post", "/api-keys"): "createApiKey",
    ("get", "/api-keys/{key_id}"): "getApiKey",
    ("delete", "/api-keys/{key_id}"): "revokeApiKey",
    ("get", "/audit"): "listAuditEntries",
    ("get", "/"): "getIndex",
    ("get", "/health"): "getHealth",
    ("get", "/ready"): "getReadiness",
}

VERBS = {"get": "get", "post": "create", "put": "replace", "patch": "update", "delete": "delete"}


def operation_id(method: str, path: str, endpoint: str) -> str:
    """The table's name, else the rule: the verb, then the view's name (``Index`` of
    ``index.Index`` → ``getIndex``)."""
    named = OPERATION_IDS.get((method, path))
    if named:
        return named
    view = endpoint.rpartition(".")[2]
    words = [word for word in re.split(r"_|(?=[A-Z])", view) if word]
    return VERBS.get(method, method) + "".join(word[0].upper() + word[1:] for word in words)


class OperationIds(BasePlugin):
    """Sets each operation's ``operationId`` (``OPERATION_IDS``, else ``operation_id``'s
    rule); one the view set itself (``@blp.doc(operationId=...)``) is kept."""

    @override
    def operation_helper(
        self,
        path: str | None = None,
        operations: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        rule = kwargs.get("rule")
        endpoint = getattr(rule, "endpoint", "") or ""
        for method, operation in (operations or {}).items():
            if method in VERBS and isinstance(operation, dict):
                operation.setdefault("operationId", operation_id(method, path or "", endpoint))


class ResponseSchema(ma.Schema):
    """A response's shape. Every field is in every answer, so OpenAPI lists each as
    ``required`` (a generated client types it as present), but for those named in
    ``sometimes`` (left out of some answers). A resource whose reads take ``fields=``
    (core/web/sparse.py) sets ``always`` instead: only those are in every answer."""

    sometimes: ClassVar[tuple[str, ...]] = ()
    always: ClassVar[tuple[str, ...] | None] = None


class SchemaDoc(BasePlugin):
    """Publishes in a schema's component what its class declares beyond its fields:

    - ``cross_field_rules``: a JSON Schema fragment stating the rules between fields
      that the schema's own validators check (which apispec cannot derive), under
      ``allOf``: validators and fuzzers apply it, while a client generator still sees
      one object with typed properties (a ``oneOf``/``anyOf`` at the top of a body
      becomes a union of partial models). The class docstring states the rules in
      words, as the component's ``description``.
    - ``example``: a whole, coherent instance (else tools assemble one from the
      properties' examples, which need not go together).
    - a ``ResponseSchema``'s ``required``.
    """

    @override
    def init_spec(self, spec: APISpec) -> None:
        for plugin in spec.plugins:
            if isinstance(plugin, MarshmallowPlugin) and plugin.converter is not None:
                plugin.converter.add_attribute_function(none_of)  # type: ignore[no-untyped-call]

    @override
    def schema_helper(
        self, name: str, definition: dict[str, Any], **kwargs: Any
    ) -> dict[str, Any] | None:
        schema = kwargs.get("schema")
        if schema is None:
            return None
        cls = resolve_schema_cls(schema)
        extra: dict[str, Any] = {}
        rules = getattr(cls, "cross_field_rules", None)
        if rules:
            extra["allOf"] = [*definition.get("allOf", []), copy.deepcopy(rules)]
            extra["description"] = inspect.getdoc(cls) or ""
        example = getattr(cls, "example", None)
        if example is not None:
            extra["example"] = copy.deepcopy(example)
        if isinstance(cls, type) and issubclass(cls, ResponseSchema):
            props = definition.get("properties", {})
            if cls.always is not None:
                extra["required"] = [prop for prop in props if prop in cls.always]
            else:
                extra["required"] = [prop for prop in props if prop not in cls.sometimes]
        return extra


def none_of(_converter: Any, field: ma.fields.Field[Any], **_kwargs: Any) -> dict[str, Any]:
    """A field's ``NoneOf`` validator as ``not: {enum: [...]}`` (``delta: 0`` is refused
    by the schema as by the service). An apispec attribute function."""
    refused = [
        value
        for validator in field.validators
        if isinstance(validator, ma.validate.NoneOf)
        for value in validator.iterable
    ]
    return {"not": {"enum": refused}} if refused else {}
