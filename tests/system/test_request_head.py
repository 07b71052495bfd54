"""A request head out of bounds (§2): 414 / 431 in the JSON envelope, decided by the
app, under the real gunicorn (whose own refusals are HTML; its limits sit above the
app's, gunicorn.conf.py). Malformed protocol bytes keep gunicorn's plain 400."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from helpers import assert_error
from servers import call, gunicorns, migrate, server_env


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("head") / "head.db"
    env = server_env(APP_ENV="development", DATABASE_URL=f"sqlite:///{path}")
    migrate(env)
    with gunicorns(env, count=1, workers=1) as (server,):
        yield server.url
        assert "Traceback" not in server.log()


def test_a_target_within_the_bound_is_served(base: str) -> None:
    # Past gunicorn's default 4094-byte request line: served.
    response = call("GET", f"{base}/items?q={'x' * 5000}")
    assert_error(response, 422)  # q is at most 80 characters: the app's own answer


@pytest.mark.parametrize("length", [8200, 70_000])
def test_a_long_target_is_414_in_the_envelope(base: str, length: int) -> None:
    response = call("GET", f"{base}/items?q={'x' * length}")
    body = assert_error(response, 414)
    assert body["message"] == "The request target is over 8190 bytes."


def test_a_long_header_is_431_in_the_envelope(base: str) -> None:
    response = call("GET", f"{base}/items", headers={"X-Long": "y" * 9000})
    body = assert_error(response, 431)
    assert body["message"] == "The X-Long header is over 8190 bytes."


def test_too_many_headers_is_431_in_the_envelope(base: str) -> None:
    headers = {f"X-Field-{n}": "1" for n in range(120)}
    body = assert_error(call("GET", f"{base}/items", headers=headers), 431)
    assert body["message"] == "More than 100 header fields."


def test_a_header_within_the_bounds_is_served(base: str) -> None:
    headers = {f"X-Field-{n}": "z" * 8000 for n in range(5)}
    assert call("GET", f"{base}/items", headers=headers).status_code == 200


def test_malformed_protocol_bytes_keep_the_servers_plain_400(base: str) -> None:
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET /items HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400")
