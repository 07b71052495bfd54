"""Real servers for the tests that need them: gunicorn on a free port, migrated first."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


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


@contextmanager
def gunicorn(env: dict[str, str], *, workers: int = 2, port: int | None = None) -> Iterator[str]:
    """gunicorn serving ``create_app()`` with ``env``; yields its base URL."""
    port = port or free_port()
    env = env | {"PORT": str(port), "WEB_CONCURRENCY": str(workers)}
    process = subprocess.Popen(
        [
            BIN / "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "app:create_app()",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()
