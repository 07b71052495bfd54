"""Debian's Prometheus scrapes a real gunicorn (2 workers, production settings) under a
short load, and its HTTP API answers ``rate(...)`` and the exact totals: every worker's
requests counted once, the pool watched, refusals counted, the queue depth read, and
/metrics itself never refused by the rate limiter."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from core.web.metrics import QueueDepth
from helpers import PG_URL, REDIS_URL
from servers import Server, call, free_port, migrate, postgres_database, server_env, sign_up

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
TOKEN = "scrape-token-0123456789abcdef"
ROUTE = "/stores"
REQUESTS = 120  # of GET /stores, over 4 threads
LIMIT = 60  # per minute for the one client address: the rest are refused with 429

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.skipif(
        not Path(PROMETHEUS).exists(), reason="needs prometheus (apt-get install prometheus)"
    ),
]


def query(base: str, expression: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - our own server
        body = json.load(answer)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def value(base: str, expression: str) -> float | None:
    result = query(base, expression)
    return float(result[0]["value"][1]) if result else None


def eventually(
    base: str, expression: str, check: Callable[[float], bool], timeout: float = 30
) -> float:
    """The expression's value once ``check`` accepts it (scrapes come every second)."""
    deadline = time.monotonic() + timeout
    found = None
    while time.monotonic() < deadline:
        found = value(base, expression)
        if found is not None and check(found):
            return found
        time.sleep(0.5)
    raise AssertionError(f"{expression} = {found}, never accepted in {timeout} s")


@pytest.fixture(scope="module")
def service() -> Iterator[Server]:
    with postgres_database(PG_URL, prefix="stores_prom_") as url:
        env = server_env(
            APP_ENV="production",
            DATABASE_URL=url,
            REDIS_URL=REDIS_URL,
            REDIS_KEY_PREFIX=f"stores_prom_{free_port()}",
            METRICS_TOKEN=TOKEN,
            RATE_LIMIT_DEFAULT=f"{LIMIT} per minute",
        )
        migrate(env)
        server = Server(env, workers=2)
        try:
            server.wait_until_up()
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def prometheus(service: Server) -> Iterator[str]:
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="stores_prometheus_"))
    config = folder / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "stores",
                        "metrics_path": "/metrics",
                        "authorization": {"credentials": TOKEN},
                        "static_configs": [{"targets": [f"127.0.0.1:{service.port}"]}],
                    }
                ],
            }
        )
    )
    with (folder / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if call("GET", f"{base}/-/ready", timeout=1).status_code == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, (folder / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "prometheus did not get ready"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def test_prometheus_scrapes_every_worker_once_and_computes_rates(
    service: Server, prometheus: str
) -> None:
    headers = sign_up(service.url)  # two requests, on the auth limit
    store = call("POST", f"{service.url}/stores", {"name": "Scraped"}, headers=headers)
    assert store.status_code == 201
    # Prometheus sees the service up before any load (its first scrapes).
    eventually(prometheus, 'up{job="stores"}', lambda v: v == 1)

    statuses: list[int] = []
    lock = threading.Lock()

    def load(count: int) -> None:
        for _ in range(count):
            status = call("GET", f"{service.url}{ROUTE}").status_code
            with lock:
                statuses.append(status)
            time.sleep(0.02)  # a few seconds of load: several scrapes see it grow

    def wave(requests: int) -> None:  # over 4 threads
        threads = [threading.Thread(target=load, args=(requests // 4,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # The load in two waves, a scrape between them: the 200s' counter grows from one
    # scrape to the next, so rate() has a slope to see.
    first = 20
    wave(first)
    seen = 'sum(stores_http_request_duration_seconds_count{route="/stores",method="GET"})'
    eventually(prometheus, seen, lambda v: v >= first)
    wave(REQUESTS - first)
    served, refused = statuses.count(200), statuses.count(429)
    assert served + refused == REQUESTS
    assert 0 < served <= LIMIT and refused >= REQUESTS - LIMIT

    count = (
        'sum(stores_http_request_duration_seconds_count{route="/stores",method="GET",status="%s"})'
    )
    # Exact totals, summed over both workers' files: each request counted once.
    eventually(prometheus, count % 200, lambda v: v == served)
    eventually(prometheus, count % 429, lambda v: v == refused)
    eventually(
        prometheus, 'sum(stores_rate_limit_refusals_total{route="/stores"})', lambda v: v == refused
    )
    # rate() over a window holding both waves (however long the checks above took to
    # see the totals): Prometheus computes it from several scrapes.
    rate = value(
        prometheus, 'sum(rate(stores_http_request_duration_seconds_count{route="/stores"}[5m]))'
    )
    assert rate is not None and rate > 0
    # The durations' histogram answers a quantile.
    p99 = value(
        prometheus,
        "histogram_quantile(0.99, sum by (le) "
        '(rate(stores_http_request_duration_seconds_bucket{route="/stores"}[5m])))',
    )
    assert p99 is not None and 0 < p99 <= 10
    # The pool: no request in flight now, connections were opened and checkouts timed.
    assert value(prometheus, "sum(stores_db_pool_connections_in_use)") == 0
    connects = value(prometheus, 'sum(stores_db_pool_connections_total{event="connect"})')
    assert connects is not None and connects >= 2
    checkouts = value(prometheus, "sum(stores_db_pool_checkout_wait_seconds_count)")
    assert checkouts is not None and checkouts >= served
    # The broker's queue, read at scrape time: what Redis holds. No worker runs here, so
    # the relay of the store this test created (store.created) waits there.
    broker = redis.Redis.from_url(REDIS_URL)
    sep = QueueDepth.PRIORITY_SEP  # kombu's priority lists: celery + sep + 3, 6, 9
    lists = ["celery", *(f"celery{sep}{priority}" for priority in (3, 6, 9))]
    depth = sum(cast(int, broker.llen(name)) for name in lists)
    assert depth > 0
    eventually(prometheus, 'stores_celery_queue_depth{queue="celery"}', lambda v: v == depth)
    # Every scrape was answered, none refused by the rate limiter, though the client
    # address is far past its limit of LIMIT a minute.
    eventually(prometheus, 'count_over_time(up{job="stores"}[1m])', lambda v: v >= 3)
    assert value(prometheus, 'min_over_time(up{job="stores"}[1m])') == 1
    scraped = 'sum(stores_http_request_duration_seconds_count{route="/metrics",status="%s"})'
    eventually(prometheus, scraped % 200, lambda v: v >= 3)
    assert value(prometheus, scraped % 429) is None
