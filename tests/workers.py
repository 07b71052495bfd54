"""Real Celery workers and a private Redis for the tests and the benchmark of
events and webhooks: processes started and stopped (or killed) by the test."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from servers import BIN, ROOT, free_port


class Worker:
    """``celery -A app worker`` (with its beat, -B) in a process group of its own, so
    that a SIGKILL takes the pool's children with it, as a lost machine would."""

    def __init__(self, env: dict[str, str], *, concurrency: int = 2, beat: bool = True) -> None:
        self.env = env
        self.concurrency = concurrency
        self.beat = beat
        self.schedule = Path(tempfile.mkdtemp(prefix="stores_beat_")) / "schedule"
        self.log = Path(tempfile.mkstemp(prefix="stores_worker_", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        command = [
            str(BIN / "celery"),
            "-A",
            "app",
            "worker",
            "--loglevel=WARNING",
            f"--concurrency={self.concurrency}",
            "--without-gossip",
            "--without-mingle",
        ]
        if self.beat:
            command += ["-B", "-s", str(self.schedule)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        return self

    def kill(self) -> None:
        """SIGKILL to the worker and every process of its group: nothing acknowledges."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextmanager
def workers(env: dict[str, str], count: int = 1, **options: int) -> Iterator[list[Worker]]:
    """``count`` workers; the first runs beat too."""
    started = [Worker(env, beat=i == 0, **options).start() for i in range(count)]
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()
        for worker in started:
            worker.log.unlink(missing_ok=True)
            shutil.rmtree(worker.schedule.parent, ignore_errors=True)


class RedisServer:
    """A private, non-persistent redis-server on a free port (restartable)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def empty(self) -> None:
        """Drop every message and mark it holds."""
        client = redis.Redis(port=self.port)
        client.flushdb()
        client.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()
