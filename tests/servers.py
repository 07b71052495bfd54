"""Real servers for the tests that need them: gunicorn on a free port, migrated first."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET = "k" * 40  # long enough for production


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(**values: str) -> dict[str, str]:
    """The environment of a server process: ours, minus test settings, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "APP_ENV")}
    env.update({"PYTHONPATH": str(ROOT), "JWT_SECRET_KEY": "t" * 32, "LOG_LEVEL": "WARNING"})
    env.update(values)
    return env


def production_env(**values: str) -> dict[str, str]:
    """A production server's environment, as in the image: only what ``values`` sets,
    no Redis, no PYTHONPATH (the code is found from the working directory), and the
    virtualenv first on PATH (docker-entrypoint.sh calls python, flask, gunicorn)."""
    env = server_env(APP_ENV="production", REDIS_URL="", PATH=f"{BIN}:{os.environ['PATH']}")
    for name in ("JWT_SECRET_KEY", "DATABASE_URL", "FLASK_DEBUG", "PYTHONPATH"):
        env.pop(name, None)
    return env | values


class Reply(NamedTuple):
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    method: str,
    url: str,
    body: dict | None = None,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> Reply:
    """One HTTP request; error statuses are answers too, not exceptions."""
    data = None if body is None else json.dumps(body).encode()
    headers = dict(headers or {})
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, error.headers, error.read())


def sign_up(base: str) -> dict[str, str]:
    """Register and log in a user on a live server; their auth headers."""
    user = {"username": "deployer", "email": "deployer@example.com", "password": "a long passw0rd"}
    assert call("POST", f"{base}/register", user).status == 201
    del user["email"]
    tokens = call("POST", f"{base}/login", user).json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def libpq(url: str) -> str:
    """``url`` as psycopg takes it (no SQLAlchemy driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of ``server_url``; dropped after."""
    url = make_url(server_url)
    name = f"stores_deploy_{uuid.uuid4().hex[:8]}"
    admin = libpq(url.set(database="postgres").render_as_string(hide_password=False))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [BIN / "flask", "--app", "app", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up in {timeout} s")


def gunicorn_command(port: int) -> list[str]:
    """gunicorn as deployed (gunicorn.conf.py), but listening on loopback only."""
    return [
        str(BIN / "gunicorn"),
        "-c",
        "gunicorn.conf.py",
        "--bind",
        f"127.0.0.1:{port}",
        "app:create_app()",
    ]


def child_pids(pid: int) -> set[int]:
    """The processes ``pid`` started, e.g. gunicorn's workers."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child) for child in children}


@contextmanager
def serve(
    command: list[str], env: dict[str, str], port: int, *, log: Path | None = None
) -> Iterator[subprocess.Popen]:
    """Run ``command`` in the repository until its /health answers on ``port``, and
    stop it with SIGTERM at the end unless the test already did. Its stderr goes to
    ``log`` (a temporary file if not given) and is shown if it never comes up."""
    temporary = log is None
    log = log or Path(tempfile.mkstemp(prefix="stores_server_", suffix=".log")[1])
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        try:
            wait_until_up(f"http://127.0.0.1:{port}", process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; its stderr:\n{log.read_text()[-4000:]}") from None
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if temporary:
            log.unlink()


@contextmanager
def gunicorn(env: dict[str, str], *, workers: int = 2, port: int | None = None) -> Iterator[str]:
    """gunicorn serving ``create_app()`` with ``env``; yields its base URL."""
    port = port or free_port()
    env = env | {"PORT": str(port), "WEB_CONCURRENCY": str(workers)}
    with serve(gunicorn_command(port), env, port):
        yield f"http://127.0.0.1:{port}"
