"""The one Redis client factory: the blocklist and the idempotency store (and
anything else that talks to REDIS_URL) share one client, so one connection pool, per
URL and process."""

from __future__ import annotations

from functools import cache

import redis

# Short: a Redis that does not answer fails the request fast (503), it does not hold
# a worker for the socket's default of forever.
TIMEOUT_SECONDS = 2


@cache
def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
    )
