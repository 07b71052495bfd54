"""Contract fuzzing: schemathesis over every operation of /openapi.json, all checks."""

import os
import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks

from helpers import bearer

load_all_checks()
ALL_CHECKS = CHECKS.get_all()


@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


@pytest.fixture
def token_headers(admin, alice, login, api):
    """An admin's fresh token (so requests get past authorization), and some data."""
    headers = bearer(login(admin)["access_token"])
    store = api.store(headers, "Fuzz Store")
    item = api.item(headers, store)
    api.link(headers, item, api.tag(headers, store))
    return headers


schema = schemathesis.pytest.from_fixture("api_schema")


def keep_paging_in_range(query: dict | None) -> None:
    """A list's ``cursor`` is a token the service signs, so a generated one is never
    valid, and page numbers reach only the first 10,000 rows: OpenAPI cannot say
    either rule. test_pagination.py tests both; here they are kept in range."""
    if query:
        query.pop("cursor", None)
        page, size = query.get("page"), query.get("page_size", 10)
        if isinstance(page, int) and isinstance(size, int) and size > 0:
            query["page"] = min(page, 10_000 // size)


# In CI the examples are the same on every run (a failure is reproducible, never a
# coin toss); elsewhere each run explores new ones and remembers what failed.
CI: dict[str, Any] = (
    {"derandomize": True, "database": None} if os.environ.get("CI") == "true" else {}
)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), **CI)
def test_every_operation_keeps_its_contract(case, token_headers):
    keep_paging_in_range(case.query)
    if case.headers and "Idempotency-Key" in case.headers:
        # A key's answer depends on the requests sent with it before (the same key
        # with another body is refused, §8), which a stateless fuzzer cannot know:
        # each example gets a key of its own.
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    checks = ALL_CHECKS
    if case.path.endswith(".csv"):
        # The CSV exports take the JSON lists' query parameters, fuzzed there with
        # every check. A query string has no types: "tag=0" is the text "0", a valid
        # tag name, whatever type the fuzzer meant it as (an integer for an array of
        # strings), so its "schema-violating" variants cannot be told apart here.
        checks = [check for check in ALL_CHECKS if check.__name__ != "negative_data_rejection"]
    case.call_and_validate(headers=token_headers, checks=checks)
