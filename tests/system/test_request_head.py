"""The request head under the real gunicorn (§2). gunicorn parses it before the app
sees it; its limits are the app's (gunicorn.conf.py), so no head costs more than a
bounded parse, and whatever it refuses itself (a head out of bounds: 414 / 431, an
unknown Expect: 417, a method it refuses or bytes it cannot read: 400) is answered in
the JSON envelope, as the app answers (core/web/gunicorn_errors.py). A body whose
chunked encoding is malformed is the client's error too: 400, nothing written."""

from __future__ import annotations

import http.client
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import assert_error
from servers import Response, Server, call, gunicorns, migrate, server_env, sign_up

IMPORT_MAX_BYTES = 5000


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("head") / "head.db"


@pytest.fixture(scope="module")
def server(database: Path) -> Iterator[Server]:
    env = server_env(
        APP_ENV="development",
        DATABASE_URL=f"sqlite:///{database}",
        IMPORT_MAX_BYTES=str(IMPORT_MAX_BYTES),
    )
    migrate(env)
    with gunicorns(env, count=1, workers=1) as (server,):
        yield server
        errors = [line for line in server.log().splitlines() if '"level": "ERROR"' in line]
        assert not errors, errors[:2]


@pytest.fixture(scope="module")
def base(server: Server) -> str:
    return server.url


def raw(base: str, data: bytes, *, half_close: bool = False) -> Response:
    """``data`` sent as is on a connection of its own (closed for writing after it, with
    ``half_close``), and the answer. The server may answer and close before it has read
    all of ``data`` (a head past its bounds): what it answered is still read."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        with suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        return Response(answer.status, answer.headers, answer.read())


def count(database: Path, table: str) -> int:
    with closing(sqlite3.connect(database)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def assert_refused(response: Response, status: int, message: str | None = None) -> None:
    """gunicorn's own refusal, in the envelope, with a request id; the connection closed."""
    body = assert_error(response, status)
    if message is not None:
        assert body["message"] == message
    assert set(body) == {"code", "status", "message"}
    assert len(response.headers["X-Request-ID"]) == 32
    assert response.headers["API-Version"] == "1"
    assert response.headers["Connection"] == "close"


def test_a_target_within_the_bound_is_served(base: str) -> None:
    # Past gunicorn's default 4094-byte request line: served.
    response = call("GET", f"{base}/items?q={'x' * 5000}")
    assert_error(response, 422)  # q is at most 80 characters: the app's own answer


@pytest.mark.parametrize("length", [8200, 70_000])
def test_a_long_target_is_414_in_the_envelope(base: str, length: int) -> None:
    response = call("GET", f"{base}/items?q={'x' * length}")
    assert_refused(response, 414, "The request line is over 8190 bytes.")


def test_a_long_header_is_431_in_the_envelope(base: str) -> None:
    response = call("GET", f"{base}/items", headers={"X-Long": "y" * 9000})
    assert_refused(response, 431, "A header field is over 8190 bytes.")


def test_too_many_headers_is_431_in_the_envelope(base: str) -> None:
    headers = {f"X-Field-{n}": "1" for n in range(120)}
    assert_refused(call("GET", f"{base}/items", headers=headers), 431)


def test_a_header_within_the_bounds_is_served(base: str) -> None:
    headers = {f"X-Field-{n}": "z" * 8000 for n in range(5)}
    assert call("GET", f"{base}/items", headers=headers).status_code == 200


