"""HTTP POSTs of signed events to a webhook (contract §11).

The host is resolved once; every address must be public (unless
WEBHOOK_ALLOW_PRIVATE_NETWORKS), the connection goes to that address and the
address connected to is checked again, while the request carries the name (Host
header, TLS SNI and certificate check): a name that resolves elsewhere between the
check and the connection (DNS rebinding) cannot reach a private address. Redirects
are not followed; at most 64 KiB of the answer is read. The timeout is the attempt's
whole time, connect to last byte, however slowly the receiver answers.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.events.addresses import (
    UnsafeURLError,
    check_form,
    default_port,
    is_public,
    public_addresses,
    request_target,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

log = logging.getLogger("stores.events")

READ_LIMIT = 64 * 1024
KEEP = 1024
USER_AGENT = "stores-webhooks/1"


def _storable(text: str | None) -> str | None:
    """``text`` as a text column holds it: a NUL (which PostgreSQL refuses in text)
    becomes U+FFFD, as undecodable bytes do."""
    return None if text is None else text.replace("\x00", "\ufffd")


@dataclass
class Result:
    ok: bool
    status: int | None = None
    body: str | None = None
    error: str | None = None
    seconds: float = 0.0  # the attempt's time, as measured (the metrics' histogram)
    timed_out: bool = False

    def __post_init__(self) -> None:
        # The answer's text is the receiver's (a body ``ok\x00``, UTF-16 JSON, a status
        # line in an exception's message): every Result is made storable here, or the
        # outcome's write fails and the batch, left claimed, is sent again for ever.
        self.body = _storable(self.body)
        self.error = _storable(self.error)

    @property
    def failure(self) -> tuple[str, str] | None:
        """Why the attempt failed, as a trace writes it (its ``error.type``: the answer's
        status, ``timeout`` or ``_OTHER``, and a description), or None: it succeeded."""
        if self.ok:
            return None
        if self.status is not None:
            return str(self.status), self.error or f"answered {self.status}"
        return ("timeout" if self.timed_out else "_OTHER"), self.error or "no answer"

    @property
    def duration_ms(self) -> int:
        """The time the delivery log shows, in whole milliseconds."""
        return round(self.seconds * 1000)


def _time_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the attempt's time is spent")
    return left


# An attempt's timeout is its whole time (docs/events.md). A socket timeout bounds one
# read or write, and http.client reads the status line and headers a few bytes at a
# time as they come: a receiver sending a byte a second would hold a worker for as long
# as it likes. These sockets give each read and write only the time the attempt has
# left, so an attempt ends by its deadline (set before it starts) whatever it waits on.
class _TimedSocket(socket.socket):
    deadline = 0.0

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        self.settimeout(_time_left(self.deadline))
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        self.settimeout(_time_left(self.deadline))
        super().sendall(data, flags)  # sendall's timeout is its whole time


class _TimedSSLSocket(ssl.SSLSocket):
    deadline = 0.0

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        self.settimeout(_time_left(self.deadline))
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:  # sendall's every write
        self.settimeout(_time_left(self.deadline))
        return super().send(data, flags)


def _connect(address: str, port: int, deadline: float, allow_private: bool) -> _TimedSocket:
    plain = socket.create_connection((address, port), timeout=_time_left(deadline))
    sock = _TimedSocket(fileno=plain.detach())
    sock.deadline = deadline
    sock.settimeout(_time_left(deadline))
    # http.client writes a request's headers and body apart: sent at once, not held by
    # Nagle's algorithm until the receiver acknowledges the headers (as urllib3 does).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    peer = sock.getpeername()[0]
    if not allow_private and not is_public(peer):
        sock.close()
        raise UnsafeURLError(f"Connected to a non-public address ({peer}); refused.")
    return sock


class PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to one address checked beforehand, whatever DNS says now.
    ``deadline`` (time.monotonic()) is the end of the attempt under way."""

    def __init__(self, host: str, port: int, address: str, allow_private: bool):
        super().__init__(host, port)
        self.address = address
        self.allow_private = allow_private
        self.deadline = 0.0

    def connect(self) -> None:
        self.sock = _connect(self.address, self.port, self.deadline, self.allow_private)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, allow_private: bool):
        self.tls = ssl.create_default_context()
        self.tls.sslsocket_class = _TimedSSLSocket
        super().__init__(host, port, context=self.tls)
        self.address = address
        self.allow_private = allow_private
        self.deadline = 0.0

    def connect(self) -> None:
        sock = _connect(self.address, self.port, self.deadline, self.allow_private)
        # The name, not the address: SNI and the certificate are checked against it.
        # The handshake's timeout (the time left) is its whole time.
        tls = self.tls.wrap_socket(sock, server_hostname=self.host)
        assert isinstance(tls, _TimedSSLSocket)
        tls.deadline = self.deadline
        self.sock = tls


