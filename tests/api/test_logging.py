"""Logs a person can read and a log store can parse: LOG_FORMAT=json|text, chosen by
environment when unset; the development server on a terminal writes one readable line
per request, production writes JSON even there, and JSON never carries colour codes."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from core.web.config import DevelopmentConfig
from core.web.env import ConfigError
from core.web.request_log import JsonFormatter, TextFormatter, choose_format
from helpers import Client
from servers import BIN, ROOT, SECRET, call, free_port, production_env, server_env, stop
from servers import wait_until_up as wait_for_health

TEXT_ACCESS_LINE = re.compile(
    r"^\d\d:\d\d:\d\d\.\d{3} INFO    stores\.access  GET /health 200  "
    r"request_id=(?P<id>\S+) duration_ms=[\d.]+ client_ip=127\.0\.0\.1$"
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("setting", "app_env", "stream", "expected"),
    [
        ("", "development", Terminal(), "text"),
        ("", "development", io.StringIO(), "json"),  # piped to a file or a collector
        ("", "production", Terminal(), "json"),
        ("", "testing", io.StringIO(), "json"),
        ("json", "development", Terminal(), "json"),
        ("text", "production", io.StringIO(), "text"),
    ],
)
def test_the_format_is_the_setting_or_chosen_by_environment(
    setting: Any, app_env: Any, stream: Any, expected: Any
) -> None:
    assert choose_format(setting, app_env, stream) == expected


def test_an_unknown_format_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="LOG_FORMAT must be json or text; got 'xml'"):
        DevelopmentConfig({"LOG_FORMAT": "XML"})
    assert DevelopmentConfig({"LOG_FORMAT": " Text "}).LOG_FORMAT == "text"


def test_json_lines_carry_no_colour_codes() -> None:
    record = logging.LogRecord("werkzeug", logging.INFO, "", 0, "\x1b[33m%s\x1b[0m", ("hi",), None)
    line = JsonFormatter().format(record)
    assert json.loads(line)["message"] == "hi"
    assert "\x1b" not in line and "\\u001b" not in line


def test_a_text_line_per_request(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="stores.access"):
        client.get("/health", headers={"X-Request-ID": "txt-1"})
    [record] = [r for r in caplog.records if r.name == "stores.access"]
    line = TextFormatter().format(record)
    match = TEXT_ACCESS_LINE.match(line)
    assert match, line
    assert match["id"] == "txt-1"


# --- real servers writing to a terminal


@contextmanager
def on_a_terminal(command: list[str], env: dict[str, str], port: int) -> Iterator[list[bytes]]:
    """Run a server with stdout and stderr on a pseudo-terminal, as in a developer's
    shell, until /health answers; collects everything it writes until it stops."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower
    )
    os.close(follower)
    output: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the server and its workers have all closed it
                return
            if not data:
                return
            output.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        wait_for_health(f"http://127.0.0.1:{port}", process, timeout=60)
        yield output
    finally:
        stop(process)
        reader.join(timeout=10)
        os.close(leader)


def lines_of(output: list[bytes]) -> list[str]:
    return [line for line in b"".join(output).decode().splitlines() if line.strip()]


def test_the_development_server_on_a_terminal_writes_one_readable_line_per_request() -> None:
    """`make run`: flask's development server, in development, on a terminal."""
    port = free_port()
    env = server_env(APP_ENV="development", DATABASE_URL="sqlite://", LOG_LEVEL="INFO")
    command = [str(BIN / "flask"), "--app", "app", "run", "--port", str(port)]
    with on_a_terminal(command, env, port) as output:
        assert call("GET", f"http://127.0.0.1:{port}/health", headers={"X-Request-ID": "tty-1"})
    lines = lines_of(output)
    # The request: one line, the app's own; werkzeug's duplicate is dropped.
    [about_it] = [line for line in lines if "tty-1" in line]
    match = TEXT_ACCESS_LINE.match(about_it)
    assert match and match["id"] == "tty-1", about_it
    assert not any("HTTP/1.1" in line for line in lines), lines
    assert not any(line.lstrip().startswith("{") for line in lines), lines
    assert any("Running on http://127.0.0.1:" in line for line in lines), lines


def test_production_writes_json_even_on_a_terminal() -> None:
    """gunicorn in production, on a terminal: JSON lines, gunicorn's own included."""
    port = free_port()
    env = production_env(
        DATABASE_URL="postgresql://app@127.0.0.1:1/stores",  # /health never connects
        JWT_SECRET_KEY=SECRET,
        PORT=str(port),
        GUNICORN_HOST="127.0.0.1",
        WEB_CONCURRENCY="1",
        LOG_LEVEL="INFO",
    )
    command = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:create_app()"]
    with on_a_terminal(command, env, port) as output:
        assert call("GET", f"http://127.0.0.1:{port}/health", headers={"X-Request-ID": "tty-2"})
    entries = [json.loads(line) for line in lines_of(output)]
    assert "\\u001b" not in "".join(lines_of(output))
    assert {"gunicorn.error", "stores.access"} <= {entry["logger"] for entry in entries}
    [access] = [entry for entry in entries if entry.get("request_id") == "tty-2"]
    assert (access["path"], access["status"]) == ("/health", 200)