HUGE_LINE = b"GET /items?q=" + b"x" * (26 * 1024 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
HUGE_FIELDS = b"".join(b"X-Field-%d: %s\r\n" % (n, b"y" * 60_000) for n in range(300))
HUGE_HEAD = b"GET /items HTTP/1.1\r\nHost: x\r\n" + HUGE_FIELDS + b"\r\n"
MANY_FIELDS = b"".join(b"X-F-%d: 1\r\n" % n for n in range(1200))


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (HUGE_LINE, 414, "The request line is over 8190 bytes."),
        (HUGE_HEAD, 431, None),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-L: " + b"y" * 70_000 + b"\r\n\r\n", 431, None),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + MANY_FIELDS + b"\r\n", 431, None),
    ],
    ids=["26 MiB line", "300 fields of 60 KB", "a 70 KB field", "1,200 fields"],
)
def test_a_huge_head_is_refused_at_once_in_the_envelope(
    server: Server, request_bytes: bytes, status: int, message: str | None
) -> None:
    """gunicorn's parse grows with the square of the head: unbounded, a 26 MiB line or
    18 MB of fields held the worker until the timeout killed it (an HTML 500)."""
    workers = server.workers()
    started = time.monotonic()
    assert_refused(raw(server.url, request_bytes), status, message)
    assert time.monotonic() - started < 3
    assert server.workers() == workers  # the same worker, never killed


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /items HTTP/1.1\r\nHost: x\r\nExpect: bogus\r\n\r\n", 417),
        (b"get /items HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"%s /items HTTP/1.1\r\nHost: x\r\n\r\n" % (b"A" * 32), 400),
        (b"GET /items HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n", 400),
    ],
    ids=["Expect: bogus", "lowercase method", "32-letter method", "control byte"],
)
def test_what_gunicorn_refuses_itself_is_in_the_envelope(
    base: str, request_bytes: bytes, status: int
) -> None:
    assert_refused(raw(base, request_bytes), status)


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


# --- a body shorter than its Content-Length ----------------------------------------


def sized(target: str, content_type: str, body: bytes, length: int, **headers: str) -> bytes:
    fields = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{fields}"
        f"Content-Length: {length}\r\n\r\n"
    ).encode() + body


def test_a_json_body_cut_before_its_length_is_400_and_nothing_is_written(
    base: str, database: Path
) -> None:
    user = b'{"username": "cutshort", "email": "cut@example.com", "password": "a long passw0rd"}'
    before = count(database, "users")
    response = raw(
        base, sized("/register", "application/json", user, len(user) + 40), half_close=True
    )
    body = assert_error(response, 400)
    assert body["message"] == "The body ended before its Content-Length."
    assert count(database, "users") == before


@pytest.mark.parametrize("key", [None, "cut-import"])
def test_an_import_cut_before_its_length_is_400_and_no_job_is_made(
    base: str, database: Path, store: tuple[dict[str, str], int], key: str | None
) -> None:
    """Cut at a line's end, what arrived is a valid CSV: imported, it was half the file."""
    auth, store_id = store
    headers = auth | ({"Idempotency-Key": key} if key else {})
    rows = b"".join(b"Item %d,1\r\n" % n for n in range(100))
    csv = b"name,price\r\n" + rows
    sent = csv[: csv.index(b"Item 50,")]
    request = sized(f"/stores/{store_id}/imports", "text/csv", sent, len(csv), **headers)
    before = count(database, "jobs"), count(database, "job_chunks")
    response = raw(base, request, half_close=True)
    body = assert_error(response, 400)
    assert body["message"] == "The body ended before its Content-Length."
    assert (count(database, "jobs"), count(database, "job_chunks")) == before


@pytest.mark.parametrize("key", [None, "limit-import"])
@pytest.mark.parametrize("extra", [0, 1])
def test_an_import_of_exactly_the_limit_is_taken(
    base: str, store: tuple[dict[str, str], int], key: str | None, extra: int
) -> None:
    """ "Up to IMPORT_MAX_BYTES": a file of that size is taken, one byte more is 413."""
    auth, store_id = store
    headers = auth | ({"Idempotency-Key": f"{key}-{extra}"} if key else {})
    header = b"name,price\r\n"
    filler = b"x" * (IMPORT_MAX_BYTES + extra - len(header) - len(b",1\r\n"))
    csv = header + filler + b",1\r\n"
    assert len(csv) == IMPORT_MAX_BYTES + extra
    request = sized(f"/stores/{store_id}/imports", "text/csv", csv, len(csv), **headers)
    response = raw(base, request)
    if extra:
        assert_error(response, 413)
    else:
        assert response.status_code == 202, response.body
