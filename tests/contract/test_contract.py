"""Contract fuzzing: schemathesis over every operation of /openapi.json, with every
check, in every phase (examples, coverage, fuzzing, then stateful sequences of calls),
once signed in as a user and once as an admin.

The fuzzer may call /logout, change its password or delete its own account; none of
that may end the run's session, or every later call would be a 401 that tests
nothing. So it never holds a token: each call gets a new one, minted for its user
(made again if the fuzzer deleted it). The budget is per operation (and per stateful
run), so the run grows with the API but stays bounded; in CI it is deterministic.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from sqlalchemy import select, text

from core.auth.passwords import CONTAINS_NAME, TOO_WEAK, hash_password
from core.auth.security import start_session
from core.web.extensions import limiter
from db import db
from helpers import PASSWORD, bearer, client_of, create_user
from models import User

load_all_checks()


# What a 422 says when the body names rows that do not exist: a schema can say what
# an id looks like, not which ids exist (POST /items's store_id, a batch's ids).
MISSING_ROW = re.compile(r"[A-Z]\w* \d+ does not exist\.|Store \d+ has no item \d+\.")


# What a 422 says of a webhook URL that its schema allows but the SSRF rules refuse
# (core/events/addresses.py): its host does not resolve, or not to public addresses, or
# its path cannot be sent as written.
URL_REFUSED = re.compile(
    r"Must start with https://.*|Must not (carry|contain) .*|Must name a host\."
    r"|At most \d+ characters\.|Not a URL: .*|Port 0 is not a port\."
    r"|The host .* (does not resolve|resolves to a non-public).*",
    re.DOTALL,
)


def _messages(errors: Any) -> list[Any]:
    if isinstance(errors, dict):
        return [m for value in errors.values() for m in _messages(value)]
    return list(errors) if isinstance(errors, list) else [errors]


# What a 422 says when list parameters that are each valid do not go together (in the
# query, or an export's body): OpenAPI cannot say that (core/lists/listing.py).
PARAMETERS_APART = re.compile(
    r"sort=\w+ needs \w+\.|Send either page or cursor, not both\.|Page numbers reach .*"
)


# What a 422 says of a password that has the schema's length but is easy to guess or
# holds the username (core/auth/passwords.py: zxcvbn, which no JSON Schema expresses).
WEAK_PASSWORD_FIELDS = {"password", "new_password"}


def _only_weak_password(errors: Any) -> bool:
    if not isinstance(errors, dict) or not errors or set(errors) - WEAK_PASSWORD_FIELDS:
        return False
    return all(m[0] in (TOO_WEAK, CONTAINS_NAME) for m in errors.values())


# Metadata keys and values without control characters (§13): published as patterns
# (propertyNames, additionalProperties), which the generator's own unusual strings ignore.
METADATA_RULE = re.compile(r"A (key|value) is .* without control characters\.|At most \d+ keys\.")
METADATA_OR_ROW = re.compile(f"{METADATA_RULE.pattern}|{MISSING_ROW.pattern}")

# An API key's expires_at must lie ahead (resources/api_keys.py): "now" is no schema rule.
IN_THE_FUTURE = re.compile(r"Must be in the future\.|Out of range\.")


def _only(errors: Any, pattern: re.Pattern[str]) -> bool:
    messages = _messages(errors)
    return bool(messages) and all(isinstance(m, str) and pattern.fullmatch(m) for m in messages)


def positive_data_acceptance_but_missing_rows(ctx: Any, response: Any, case: Any) -> Any:
    """``positive_data_acceptance``, except for a 422 that only says that rows the body
    refers to do not exist, that query parameters do not go together, that a password
    is too easy to guess, that a password reset token is not one that was mailed, or
    that a metadata key or value holds a control character, or that an API key's expiry
    is not in the future."""
    if response.status_code == 422:
        body = response.json()
        errors = body.get("errors") or {}
        if _only(errors.get("json"), MISSING_ROW) or _only(errors.get("query"), PARAMETERS_APART):
            return None
        if _only(errors.get("json"), PARAMETERS_APART):  # an export's filters, in its body
            return None
        if set(errors.get("json") or ()) == {"url"} and _only(errors["json"], URL_REFUSED):
            return None
        if _only_weak_password(errors.get("json")) or body.get("error") == "invalid_reset_token":
            return None
        if _only(errors.get("json"), METADATA_OR_ROW):  # a batch nests them by position
            return None
        if set(errors.get("json") or ()) == {"expires_at"} and _only(errors["json"], IN_THE_FUTURE):
            return None
    return positive_data_acceptance(ctx, response, case)


def negative_data_rejection_after_preconditions(ctx: Any, response: Any, case: Any) -> Any:
    """``negative_data_rejection``, except for a 412: a stale If-Match (or an
    If-Unmodified-Since before the last change, an If-None-Match of "*") is answered
    before the body is read (RFC 9110 §13.2.1: preconditions come before the content)."""
    preconditions = {"If-Match", "If-Unmodified-Since", "If-None-Match"}
    if response.status_code == 412 and preconditions & set(case.headers or {}):
        return None
    if _null_in_query(case):
        return None
    return negative_data_rejection(ctx, response, case)


def _null_in_query(case: Any) -> bool:
    """A null drawn for a query parameter goes on the wire as the text ``null``, which
    is a valid value of a text parameter (``tag=null`` is the tag named "null",
    docs/API.md): not a schema-violating request, whatever the generator meant."""
    values = (case.query or {}).values()
    return any(value is None or (isinstance(value, list) and None in value) for value in values)


REPLACED: dict[Any, Any] = {
    positive_data_acceptance: positive_data_acceptance_but_missing_rows,
    negative_data_rejection: negative_data_rejection_after_preconditions,
}
ALL_CHECKS = [REPLACED.get(check, check) for check in CHECKS.get_all()]

# Per operation: Hypothesis examples in the fuzzing phase (the examples and coverage
# phases are bounded by the schema itself); per role: stateful scenarios and steps.
# 25: with CI's two passes side by side (.ci/run), the four fuzzing runs fit again.
EXAMPLES_PER_OPERATION = 25
STATEFUL_SCENARIOS = 15
STATEFUL_STEPS = 10
# Deterministic everywhere (tests/conftest.py's Hypothesis profile): the same
# examples on every run and machine, and no example database kept between runs,
# which replayed a failure found once on every later run until it was deleted.
CI: dict[str, Any] = {"derandomize": True, "database": None}
FUZZ = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    **CI,
)


class TokenSource:
    """A fresh access token for ``username`` on every call (see the module docstring)."""

    def __init__(self, app: Flask, username: str, role: str) -> None:
        self.app, self.username, self.role = app, username, role

    def headers(self) -> dict[str, str]:
        with self.app.app_context():
            user = db.session.scalar(select(User).where(User.username == self.username))
            if user is None:
                user = User(
                    username=self.username,
                    email=f"{self.username}@example.com",
                    password_hash=hash_password(PASSWORD),
                )
                db.session.add(user)
            user.role = self.role  # an admin may have demoted itself
            db.session.commit()
            return bearer(start_session(user)["access_token"])

    def seed(self) -> None:
        """An empty database but for an admin, the caller, and a store with an item
        and a tag for it to find: where every run, and every stateful scenario, starts."""
        with self.app.app_context():
            tables = db.metadata.sorted_tables
            if db.engine.dialect.name == "sqlite":
                for table in reversed(tables):
                    db.session.execute(table.delete())
                db.session.execute(text("DELETE FROM sqlite_sequence"))  # ids from 1 again
            else:
                names = ", ".join(table.name for table in tables)
                db.session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            db.session.commit()
            limiter.reset()
        create_user(self.app, "root", role="admin")
        client = client_of(self.app)
        headers = self.headers()
        store = client.post("/stores", json={"name": "Fuzz Store"}, headers=headers).json
        body = {"name": "Milk", "price": "1.50", "store_id": store["id"]}
        item = client.post("/items", json=body, headers=headers).json
        tag = client.post(f"/stores/{store['id']}/tags", json={"name": "dairy"}, headers=headers)
        client.post(f"/items/{item['id']}/tags/{tag.json['id']}", headers=headers)


@pytest.fixture(params=["user", "admin"])
def tokens(request: Any, app: Flask) -> TokenSource:
    source = TokenSource(app, f"fuzz_{request.param}", request.param)
    source.seed()
    return source


@pytest.fixture
def api_schema(app: Flask, tokens: Any, mailbox: Any) -> Any:  # a known address's reset is mailed
    """The schema, with the run's token source as its auth: schemathesis applies it
    to every call, and its checks of missing or wrong credentials replace it."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    # A well-formed If-Match that is not the current ETag is refused as the contract
    # says (412); that is not a schema-valid request being rejected.
    acceptance = schema.config.checks.positive_data_acceptance
    acceptance.expected_statuses = [*acceptance.expected_statuses, "412"]

    @schema.auth(refresh_interval=None)  # no caching: a new token for every call
    class Minted:
        def get(self, case: Any, context: Any) -> Any:
            return tokens.headers()["Authorization"]

        def set(self, case: Any, data: Any, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": data}

    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@FUZZ
def test_every_operation_keeps_its_contract(case: Any, tokens: Any) -> None:
    prepare(case)
    case.call_and_validate(checks=checks_for(case))


# What ends the fuzzer's own session or account: left out of one stateful run, so
# that every other operation is exercised signed in, in longer chains.
SESSION_ENDING = [
    ("POST", "/logout"),
    ("DELETE", "/users/{user_id}"),
    ("PATCH", "/users/{user_id}"),
]


@pytest.mark.parametrize("signed_in_throughout", [False, True], ids=["all", "signed-in"])
def test_sequences_of_calls_keep_the_contract(
    api_schema: Any, tokens: TokenSource, signed_in_throughout: bool
) -> None:
    """The stateful phase: chains of calls that feed each other's ids and bodies."""
    if signed_in_throughout:
        for method, path in SESSION_ENDING:
            api_schema = api_schema.exclude(method=method, path=path)

    class Fuzzer(api_schema.as_state_machine()):  # type: ignore[misc]  # built at run time
        def setup(self) -> None:
            # Each scenario from the same state, so that a replay (when Hypothesis
            # shrinks a failure) sees the answers the first run saw.
            tokens.seed()

        def before_call(self, case: Any) -> None:
            prepare(case)

        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            case.validate_response(
                response, checks=checks_for(case), transport_kwargs=kwargs or None
            )

    Fuzzer.run(
        settings=settings(FUZZ, max_examples=STATEFUL_SCENARIOS, stateful_step_count=STATEFUL_STEPS)
    )


def keep_paging_in_range(query: dict[str, Any] | None) -> None:
    """A list's ``cursor`` is a token the service signs, so a generated one is never
    valid, and page numbers reach only the first 10,000 rows: OpenAPI cannot say
    either rule. test_pagination.py tests both; here they are kept in range."""
    if query:
        query.pop("cursor", None)
        page, size = query.get("page"), query.get("page_size", 10)
        if isinstance(page, int) and isinstance(size, int) and size > 0:
            query["page"] = min(page, 10_000 // size)


def prepare(case: Any) -> None:
    keep_paging_in_range(case.query)
    if case.headers and "Idempotency-Key" in case.headers:
        # A key's answer depends on the requests sent with it before (the same key
        # with another body is refused, §8), which the fuzzer cannot know: each
        # request gets a key of its own.
        case.headers["Idempotency-Key"] = uuid.uuid4().hex


def checks_for(case: Any) -> list[Any]:
    if case.path.endswith(".csv"):
        # The CSV exports take the JSON lists' query parameters, fuzzed there with
        # every check. A query string has no types: "tag=0" is the text "0", a valid
        # tag name, whatever type the fuzzer meant it as (an integer for an array of
        # strings), so its "schema-violating" variants cannot be told apart here.
        return [check for check in ALL_CHECKS if check.__name__ != "negative_data_rejection"]
    return ALL_CHECKS
