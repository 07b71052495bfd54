"""Real servers for the tests that need them: a database of their own, migrated first,
and gunicorn on a free port, with a small HTTP client that can aim at one worker."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REQUEST_TIMEOUT = 10  # seconds; a request that takes longer is a failure, not a wait


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


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [BIN / "flask", "--app", "app", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


@contextmanager
def postgres_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on ``server_url``'s PostgreSQL server, named ``prefix`` plus
    a random suffix; yields its URL and drops it afterwards, even after a failure."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    maintenance = make_url(server_url).set(database="postgres")
    admin = create_engine(maintenance, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


class Response:
    """What a server answered; shaped like a Flask test response where tests look
    (``status_code``, ``headers``, ``mimetype``, ``json``, ``get_data``), so that the
    same assertions serve both."""

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.body = body

    @property
    def mimetype(self) -> str:
        return self.headers.get_content_type()

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.mimetype == "application/json" else None

    def get_data(self, as_text: bool = False) -> bytes | str:
        return self.body.decode() if as_text else self.body

    def __repr__(self) -> str:
        return f"<{self.status_code} {self.body[:300].decode(errors='replace')}>"


def _children(pid: int) -> list[int]:
    """Ids of the processes whose parent is ``pid``."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return sorted(children)


class Server:
    """One gunicorn master and its workers, serving ``create_app()`` on 127.0.0.1."""

    def __init__(self, env: dict[str, str], *, workers: int, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.expected_workers = workers
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - stop() closes it
        self.process = subprocess.Popen(
            [
                BIN / "gunicorn",
                "-c",
                "gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{self.port}",
                "app:create_app()",
            ],
            cwd=ROOT,
            env=env | {"PORT": str(self.port), "WEB_CONCURRENCY": str(workers)},
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def __repr__(self) -> str:
        return f"<gunicorn :{self.port}>"

    def wait_until_up(self, timeout: float = 30) -> None:
        """Until /health answers and every worker has been forked."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:  # noqa: S310
                    if response.status == 200 and len(self.workers()) == self.expected_workers:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.url} did not come up in {timeout} s:\n{self.log()}")

    def workers(self) -> list[int]:
        """Process ids of the workers, as gunicorn's master has forked them."""
        return _children(self.process.pid)

    @contextmanager
    def only_worker(self, pid: int) -> Iterator[None]:
        """Requests made in the block are served by worker ``pid``: the others are
        paused (SIGSTOP), so only it can accept a connection; resumed after."""
        others = [worker for worker in self.workers() if worker != pid]
        for worker in others:
            os.kill(worker, signal.SIGSTOP)
        try:
            yield
        finally:
            for worker in others:
                os.kill(worker, signal.SIGCONT)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """One request on a new connection (sync workers close it after each answer)."""
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request(method, path, body=data, headers=headers)
            answer = conn.getresponse()
            return Response(answer.status, answer.headers, answer.read())
        finally:
            conn.close()

    def log(self) -> str:
        """What the server wrote to stderr so far (tracebacks of any 500 among it)."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@contextmanager
def gunicorns(env: dict[str, str], *, count: int, workers: int = 2) -> Iterator[list[Server]]:
    """``count`` gunicorn instances with the same ``env``, started side by side."""
    servers: list[Server] = []
    try:
        servers.extend(Server(env, workers=workers) for _ in range(count))
        for server in servers:
            server.wait_until_up()
        yield servers
    finally:
        for server in servers:  # all at once: each takes a moment to shut down
            server.process.send_signal(signal.SIGTERM)
        for server in servers:
            server.stop()


@contextmanager
def gunicorn(env: dict[str, str], *, workers: int = 2, port: int | None = None) -> Iterator[str]:
    """gunicorn serving ``create_app()`` with ``env``; yields its base URL."""
    server = Server(env, workers=workers, port=port)
    try:
        server.wait_until_up()
        yield server.url
    finally:
        server.stop()
