"""Contract fuzzing: schemathesis over every operation of /openapi.json, all checks."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks

from conftest import bearer

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


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_its_contract(case, token_headers):
    case.call_and_validate(headers=token_headers, checks=ALL_CHECKS)
