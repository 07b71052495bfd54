"""What an API key may reach (contract §15): the one table from endpoint to scopes.

A key acts as its owner narrowed to its scopes and, if it has one, its store. Each
endpoint names the scopes a key needs for each method; an endpoint or method missing
from the table is closed to keys (fail closed: a new endpoint is refused to keys until
it is given a scope here). Accounts, sessions, passwords, keys and the audit log are
missing on purpose: a key never manages users, passwords or keys. Refusals are 403
``insufficient_scope``; a JWT signed in by a person is not narrowed at all.
"""

from __future__ import annotations

from typing import Any, NoReturn

from flask import request

from core.web.errors import abort

Needs = dict[str, frozenset[str]]  # by HTTP method

READ = frozenset({"GET", "HEAD"})
WRITE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def needs(read: tuple[str, ...] | None = None, write: tuple[str, ...] | None = None) -> Needs:
    """The scopes of an endpoint's reads and of its writes (None: not for keys)."""
    table: Needs = {}
    for methods, scopes in ((READ, read), (WRITE, write)):
        if scopes is not None:
            table.update(dict.fromkeys(methods, frozenset(scopes)))
    return table


CATALOG = needs(read=("catalog:read",), write=("catalog:write",))
OPEN = needs(read=(), write=())  # no scope needed (health checks, the API's documents)

ENDPOINT_SCOPES: dict[str, Needs] = {
    "stores.Stores": CATALOG,
    "stores.StoreById": CATALOG,
    "stores.StoreItems": CATALOG,
    "stores.StoreTags": CATALOG,
    "items.Items": CATALOG,
    "items.ItemById": CATALOG,
    "items.ItemTag": CATALOG,
    "tags.TagById": CATALOG,
    "batch.ItemsBatch": needs(write=("catalog:write",)),
    "stock.ItemStock": needs(read=("catalog:read",), write=("stock:write",)),
    "stock.Movement": needs(read=("catalog:read",)),
    "exports.ItemsCsv": needs(read=("catalog:read",)),
    "exports.StoreItemsCsv": needs(read=("catalog:read",)),
    "exports.ExportJobs": needs(write=("jobs", "catalog:read")),
    "imports.StoreImports": needs(write=("jobs", "catalog:write")),
    "jobs.Jobs": needs(read=("jobs",)),
    "jobs.JobById": needs(read=("jobs",), write=("jobs",)),
    # An export's rows (drafts too): read with the scopes that made it (ExportJobs).
    "jobs.JobFile": needs(read=("jobs", "catalog:read")),
    "events.Events": needs(read=("events:read",)),
    "events.EventById": needs(read=("events:read",)),
    "webhooks.Webhooks": needs(read=("webhooks:manage",), write=("webhooks:manage",)),
    "webhooks.WebhookById": needs(read=("webhooks:manage",), write=("webhooks:manage",)),
    "webhooks.WebhookTest": needs(write=("webhooks:manage",)),
    "webhooks.WebhookDeliveries": needs(read=("webhooks:manage",)),
    "webhooks.DeliveryRetry": needs(write=("webhooks:manage",)),
    "index.Index": OPEN,
    "health.Health": OPEN,
    "health.Ready": OPEN,
    "api-docs.openapi_json": OPEN,
    "api-docs.openapi_swagger_ui": OPEN,
    "swagger_assets.swagger_asset": OPEN,
}


def refuse(message: str) -> NoReturn:
    abort(403, message=message, error="insufficient_scope")


def check_endpoint(key: dict[str, Any]) -> None:
    """403 unless the key's scopes cover this request's endpoint and method. A request
    that matched no route is left to its 404/405."""
    if request.endpoint is None or request.method == "OPTIONS":
        return
    required = ENDPOINT_SCOPES.get(request.endpoint, {}).get(request.method)
    if required is None:
        refuse("An API key cannot do this: it never manages users, passwords or keys.")
    missing = sorted(required - set(key["scopes"]))
    if missing:
        refuse(f"This API key lacks the scope {', '.join(missing)}.")


def allows(key: dict[str, Any] | None, endpoint: str, method: str = "GET") -> bool:
    """Whether the request's key (None: a person's token, not narrowed) may call
    ``endpoint``: what a view that links to another endpoint asks before it does."""
    if key is None:
        return True
    required = ENDPOINT_SCOPES.get(endpoint, {}).get(method)
    return required is not None and required <= set(key["scopes"])


def check_store(key: dict[str, Any] | None, store_id: int | None) -> None:
    """403 if a key bound to a store acts on another store (or on no store: every
    store, a new store)."""
    if key is None or key["store_id"] is None or key["store_id"] == store_id:
        return
    refuse(f"This API key is limited to store {key['store_id']}.")
