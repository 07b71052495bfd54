"""An API key revoked through one instance is refused by every worker of every other
instance at the very next request (§15): each request reads the key's row from the
shared database, no process keeps a copy.

The machinery (instances, fixtures, clients) is tests/instances.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from helpers import assert_error
from instances import PER_WORKER, ROOMY_LIMITS, WORKERS, new_session, on_every_worker, tally

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_a_key_revoked_through_a_is_refused_at_once_by_every_worker_of_a_and_b(
    start: Any,
) -> None:
    a, b = start(2, **ROOMY_LIMITS)
    _, tokens = new_session(a)
    body = {"name": "ERP sync", "scopes": ["catalog:read", "catalog:write"]}
    created = a.request("POST", "/api-keys", body, token=tokens["access_token"])
    assert created.status_code == 201, created
    key, key_id = created.json["key"], created.json["id"]

    # Made through A, it works on every worker of both, as its owner.
    answers = on_every_worker([a, b], "GET", "/stores", token=key)
    assert tally(answers) == {(200, None): 2 * WORKERS * PER_WORKER}
    made = b.request("POST", "/stores", {"name": f"Keyed {key_id}"}, token=key)
    assert made.status_code == 201, made

    revoked = a.request("DELETE", f"/api-keys/{key_id}", token=tokens["access_token"])
    assert revoked.status_code == 204, revoked
    next_request = b.request("GET", "/stores", token=key)  # elsewhere, at once
    assert_error(next_request, 401, error="token_revoked")
    answers = on_every_worker([a, b], "GET", "/stores", token=key, times=2)
    assert tally(answers) == {(401, "token_revoked"): 2 * WORKERS * 2}
    # The person who owns it is not signed out.
    assert b.request("GET", "/users/me", token=tokens["access_token"]).status_code == 200
