"""A real HTTP receiver of webhooks on 127.0.0.1, in a thread of the test: it
records every POST (headers, body, when) and answers as the test tells it. And one
that never finishes its answer (``trickling``)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    client_port: int = 0  # the sender's end of the connection: one per connection


@dataclass
class Receiver:
    port: int = 0
    status: int = 200
    delay: float = 0.0
    extra_headers: dict[str, str] = field(default_factory=dict)
    refuse: Callable[[bytes], bool] | None = None  # these bodies are answered 500
    answer: bytes | None = None  # the body of every answer (else "ok", or "nope")
    received: list[Received] = field(default_factory=list)
    hits: int = 0  # every request, accepted or not
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def bodies(self) -> list[bytes]:
        with self.lock:
            return [r.body for r in self.received]

    def wait_for(self, check: Callable[[list[Received]], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if check(list(self.received)):
                    return
            time.sleep(0.05)
        raise TimeoutError(f"receiver: condition not met in {timeout} s ({len(self.received)} got)")


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                receiver.hits += 1
            if receiver.delay:
                time.sleep(receiver.delay)
            status = receiver.status
            if receiver.refuse is not None and receiver.refuse(body):
                status = 500
            with receiver.lock:
                if 200 <= status < 300:
                    receiver.received.append(
                        Received(
                            self.path,
                            dict(self.headers.items()),
                            body,
                            time.time(),
                            self.client_address[1],
                        )
                    )
            payload = receiver.answer
            if payload is None:
                payload = b"ok" if status < 300 else b"nope"
            self.send_response(status)
            for name, value in receiver.extra_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_args: Any) -> None:
            pass

    return Handler


@contextmanager
def receiving(port: int = 0, **settings: Any) -> Iterator[Receiver]:
    """A receiver listening until the block ends. Only 2xx answers are recorded as
    received (a receiver that answers 500 has not accepted the event)."""
    receiver = Receiver(**settings)
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(receiver))
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Trickler:
    """A receiver that reads a request, sends its status line, then one header byte
    every ``every`` seconds: its answer never ends (a slow or hostile receiver)."""

    url: str
    requests: int = 0


@contextmanager
def trickling(every: float = 0.2, for_at_most: float = 10.0) -> Iterator[Trickler]:
    """A trickling receiver until the block ends; each connection trickles until the
    sender hangs up, or for ``for_at_most`` seconds."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)  # to see ``stop``
    trickler = Trickler(f"http://127.0.0.1:{server.getsockname()[1]}/hook")
    stop = threading.Event()

    def trickle(conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            trickler.requests += 1
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            ends = time.monotonic() + for_at_most
            while not stop.is_set() and time.monotonic() < ends:
                try:
                    conn.sendall(b"X")
                except OSError:
                    return  # the sender hung up
                stop.wait(every)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _peer = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield trickler
    finally:
        stop.set()
        thread.join()
        server.close()
