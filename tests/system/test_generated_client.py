"""A typed client generated from the service's own /openapi.json (openapi-python-client,
offline), driving a whole session against gunicorn as a new user would (contract §14):
every call through a generated function with generated models, none through raw dicts.
"""

from __future__ import annotations

import csv
import importlib
import io
import re
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from helpers import PASSWORD
from servers import BIN, gunicorn, migrate, server_env

PACKAGE = "stores_client"
# No formatter run after generating (ruff is not the generator's concern here), and the
# CSV body of an import as a file upload.
GENERATOR_CONFIG = "post_hooks: []\ncontent_type_overrides:\n  text/csv: application/octet-stream\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db_file = tmp_path_factory.mktemp("generated-client") / "client.db"
    env = server_env(APP_ENV="development", DATABASE_URL=f"sqlite:///{db_file}")
    migrate(env)
    with gunicorn(env, workers=1) as url:
        yield url


@pytest.fixture(scope="module")
def sdk(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The client package, generated from the running service's document and imported."""
    where = tmp_path_factory.mktemp("sdk")
    with urllib.request.urlopen(f"{server}/openapi.json", timeout=5) as response:  # noqa: S310
        (where / "openapi.json").write_bytes(response.read())
    (where / "config.yaml").write_text(GENERATOR_CONFIG)
    generated = subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(where / "openapi.json"),
            "--config",
            str(where / "config.yaml"),
            "--meta",
            "none",
            "--output-path",
            str(where / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    # Nothing was left out: every operation became a function.
    assert "will not be generated" not in generated.stdout + generated.stderr, generated.stdout
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def api(name: str) -> Any:
    """A generated operation module, by its tag and operationId: ``stock.create_stock_movement``."""
    return importlib.import_module(f"{PACKAGE}.api.{name}")


def next_cursor(link: str | None) -> str | None:
    """The cursor of the Link header's rel="next", if there is one."""
    found = re.search(r'<([^>]+)>;\s*rel="next"', link or "")
    return parse_qs(urlsplit(found.group(1)).query)["cursor"][0] if found else None


def test_a_whole_session_through_the_generated_client(server: str, sdk: Any) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    unset = importlib.import_module(f"{PACKAGE}.types").UNSET
    anonymous = sdk.Client(base_url=server, raise_on_unexpected_status=True)

    # Sign up and sign in.
    name = f"gen{uuid.uuid4().hex[:8]}"
    email = f"{name}@example.com"
    body = models.Register(username=name, email=email, password=PASSWORD)
    user = api("sessions.register").sync(client=anonymous, body=body)
    assert isinstance(user, models.User) and user.username == name
    token = api("sessions.login").sync(
        client=anonymous, body=models.Login(username=name, password=PASSWORD)
    )
    assert isinstance(token, models.Token) and token.token_type == "Bearer"
    client = sdk.AuthenticatedClient(
        base_url=server, token=token.access_token, raise_on_unexpected_status=True
    )

    # A store, and seven items in one batch.
    store = api("stores.create_store").sync(
        client=client, body=models.StoreCreate(name=f"{name}'s shop")
    )
    assert isinstance(store, models.Store) and store.owner_id == user.id
    creates = [
        models.BatchCreate(name=f"Item {n}", price=1.25 + n, stock=10 * n) for n in range(1, 8)
    ]
    result = api("batch.batch_items").sync(
        store.id, client=client, body=models.Batch(create=creates)
    )
    assert isinstance(result, models.BatchResult)
    assert [item.name for item in result.created] == [f"Item {n}" for n in range(1, 8)]
    assert result.updated == [] and result.deleted == []

    # Every item, three at a time, by the cursors of the Link headers.
    walked: list[Any] = []
    cursor: str | None = None
    pages = 0
    while True:
        listing = api("stores.list_store_items").sync_detailed(
            store.id, client=client, page_size=3, cursor=cursor or unset
        )
        assert listing.status_code == 200
        walked += listing.parsed
        pages += 1
        cursor = next_cursor(listing.headers.get("Link"))
        if cursor is None:
            break
    assert pages == 3
    assert sorted(item.id for item in walked) == sorted(item.id for item in result.created)
    assert all(isinstance(item, models.Item) for item in walked)

    # A typed stock movement, retried with the same Idempotency-Key: done once.
    item = result.created[0]
    move = models.StockMovementInput(
        delta=-4, reason=models.StockMovementInputReason.SALE, reference="order 1042"
    )
    key = uuid.uuid4().hex
    first = api("stock.create_stock_movement").sync_detailed(
        item.id, client=client, body=move, idempotency_key=key
    )
    again = api("stock.create_stock_movement").sync_detailed(
        item.id, client=client, body=move, idempotency_key=key
    )
    assert first.status_code == again.status_code == 201
    assert isinstance(first.parsed, models.StockMovement)
    assert first.parsed.stock_after == 6 and first.parsed.delta == -4
    assert again.parsed.id == first.parsed.id
    assert again.headers["Idempotent-Replayed"] == "true"

    # A count: set and expected, typed; the stock is what was counted.
    count = models.StockMovementInput(
        set_=9, expected=6, reason=models.StockMovementInputReason.COUNT
    )
    counted = api("stock.create_stock_movement").sync(
        item.id, client=client, body=count, idempotency_key=uuid.uuid4().hex
    )
    assert isinstance(counted, models.StockMovement)
    assert (counted.delta, counted.stock_after, counted.reason.value) == (3, 9, "count")
    assert api("items.get_item").sync(item.id, client=client).stock == 9
    ledger = api("stock.list_stock_movements").sync(item.id, client=client)
    assert [m.id for m in ledger][:2] == [counted.id, first.parsed.id]

    # A refusal comes back as the typed error envelope.
    refused = api("stock.create_stock_movement").sync_detailed(
        item.id,
        client=client,
        body=models.StockMovementInput(delta=-100, reason=models.StockMovementInputReason.SALE),
    )
    assert refused.status_code == 409
    assert isinstance(refused.parsed, models.Error) and refused.parsed.code == 409

    # The store's items as CSV.
    export = api("exports.export_store_items_csv").sync_detailed(store.id, client=client)
    assert export.status_code == 200
    assert export.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert {row["name"]: int(row["stock"]) for row in rows}[item.name] == 9
    assert len(rows) == 7

    # Sign out: the token no longer works.
    message = api("sessions.logout").sync(client=client)
    assert isinstance(message, models.Message)
    client = sdk.AuthenticatedClient(base_url=server, token=token.access_token)
    after = api("users.get_current_user").sync_detailed(client=client)
    assert after.status_code == 401
    assert isinstance(after.parsed, models.Error) and after.parsed.error == "token_revoked"
