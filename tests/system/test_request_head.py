"""A request head out of bounds (§2): 414 / 431 in the JSON envelope, decided by the
app, under the real gunicorn (whose own refusals are HTML; its limits sit above the
app's, gunicorn.conf.py). Malformed protocol bytes keep gunicorn's plain 400. A body
whose chunked encoding is malformed is the client's error too: 400, nothing written."""

from __future__ import annotations

import http.client
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import assert_error
from servers import Response, call, gunicorns, migrate, server_env, sign_up


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("head") / "head.db"


@pytest.fixture(scope="module")
def base(database: Path) -> Iterator[str]:
    env = server_env(APP_ENV="development", DATABASE_URL=f"sqlite:///{database}")
    migrate(env)
    with gunicorns(env, count=1, workers=1) as (server,):
        yield server.url
        errors = [line for line in server.log().splitlines() if '"level": "ERROR"' in line]
        assert not errors, errors[:2]


def raw(base: str, data: bytes, *, half_close: bool = False) -> Response:
    """``data`` sent as is on a connection of its own (closed for writing after it, with
    ``half_close``), and the answer."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        return Response(answer.status, answer.headers, answer.read())


def count(database: Path, table: str) -> int:
    with closing(sqlite3.connect(database)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


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


# --- a malformed chunked body ------------------------------------------------------

# Each body would be whole and valid but for its chunked encoding: a bad chunk size, a
# chunk not followed by CRLF, the last chunk never sent (the client closes after it).
MALFORMED = {
    "bad size": (b"zz\r\n%s\r\n0\r\n\r\n", False),
    "no terminator": (b"%x\r\n%sXX0\r\n\r\n", False),
    "cut off": (b"%x\r\n%s\r\n", True),
}


def chunked(target: str, content_type: str, body: bytes, shape: str, **headers: str) -> bytes:
    encoding, _ = MALFORMED[shape]
    chunks = encoding % ((body,) if shape == "bad size" else (len(body), body))
    fields = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{fields}"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode() + chunks


@pytest.mark.parametrize("shape", MALFORMED)
def test_a_malformed_chunked_json_body_is_400_and_nothing_is_written(
    base: str, database: Path, shape: str
) -> None:
    user = b'{"username": "chunky", "email": "chunky@example.com", "password": "a long passw0rd"}'
    request = chunked("/register", "application/json", user, shape)
    before = count(database, "users")
    response = raw(base, request, half_close=MALFORMED[shape][1])
    body = assert_error(response, 400)
    assert body["message"] == "The body's chunked encoding is malformed or cut off."
    assert response.headers["X-Request-ID"]
    assert count(database, "users") == before


@pytest.fixture(scope="module")
def store(base: str) -> tuple[dict[str, str], int]:
    """A store's owner's auth headers, and the store's id."""
    auth = sign_up(base)
    return auth, call("POST", f"{base}/stores", {"name": "Chunks"}, headers=auth).json["id"]


@pytest.mark.parametrize("key", [None, "chunked-import"])
@pytest.mark.parametrize("shape", MALFORMED)
def test_a_malformed_chunked_import_is_400_and_no_job_is_made(
    base: str, database: Path, store: tuple[dict[str, str], int], shape: str, key: str | None
) -> None:
    auth, store_id = store
    headers = auth | ({"Idempotency-Key": key} if key else {})
    csv = b"name,price\r\nTea,1\r\n"
    request = chunked(f"/stores/{store_id}/imports", "text/csv", csv, shape, **headers)
    before = count(database, "jobs"), count(database, "job_chunks")
    response = raw(base, request, half_close=MALFORMED[shape][1])
    body = assert_error(response, 400)
    assert body["message"] == "The body's chunked encoding is malformed or cut off."
    assert (count(database, "jobs"), count(database, "job_chunks")) == before
