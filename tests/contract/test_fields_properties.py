"""Properties of the value rules in core/web/fields.py, checked through the API.

Hypothesis builds values on both sides of each rule: what is accepted comes back
exactly (the trimmed text, the exact price) from the answer, a later GET and the
database; what is refused is a 422 naming the field, and nothing changes.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from core.web.fields import BLANKS, MAX_PRICE
from db import db
from helpers import CatalogFactory, Client, assert_error, query, snapshot
from models import Item, Store, User

# The fixtures are made once per test and each example leaves them valid for the
# next. Deterministic everywhere (tests/conftest.py's Hypothesis profile): the same
# examples on every run and machine, and no example database kept between runs,
# which replayed a failure found once on every later run until it was deleted.
CI: dict[str, Any] = {"derandomize": True, "database": None}
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    **CI,
)

INVISIBLE = set(
    "\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f\u200b\u200c\u200d"
    "\u2060\u2061\u2062\u2063\u2064\u3164\ufe00\ufe01\ufe0f\uffa0"
)
FORBIDDEN = (
    [chr(c) for c in range(0x20)]
    + [chr(c) for c in range(0x7F, 0xA0)]
    + list("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    + ["\ud800", "\udfff"]  # lone surrogates: JSON can carry them, text cannot
)

visible = st.characters(categories=("L", "N", "P", "S")).filter(lambda c: c not in INVISIBLE)
inner = st.one_of(visible, st.sampled_from(" \u00a0\u3000"), st.sampled_from(sorted(INVISIBLE)))
blanks = st.text(alphabet=st.sampled_from(BLANKS), max_size=3)


@st.composite
def names(draw: st.DrawFn, max_length: int = 80) -> str:
    """A valid name: visible first and last characters, anything allowed between."""
    first = draw(visible)
    if draw(st.booleans()):
        return first
    middle = draw(st.text(alphabet=inner, max_size=max_length - 2))
    return first + middle + draw(visible)


@st.composite
def bad_names(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["forbidden", "too long", "blank", "invisible edge"]))
    if kind == "forbidden":
        return draw(visible) + draw(st.sampled_from(FORBIDDEN)) + draw(visible)
    if kind == "too long":
        return draw(st.text(alphabet=visible, min_size=81, max_size=120))
    if kind == "blank":
        return draw(blanks)
    return draw(st.sampled_from(sorted(INVISIBLE))) + draw(names(79))


@pytest.fixture
def store(api: CatalogFactory, as_alice: dict[str, str]) -> Any:
    return api.store(as_alice, "Property shop")


@PROPERTY
@given(core=names(), before=blanks, after=blanks)
def test_an_accepted_name_is_stored_trimmed_and_exact(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    store: Any,
    core: Any,
    before: Any,
    after: Any,
) -> None:
    response = client.patch(
        f"/stores/{store['id']}", json={"name": before + core + after}, headers=as_alice
    )
    assert response.status_code == 200, (core, response.json)
    assert response.json["name"] == core
    assert client.get(f"/stores/{store['id']}").json["name"] == core
    assert query(app, select(Store.name)) == [(core,)]


@PROPERTY
@given(name=bad_names())
def test_a_refused_name_is_a_422_naming_it(
    app: Flask, client: Client, as_alice: dict[str, str], store: Any, name: Any
) -> None:
    before = snapshot(app)
    response = client.patch(f"/stores/{store['id']}", json={"name": name}, headers=as_alice)
    body = assert_error(response, 422)
    assert list(body["errors"]["json"]) == ["name"], body
    assert snapshot(app) == before


# --- prices -------------------------------------------------------------------------

prices = st.decimals(min_value=0, max_value=MAX_PRICE - Decimal("0.01"), places=2)


@pytest.fixture
def item(api: CatalogFactory, as_alice: dict[str, str], store: Any) -> Any:
    return api.item(as_alice, store)


def patch_price(client: Client, headers: Any, item: Any, text: str) -> Any:
    """The body as JSON text, so that a number keeps every digit it is written with."""
    return client.patch(
        f"/items/{item['id']}",
        data=f'{{"price": {text}}}',
        content_type="application/json",
        headers=headers,
    )


@PROPERTY
@given(price=prices, as_string=st.booleans())
def test_an_accepted_price_round_trips_exactly(
    app: Flask, client: Client, as_alice: dict[str, str], item: Any, price: Any, as_string: Any
) -> None:
    text = json.dumps(str(price)) if as_string else str(price)
    response = patch_price(client, as_alice, item, text)
    assert response.status_code == 200, (text, response.json)
    returned = json.loads(response.get_data(as_text=True), parse_float=Decimal)["price"]
    assert Decimal(returned) == price
    read = json.loads(
        client.get(f"/items/{item['id']}").get_data(as_text=True), parse_float=Decimal
    )
    assert Decimal(read["price"]) == price
    assert query(app, select(Item.price)) == [(price,)]


@st.composite
def bad_prices(draw: Any) -> str:
    kind = draw(st.sampled_from(["places", "negative", "too large", "text"]))
    if kind == "places":  # 3 to 20 decimal places, the last one not zero
        whole = draw(st.integers(0, 10**9))
        places = draw(st.integers(3, 20))
        digits = draw(st.integers(1, 10**places - 1).filter(lambda d: d % 10))
        return f"{whole}.{digits:0{places}d}"
    if kind == "negative":
        return "-" + str(draw(st.decimals(min_value="0.01", max_value=10**9, places=2)))
    if kind == "too large":
        return str(draw(st.decimals(min_value=MAX_PRICE, max_value=10**15, places=2)))
    return json.dumps(draw(st.sampled_from(["1e3", "1_000", "١٢", "0x10", " ", "1.", ".5"])))


@PROPERTY
@given(text=bad_prices())
def test_a_refused_price_is_a_422_naming_it(
    app: Flask, client: Client, as_alice: dict[str, str], item: Any, text: Any
) -> None:
    before = snapshot(app)
    body = assert_error(patch_price(client, as_alice, item, text), 422)
    assert list(body["errors"]["json"]) == ["price"], (text, body)
    assert snapshot(app) == before


# --- usernames ----------------------------------------------------------------------

USERNAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
usernames = st.text(alphabet=USERNAME_CHARS, min_size=3, max_size=80)


# Strong, and no run of three characters a username may hold: whatever username is
# drawn, the password cannot contain it (a 422 on the password would hide the case).
PASSWORD_WITHOUT_USERNAMES = "ŧħë ŋøřŧħ ŵïŋđ"


def register(client: Client, username: str) -> Any:
    body = {
        "username": username,
        "email": "property@example.com",
        "password": PASSWORD_WITHOUT_USERNAMES,
    }
    return client.post("/register", json=body)


@pytest.fixture
def forget_users(app: Flask) -> Any:
    """Deletes the users an example registered, so the next starts alike."""

    def forget() -> None:
        with app.app_context():
            db.session.execute(delete(User))
            db.session.commit()

    return forget


@PROPERTY
@given(username=usernames, before=blanks, after=blanks)
def test_an_accepted_username_is_stored_trimmed(
    app: Flask, client: Client, forget_users: Any, username: Any, before: Any, after: Any
) -> None:
    try:
        response = register(client, before + username + after)
        assert response.status_code == 201, (username, response.json)
        assert response.json["username"] == username
        stored = query(app, select(User.username).where(User.id == response.json["id"]))
        assert stored == [(username,)]
        # Taken now, whatever the case it is written in.
        assert_error(register(client, username.swapcase()), 409)
    finally:
        forget_users()


bad_usernames = st.one_of(
    st.text(alphabet=USERNAME_CHARS, max_size=2),
    st.text(alphabet=USERNAME_CHARS, min_size=81, max_size=100),
    st.builds(
        lambda a, c, b: a + c + b,
        usernames,
        st.characters().filter(lambda c: c not in USERNAME_CHARS + BLANKS),
        usernames,
    ),
)


@PROPERTY
@given(username=bad_usernames)
def test_a_refused_username_is_a_422_naming_it(app: Flask, client: Client, username: Any) -> None:
    before = snapshot(app)
    body = assert_error(register(client, username), 422)
    assert list(body["errors"]["json"]) == ["username"], (username, body)
    assert snapshot(app) == before
