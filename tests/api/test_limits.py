"""How many webhooks and API keys one user may hold (core/auth/limits.py): the count
is taken under a lock of the user's row, which must not stop ordinary writes."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask import Flask

import resources.api_keys
import resources.batch
import resources.webhooks
from helpers import CatalogFactory


@pytest.mark.postgres
@pytest.mark.config(WEBHOOK_ALLOW_HTTP=True, WEBHOOK_ALLOW_PRIVATE_NETWORKS=True)
@pytest.mark.parametrize(
    ("module", "path", "body"),
    [
        (resources.webhooks, "/webhooks", {"url": "http://127.0.0.1:9/hook", "events": ["*"]}),
        (resources.api_keys, "/api-keys", {"name": "ERP", "scopes": ["catalog:read"]}),
    ],
)
def test_the_count_does_not_deadlock_with_a_batch_on_the_same_store(
    app: Flask,
    api: CatalogFactory,
    as_alice: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    module: Any,
    path: str,
    body: dict[str, Any],
) -> None:
    """A webhook (or key) bound to store S locks its user, then refers to S; a batch on
    S locks S, then writes a movement that refers to the user. With the user's row
    locked FOR UPDATE the two deadlocked (one answered 503); the pauses only widen the
    window both requests always have. Found by a reviewer session."""
    store = api.store(as_alice)
    count, lock_store = module.refuse_past_limit, resources.batch.get_or_404  # type: ignore[attr-defined]

    def counted_then_pause(*args: Any, **kwargs: Any) -> None:
        count(*args, **kwargs)
        time.sleep(1.0)  # the user's row locked

    def locked_then_pause(*args: Any, **kwargs: Any) -> Any:
        row = lock_store(*args, **kwargs)
        time.sleep(0.5)  # the store's row locked
        return row

    monkeypatch.setattr(module, "refuse_past_limit", counted_then_pause)
    monkeypatch.setattr(resources.batch, "get_or_404", locked_then_pause)
    answers: dict[str, int] = {}

    def make() -> None:
        made = app.test_client().post(path, json=body | {"store_id": store["id"]}, headers=as_alice)
        answers["made"] = made.status_code

    def batch() -> None:
        create = [{"name": "Tea", "price": 2.5, "stock": 5}]
        done = app.test_client().post(
            f"/stores/{store['id']}/items/batch", json={"create": create}, headers=as_alice
        )
        answers["batch"] = done.status_code

    first, second = threading.Thread(target=make), threading.Thread(target=batch)
    first.start()
    time.sleep(0.2)
    second.start()
    first.join(30)
    second.join(30)
    assert answers == {"made": 201, "batch": 200}
