"""Real processes for the tests that need them: gunicorn (or the container's
entrypoint) on a free port, a PostgreSQL database of their own, and a small HTTP
client whose answers look like Flask test responses, so the same assertions serve."""

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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET = "k" * 40  # long enough for production
REQUEST_TIMEOUT = 10  # seconds; a request that takes longer is a failure, not a wait


# CI runs its two passes at once (.ci/run), each with its own TEST_PORT_CLASS: a pass
# takes only ports of its class, so it never picks one the other pass has picked and
# not bound yet (between free_port() and the server's bind, the port is free to all).
def port_class(value: str | None) -> int | None:
    """TEST_PORT_CLASS as a class of ports: None (unset or empty: any port), 0 or 1."""
    if not value:
        return None
    if value not in ("0", "1"):
        raise ValueError(f"TEST_PORT_CLASS is 0 or 1, not {value!r}")
    return int(value)


PORT_CLASS = port_class(os.environ.get("TEST_PORT_CLASS"))


def free_port(of_class: int | None = PORT_CLASS) -> int:
    """A port free now; of class ``of_class`` (``port // 2 % 2``) unless it is None."""
    held: list[socket.socket] = []  # the ports of the other class, refused until the end
    try:
        while True:
            sock = socket.socket()
            held.append(sock)
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            if of_class is None or port // 2 % 2 == of_class:
                return port
    finally:
        for sock in held:
            sock.close()


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


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [BIN / "flask", "--app", "app", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def libpq(url: str) -> str:
    """``url`` as psycopg takes it (no SQLAlchemy driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def wait_for_sessions(url: str, where: str, count: int, timeout: float = 60) -> None:
    """Until ``count`` sessions of the database at ``url`` match ``where`` in
    pg_stat_activity. On a connection of its own in autocommit: inside a transaction
    the view is a snapshot, and would never change."""
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            (found,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                f"WHERE datname = current_database() AND {where}"
            ).fetchall()[0]
            if found >= count:
                return
            time.sleep(0.05)
    raise TimeoutError(f"fewer than {count} sessions with {where}")


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


# --- HTTP ------------------------------------------------------------------------


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


def call(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> Response:
    """One request on a new connection; an error status is an answer, not an exception."""
    headers = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    parts = urlsplit(url)
    assert parts.hostname, f"no host in {url}"
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=data, headers=headers)
        answer = conn.getresponse()
        return Response(answer.status, answer.headers, answer.read())
    finally:
        conn.close()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, token: str, timeout: float = 30) -> Samples:
    """Every sample a ``/metrics`` at ``url`` answers (waiting for it to listen), by
    name and sorted labels."""
    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = call("GET", url, token=token, timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert answer.status_code == 200, answer.status_code
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.body.decode())
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def sign_up(base: str) -> dict[str, str]:
    """Register and log in a user on a live server; their auth headers."""
    user = {"username": "deployer", "email": "deployer@example.com", "password": "a long passw0rd"}
    assert call("POST", f"{base}/register", user).status_code == 201
    del user["email"]
    tokens = call("POST", f"{base}/login", user).json
    return {"Authorization": f"Bearer {tokens['access_token']}"}


# --- processes ----------------------------------------------------------------------


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


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started, e.g. gunicorn's workers."""
    return sorted(
        int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    )


def wait_until_up(
    url: str, process: subprocess.Popen[bytes], *, workers: int | None = None, timeout: float = 90
) -> None:
    """Until ``url``/health answers 200 (and, if given, that many workers are forked)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            healthy = call("GET", f"{url}/health", timeout=1).status_code == 200
        except OSError:
            healthy = False
        if healthy and (workers is None or len(child_pids(process.pid)) == workers):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up in {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, unless it has stopped already; SIGKILL after 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def serve(
    command: list[str],
    env: dict[str, str],
    port: int,
    *,
    log: Path | None = None,
    cwd: Path = ROOT,
    group: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in ``cwd`` (the repository) until its /health answers on ``port``,
    and stop it with SIGTERM at the end unless the test already did. Its stderr goes to
    ``log`` (a temporary file if not given) and is shown if it never comes up.

    With ``group``, the command leads a process group of its own and the SIGTERM goes
    to the whole group: ``make`` does not pass a signal on to the server it started."""
    temporary = log is None
    log = log or Path(tempfile.mkstemp(prefix="stores_server_", suffix=".log")[1])
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=group,
        )
    try:
        try:
            wait_until_up(f"http://127.0.0.1:{port}", process, timeout=60)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; its stderr:\n{log.read_text()[-4000:]}") from None
        yield process
    finally:
        if group and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        stop(process)
        if temporary:
            log.unlink()


class Server:
    """One gunicorn master and its workers, serving ``create_app()`` on 127.0.0.1."""

    def __init__(
        self, env: dict[str, str], *, workers: int, port: int | None = None, cwd: Path = ROOT
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.expected_workers = workers
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - stop() closes it
        self.process = subprocess.Popen(
            gunicorn_command(self.port),
            cwd=cwd,
            env=env | {"PORT": str(self.port), "WEB_CONCURRENCY": str(workers)},
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def __repr__(self) -> str:
        return f"<gunicorn :{self.port}>"

    def wait_until_up(self) -> None:
        """Until /health answers and every worker has been forked."""
        try:
            wait_until_up(self.url, self.process, workers=self.expected_workers)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}:\n{self.log()}") from None

    def workers(self) -> list[int]:
        """Process ids of the workers, as gunicorn's master has forked them."""
        return child_pids(self.process.pid)

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

    def request(self, method: str, path: str, body: Any = None, **options: Any) -> Response:
        """One request to this server (``options``: ``token``, ``headers``)."""
        return call(method, self.url + path, body, **options)

    def log(self) -> str:
        """What the server wrote to stderr so far (tracebacks of any 500 among it)."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        stop(self.process)
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
def gunicorn(env: dict[str, str], *, workers: int = 2) -> Iterator[str]:
    """gunicorn serving ``create_app()`` with ``env``; yields its base URL."""
    with gunicorns(env, count=1, workers=workers) as (server,):
        yield server.url