def _ack_at_once(sock: socket.socket | None) -> None:
    """Acknowledge the answer's first segment at once (Linux; else nothing): a receiver
    that writes its headers and body apart, with Nagle's algorithm on (Python's
    http.server, a plain WSGI server), holds the body until then, and a kept-alive
    connection acknowledges late (up to 40-200 ms a POST)."""
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if sock is not None and quickack is not None:
        sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


class Target:
    """A webhook's URL, resolved and checked once, POSTed to over one kept-alive
    connection to the checked address: a batch of attempts (core/events/delivery.py)
    pays for one lookup and one connection, not one per event. A connection the
    receiver closed, or one left in doubt by an error, is opened again (and its peer
    checked again) by the next POST. A refused URL makes every POST a refused attempt.
    Use it as a context manager: it closes its connection."""

    def __init__(self, url: str, *, timeout: float, allow_http: bool, allow_private: bool):
        self.timeout = timeout
        self.refused: str | None = None
        self.connection: PinnedHTTPConnection | PinnedHTTPSConnection | None = None
        self.path = "/"
        try:
            parts = check_form(url, allow_http=allow_http)
            host = parts.hostname
            assert host is not None
            port = default_port(parts)
            address = public_addresses(host, port, allow_private=allow_private)[0]
        except UnsafeURLError as exc:
            self.refused = f"Refused: {exc}"
            return
        except Exception as exc:  # unforeseen: every POST a failed attempt, not a crash
            log.warning("webhook URL %r not usable", url, exc_info=True)
            self.refused = describe(exc)
            return
        kind = PinnedHTTPSConnection if parts.scheme == "https" else PinnedHTTPConnection
        self.connection = kind(host, port, address, allow_private)
        self.path = request_target(parts)

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.connection is not None:
            self.connection.close()

    def post(self, body: bytes, headers: dict[str, str]) -> Result:
        if self.connection is None:
            return Result(ok=False, error=self.refused)
        started = time.monotonic()
        reused = self.connection.sock is not None
        result = self._post(body, headers, started)
        if reused and result.error is not None and result.status is None and not result.timed_out:
            # Most likely the receiver closed the idle connection: once more on a new one
            # (a receiver deduplicates on webhook-id, should it have got the first).
            result = self._post(body, headers, started)
        return result

    def _post(self, body: bytes, headers: dict[str, str], started: float) -> Result:
        connection = self.connection
        assert connection is not None
        deadline = started + self.timeout

        def took() -> float:
            return time.monotonic() - started

        # The attempt's end: a new connection's sockets take it, a kept-alive one's is told.
        connection.deadline = deadline
        if isinstance(connection.sock, _TimedSocket | _TimedSSLSocket):
            connection.sock.deadline = deadline
        try:
            connection.request(
                "POST", self.path, body=body, headers={"User-Agent": USER_AGENT, **headers}
            )
            _ack_at_once(connection.sock)
            response = connection.getresponse()
            chunks, size = [], 0
            while size < READ_LIMIT:
                chunk = response.read1(READ_LIMIT - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if response.length == 0:
                response.read()  # read to its end (read1 never says so): the connection is free
            elif not response.isclosed():
                connection.close()  # an answer longer than we read: this connection is done
            kept = b"".join(chunks)[:KEEP].decode("utf-8", errors="replace")
            if time.monotonic() > deadline:
                raise TimeoutError("read")
            ok = 200 <= response.status < 300
            error = (
                None
                if ok
                else f"HTTP {response.status} (a 2xx was expected; redirects are not followed)"
            )
            return Result(ok=ok, status=response.status, body=kept, error=error, seconds=took())
        except UnsafeURLError as exc:
            connection.close()
            return Result(ok=False, error=f"Refused: {exc}", seconds=took())
        except TimeoutError:
            connection.close()
            error = f"No answer within {self.timeout:g} s."
            return Result(ok=False, error=error, seconds=took(), timed_out=True)
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            return Result(ok=False, error=describe(exc), seconds=took())
        except Exception as exc:
            # Unforeseen (a bug, a library's surprise): still a failed attempt, retried
            # and counted like any other, not a task that dies and leaves it pending.
            log.warning("webhook POST to %s failed unexpectedly", self.path, exc_info=True)
            connection.close()
            return Result(ok=False, error=describe(exc), seconds=took())


def describe(exc: Exception) -> str:
    """An error as an attempt's log shows it."""
    return f"{type(exc).__name__}: {exc}"[:500]
