"""The Postman collection in postman/, run by newman against a live gunicorn on a fresh
PostgreSQL database with Redis: the whole session it walks must pass, every assertion."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from helpers import PG_URL, REDIS_URL
from servers import ROOT, gunicorn, migrate, postgres_database, server_env

NEWMAN = ROOT / "node_modules" / ".bin" / "newman"
COLLECTION = ROOT / "postman" / "stores.postman_collection.json"
ENVIRONMENT = ROOT / "postman" / "local.postman_environment.json"


def requests_in(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every request of a collection, folders flattened, in run order."""
    if "request" in node:
        return [node]
    return [leaf for child in node.get("item", []) for leaf in requests_in(child)]


def test_every_request_asserts_its_status() -> None:
    requests = requests_in(json.loads(COLLECTION.read_text()))
    assert len(requests) >= 30
    for request in requests:
        tests = [
            "\n".join(event["script"]["exec"])
            for event in request.get("event", [])
            if event["listen"] == "test"
        ]
        assert tests, f"{request['name']!r} has no test script"
        assert "pm.response.to.have.status(" in tests[0], request["name"]
    environment = json.loads(ENVIRONMENT.read_text())
    assert [value["key"] for value in environment["values"]] == ["baseUrl"]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.skipif(not NEWMAN.exists(), reason="needs newman: npm ci")
def test_the_collection_passes_on_postgresql_with_redis(tmp_path: Path) -> None:
    report = tmp_path / "newman.json"
    with postgres_database(PG_URL, prefix="stores_postman_") as database_url:
        env = server_env(
            APP_ENV="production",
            DATABASE_URL=database_url,
            REDIS_URL=REDIS_URL,
            # Three sign-ups and three sign-ins a run: the default 5 a minute and 20 an
            # hour per client would refuse the fourth run within the hour.
            AUTH_RATE_LIMIT="100 per minute",
            # Its own limiter counters, and revocations that expire from Redis soon.
            REDIS_KEY_PREFIX=f"stores_devx_{uuid.uuid4().hex[:12]}",
            JWT_REFRESH_TOKEN_EXPIRES="300",
        )
        migrate(env)
        with gunicorn(env) as url:
            result = subprocess.run(
                [
                    NEWMAN,
                    "run",
                    COLLECTION,
                    "--environment",
                    ENVIRONMENT,
                    "--env-var",
                    f"baseUrl={url}",
                    "--reporters",
                    "cli,json",
                    "--reporter-json-export",
                    report,
                    "--color",
                    "off",
                    "--timeout-request",
                    "10000",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
            )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr
    run = json.loads(report.read_text())["run"]
    failures = [
        f"{failure['source']['name']}: {failure['error']['message']}" for failure in run["failures"]
    ]
    assert failures == []
    stats = run["stats"]
    expected_requests = len(requests_in(json.loads(COLLECTION.read_text())))
    assert stats["requests"] == {"total": expected_requests, "pending": 0, "failed": 0}
    assert stats["assertions"]["failed"] == 0
    assert stats["assertions"]["total"] >= 4 * expected_requests - 20
    # Each request ran its own tests, not only the collection-wide ones.
    for execution in run["executions"]:
        own = [a for a in execution["assertions"] if not a["assertion"].startswith("[every ")]
        assert own, f"{execution['item']['name']!r} asserted nothing of its own"
