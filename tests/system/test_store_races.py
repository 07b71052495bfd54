"""Stock and retries under real concurrency (§7, §8): two gunicorn instances (2
workers each) on one PostgreSQL database, with and without Redis."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from helpers import PASSWORD, PG_URL, REDIS_URL, drop_redis_keys
from servers import REQUEST_TIMEOUT, Response, Server, gunicorns, migrate, postgres_database
from servers import server_env as base_env

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

ROOMY_LIMITS = {"AUTH_RATE_LIMIT": "10000 per minute", "RATE_LIMIT_DEFAULT": "100000 per minute"}


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with postgres_database(PG_URL, prefix="stores_h11_races_") as url:
        migrate(base_env(APP_ENV="production", DATABASE_URL=url))
        yield url


@pytest.fixture(scope="module", params=["redis", "database"])
def pair(request: Any, database_url: Any) -> Iterator[list[Server]]:
    """Two instances; idempotency keys (and revocations) in Redis, or in the database."""
    prefix = f"stores_races_{uuid.uuid4().hex[:12]}"
    env = base_env(
        APP_ENV="production",
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL if request.param == "redis" else "",
        REDIS_KEY_PREFIX=prefix,
        **ROOMY_LIMITS,
    )
    try:
        with gunicorns(env, count=2, workers=2) as servers:
            yield servers
    finally:
        drop_redis_keys(prefix)


def all_at_once(sends: Any) -> list[Response]:
    """Every send on its own thread, released together."""
    barrier = threading.Barrier(len(sends))

    def go(send: Any) -> Any:
        barrier.wait(timeout=REQUEST_TIMEOUT)
        return send()

    with ThreadPoolExecutor(len(sends)) as pool:
        return list(pool.map(go, sends))


def stocked_item(server: Server, stock: int) -> tuple[str, dict[str, Any]]:
    """A new user's item with ``stock``: their token and the item."""
    username = f"user_{uuid.uuid4().hex[:8]}"
    body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    assert server.request("POST", "/register", body).status_code == 201
    del body["email"]
    token = server.request("POST", "/login", body).json["access_token"]
    store = server.request("POST", "/stores", {"name": username}, token=token).json
    item = {"name": "Milk", "price": "1.00", "store_id": store["id"], "stock": stock}
    return token, server.request("POST", "/items", item, token=token).json


def ledger(database_url: str, item_id: int) -> tuple[int, int, Counter[str]]:
    """The item's stock, the sum of its movements, and the movements by reason."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            stock = conn.execute(text("SELECT stock FROM items WHERE id = :id"), {"id": item_id})
            rows = conn.execute(
                text("SELECT reason, delta FROM stock_movements WHERE item_id = :id"),
                {"id": item_id},
            ).all()
            return stock.scalar_one(), sum(d for _, d in rows), Counter(r for r, _ in rows)
    finally:
        engine.dispose()


def test_fifty_sales_of_thirty_units_sell_exactly_thirty(pair: Any, database_url: Any) -> None:
    token, item = stocked_item(pair[0], 30)
    path = f"/items/{item['id']}/stock"
    sends = [
        lambda server=pair[n % 2]: server.request(
            "POST", path, {"delta": -1, "reason": "sale"}, token=token
        )
        for n in range(50)
    ]
    answers = all_at_once(sends)
    tally = Counter((a.status_code, (a.json or {}).get("error")) for a in answers)
    assert tally == {(201, None): 30, (409, "insufficient_stock"): 20}, answers
    assert sorted(a.json["stock_after"] for a in answers if a.status_code == 201) == list(range(30))
    stock, total, reasons = ledger(database_url, item["id"])
    assert (stock, total) == (0, 0)
    assert reasons == {"count": 1, "sale": 30}


def recorded_answers(database_url: str) -> int:
    """Answers the database store holds (none when the keys are in Redis)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            query = text("SELECT count(*) FROM idempotency_keys WHERE status IS NOT NULL")
            count: int = conn.execute(query).scalar_one()
            return count
    finally:
        engine.dispose()


def test_twenty_retries_at_once_move_stock_once(pair: Any, database_url: Any, request: Any) -> None:
    token, item = stocked_item(pair[0], 100)
    answers_before = recorded_answers(database_url)
    path = f"/items/{item['id']}/stock"
    headers = {"Idempotency-Key": f"sale-{uuid.uuid4()}"}
    sends = [
        lambda server=pair[n % 2]: server.request(
            "POST", path, {"delta": -3, "reason": "sale"}, token=token, headers=headers
        )
        for n in range(20)
    ]
    answers = all_at_once(sends)
    first = [a for a in answers if a.status_code == 201 and "Idempotent-Replayed" not in a.headers]
    assert len(first) == 1, answers
    for answer in answers:
        if answer.status_code == 201:
            assert answer.json == first[0].json
            assert answer.headers["Location"] == first[0].headers["Location"]
        else:
            assert (answer.status_code, answer.json["error"]) == (409, "idempotency_key_in_use")
            assert answer.headers["Retry-After"] == "1"
    stock, total, reasons = ledger(database_url, item["id"])
    assert (stock, total, reasons) == (97, 97, {"count": 1, "sale": 1})
    if request.node.callspec.params["pair"] == "database":  # one answer recorded
        assert recorded_answers(database_url) == answers_before + 1
    # Afterwards every retry is a replay of that one answer.
    again = pair[1].request(
        "POST", path, {"delta": -3, "reason": "sale"}, token=token, headers=headers
    )
    assert again.headers["Idempotent-Replayed"] == "true" and again.json == first[0].json
