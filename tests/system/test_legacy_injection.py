"""A deprecated path never copies what it was sent into a header.

The ids of /item/<id> and the other old paths used to be pasted into the ``Link``
header as they came: under Werkzeug's server (``flask run``) a percent-encoded
CR LF in the path became a real injected header, under gunicorn an HTML 500 and a
traceback. Each is tried on the real server, since that is where it showed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import Client, assert_error
from servers import BIN, call, free_port, gunicorns, migrate, serve, server_env

# Raw request targets, sent as they are (http.client does not re-encode them).
HOSTILE_PATHS = [
    "/item/1%0D%0ASet-Cookie:%20pwned=1",
    "/item/1%0ASet-Cookie:%20pwned=1",
    "/store/1%0D%0AX-Injected:%201/tag",
    "/user/1%0D%0A%0D%0A<html>",
    "/item/1%00",
    "/tag/%E2%80%A8",  # a Unicode line separator
    "/item/abc",
    "/item/0",
    "/item/99999999999",
    "/items/1/tag/2%0D%0AX-Injected:%201",
]


def assert_plain_404(response: Any) -> None:
    body = assert_error(response, 404)
    assert body["message"] == "Not found: no resource at this path."
    names = {name.lower() for name in response.headers.keys()}  # noqa: SIM118
    assert "set-cookie" not in names
    assert "x-injected" not in names
    assert "deprecation" not in names  # nothing was rewritten
    assert "link" not in names


def check_server(base: str) -> None:
    for path in HOSTILE_PATHS:
        assert_plain_404(call("GET", base + path))
    # A well-formed id is still rewritten, and the successor link is the canonical path.
    ok = call("GET", f"{base}/item/7")
    assert_error(ok, 404)  # no item 7 yet: the canonical view's own answer
    assert ok.json["message"] == "Item 7 not found."
    assert ok.headers["Link"] == '</items/7>; rel="successor-version"'
    assert ok.headers["Deprecation"] == "@1795219200"


@pytest.fixture
def sqlite_env(tmp_path: Path) -> Any:
    env = server_env(APP_ENV="development", DATABASE_URL=f"sqlite:///{tmp_path / 'legacy.db'}")
    migrate(env)
    return env


def test_under_werkzeugs_development_server(sqlite_env: Any, tmp_path: Path) -> None:
    port = free_port()
    command = [str(BIN / "flask"), "--app", "app", "run", "--port", str(port)]
    log = tmp_path / "flask.log"
    with serve(command, sqlite_env, port, log=log):
        check_server(f"http://127.0.0.1:{port}")
    assert "Traceback" not in log.read_text()


def test_under_gunicorn(sqlite_env: Any) -> None:
    with gunicorns(sqlite_env, count=1, workers=1) as (server,):
        check_server(server.url)
        assert "Traceback" not in server.log()


@pytest.mark.parametrize(
    "path", ["/item/1\r\nSet-Cookie: pwned=1", "/item/1\n", "/tag/1 ", "/user/-1", "/item/1/"]
)
def test_in_process(client: Client, path: Any) -> None:
    # PATH_INFO set as a server would decode it (the test client's URL parsing would
    # drop the line breaks before the app saw them).
    response = client.get("/", environ_overrides={"PATH_INFO": path})
    if path == "/item/1/":  # well-formed: rewritten, the canonical view answers
        assert_error(response, 404)
        assert response.headers["Link"] == '</items/1>; rel="successor-version"'
    else:
        assert_plain_404(response)
