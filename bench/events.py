"""Benchmark: events and webhooks on PostgreSQL, through gunicorn, a private Redis
broker and real Celery workers, to a receiver on 127.0.0.1 (issue 18).

1. Latency: 2,000 stock movements at 50 per second with one webhook and two worker
   processes; p50/p95 from the event's commit to the receiver.
2. Throughput of delivery: 2,000 events written while no worker runs, then two
   worker processes start: deliveries per second from the first to the last.
3. Write throughput of POST /items/{id}/stock with a webhook and its workers on, and
   with neither (the outbox still written): the ratio.

    .venv/bin/python bench/events.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from receiver import Receiver, receiving  # noqa: E402
from servers import call, gunicorn, migrate, postgres_database, server_env  # noqa: E402
from workers import redis_server, workers  # noqa: E402

SETTINGS = {
    "APP_ENV": "production",
    "WEBHOOK_ALLOW_HTTP": "1",
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "1",
    "RATE_LIMIT_DEFAULT": "10000000 per minute",
    "AUTH_RATE_LIMIT": "1000 per minute",
    "REDIS_URL": "",
    "LOG_LEVEL": "WARNING",
}
ITEMS = 20


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def setup(base: str) -> tuple[dict[str, str], list[int]]:
    user = {"username": "bench", "email": "bench@example.com", "password": "a long passw0rd"}
    assert call("POST", f"{base}/register", user).status_code == 201
    tokens = call("POST", f"{base}/login", {"username": "bench", "password": user["password"]})
    auth = {"Authorization": f"Bearer {tokens.json['access_token']}"}
    store = call("POST", f"{base}/stores", {"name": "Bench"}, headers=auth).json["id"]
    items = []
    for n in range(ITEMS):
        body = {"name": f"Item {n}", "price": 1, "store_id": store, "stock": 1_000_000}
        items.append(call("POST", f"{base}/items", body, headers=auth).json["id"])
    return auth, items


def sell(base: str, auth: dict[str, str], item: int) -> None:
    body = {"delta": -1, "reason": "sale"}
    response = call("POST", f"{base}/items/{item}/stock", body, headers=auth, timeout=60)
    assert response.status_code == 201, response


def arrivals(receiver: Receiver, since: int) -> list[tuple[float, dict[str, Any]]]:
    with receiver.lock:
        return [(r.at, json.loads(r.body)) for r in receiver.received[since:]]


def latency(
    base: str, auth: dict[str, str], items: list[int], receiver: Receiver, count: int, rate: float
) -> dict[str, float]:
    start = len(receiver.received)
    wall_start = time.time()
    interval = 1 / rate
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = []
        for n in range(count):
            delay = began + n * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(sell, base, auth, items[n % len(items)]))
        for future in futures:
            future.result()
    sent_for = time.monotonic() - began
    receiver.wait_for(lambda got: len(got) - start >= count, timeout=300)
    delays = [
        at - datetime.fromisoformat(event["created_at"]).timestamp()
        for at, event in arrivals(receiver, start)
        if datetime.fromisoformat(event["created_at"]).timestamp() >= wall_start
    ]
    return {
        "events": len(delays),
        "sent_per_s": count / sent_for,
        "p50_ms": percentile(delays, 50) * 1000,
        "p95_ms": percentile(delays, 95) * 1000,
        "max_ms": max(delays) * 1000,
    }


def backlog(base: str, auth: dict[str, str], items: list[int], count: int) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: sell(base, auth, items[n % len(items)]), range(count)))


def throughput(
    base: str, auth: dict[str, str], items: list[int], count: int, threads: int = 8
) -> float:
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda n: sell(base, auth, items[n % threads]), range(count)))
    return count / (time.monotonic() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server (any database)")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--writes", type=int, default=1500)
    parser.add_argument("--web-workers", type=int, default=4)
    args = parser.parse_args()

    with postgres_database(args.database_url, "bench_events_") as url, redis_server() as broker:
        env = server_env(**SETTINGS, DATABASE_URL=url, CELERY_BROKER_URL=broker.url)
        migrate(env)
        with gunicorn(env, workers=args.web_workers) as base, receiving() as receiver:
            auth, items = setup(base)
            body = {"url": receiver.url, "events": ["stock.moved"]}
            hook = call("POST", f"{base}/webhooks", body, headers=auth).json

            # 2: a backlog written while no worker runs, then two worker processes.
            backlog(base, auth, items, args.events)
            with workers(env, count=2, concurrency=4):
                # The items' first counts (setup) are movements too: ITEMS more events.
                receiver.wait_for(lambda got: len(got) >= args.events + ITEMS, timeout=900)
                got = arrivals(receiver, 0)
                drained = len(got) / (got[-1][0] - got[0][0])
                print(
                    f"2. backlog of {args.events} drained by 2 worker processes: "
                    f"{drained:.0f} deliveries/s (goal >= 100/s)",
                    flush=True,
                )

                # 1: latency at 50/s, with the two worker processes.
                lat = latency(base, auth, items, receiver, args.events, args.rate)
                print(
                    f"1. {lat['events']} movements at {lat['sent_per_s']:.1f}/s, one webhook, "
                    f"2 workers: commit -> receiver p50 {lat['p50_ms']:.0f} ms, "
                    f"p95 {lat['p95_ms']:.0f} ms, max {lat['max_ms']:.0f} ms (goal p95 < 1000 ms)",
                    flush=True,
                )

                # 3 (on): writes with the webhook and its workers.
                on = throughput(base, auth, items, args.writes)
            # 3 (off): no webhook, no worker: the outbox alone.
            call("DELETE", f"{base}/webhooks/{hook['id']}", headers=auth)
            off = throughput(base, auth, items, args.writes)
    print(
        f"3. POST /items/{{id}}/stock, 8 clients, {args.writes} each way: webhook+workers on "
        f"{on:.1f}/s, off {off:.1f}/s: {on / off:.2f}x (goal >= 0.9x)"
    )


if __name__ == "__main__":
    main()
