"""Timestamps are UTC whatever the database session's time zone.

Managed PostgreSQL servers often run with a ``TimeZone`` other than UTC; timestamptz
values then come back in that zone. The app connects here through a new pool whose
connections have the zone set by libpq's PGTZ (a per-database setting would reach
only connections opened after it, so it is set where connections are made).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text

from db import db
from helpers import bearer, client_of, create_user, query
from models import User

pytestmark = pytest.mark.postgres
UTC_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")


@pytest.fixture(params=["Asia/Tokyo", "America/New_York"])
def zoned_app(
    request: Any, app: Flask, make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> Any:
    """A second app on the test database whose sessions use the zone ``param``."""
    monkeypatch.setenv("PGTZ", request.param)
    zoned = make_app()
    assert query(zoned, text("SHOW TimeZone")) == [(request.param,)]
    return zoned


def test_json_and_etags_stay_utc(zoned_app: Flask) -> None:
    client = client_of(zoned_app)
    user = create_user(zoned_app, "tz")
    login = {"username": "tz", "password": "correct horse battery"}
    headers = bearer(client.post("/login", json=login).json["access_token"])

    created = client.post("/stores", json={"name": "Zoned"}, headers=headers)
    assert created.status_code == 201
    store_id = created.json["id"]
    read = client.get(f"/stores/{store_id}")
    assert read.json == created.json
    for stamp in ("created_at", "updated_at"):
        assert UTC_STAMP.fullmatch(read.json[stamp]), read.json[stamp]

    # The ETag a PATCH answers is the one the next GET answers, so it can be used
    # at once in If-Match (it used to be stale: 412).
    patched = client.patch(f"/stores/{store_id}", json={"address": "1 Main St"}, headers=headers)
    assert patched.status_code == 200
    again = client.get(f"/stores/{store_id}")
    assert again.json == patched.json
    assert again.headers["ETag"] == patched.headers["ETag"]
    if_match = headers | {"If-Match": patched.headers["ETag"]}
    second = client.patch(f"/stores/{store_id}", json={"address": "2 Main St"}, headers=if_match)
    assert second.status_code == 200
    assert second.json["address"] == "2 Main St"

    item = client.post(
        "/items", json={"name": "Milk", "price": "1.50", "store_id": store_id}, headers=headers
    ).json
    fetched = client.get(f"/items/{item['id']}")
    assert fetched.json == item
    assert UTC_STAMP.fullmatch(fetched.json["updated_at"])

    user_json = client.get(f"/users/{user.id}", headers=headers).json
    assert UTC_STAMP.fullmatch(user_json["created_at"])


def test_values_read_from_the_database_are_utc(zoned_app: Flask) -> None:
    with zoned_app.app_context():
        value = db.session.scalar(text("SELECT now()"))
        assert value.utcoffset().total_seconds() != 0  # the zone really is not UTC
        create_user(zoned_app, "tz2")
        stamp = db.session.scalars(select(User.created_at)).one()
        assert stamp.utcoffset() == timedelta(0)
        assert stamp.tzname() == "UTC"
