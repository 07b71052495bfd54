"""One HTTP POST of a signed event to a webhook (contract §11).

The host is resolved once; every address must be public (unless
WEBHOOK_ALLOW_PRIVATE_NETWORKS), the connection goes to that address and the
address connected to is checked again, while the request carries the name (Host
header, TLS SNI and certificate check): a name that resolves elsewhere between the
check and the connection (DNS rebinding) cannot reach a private address. Redirects
are not followed; at most 64 KiB of the answer is read, all within the timeout.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass

from core.events.addresses import (
    UnsafeURLError,
    check_form,
    default_port,
    is_public,
    public_addresses,
)

READ_LIMIT = 64 * 1024
KEEP = 1024
USER_AGENT = "stores-webhooks/1"


@dataclass
class Result:
    ok: bool
    status: int | None = None
    body: str | None = None
    error: str | None = None
    duration_ms: int = 0


def _connect(address: str, port: int, timeout: float, allow_private: bool) -> socket.socket:
    sock = socket.create_connection((address, port), timeout=timeout)
    peer = sock.getpeername()[0]
    if not allow_private and not is_public(peer):
        sock.close()
        raise UnsafeURLError(f"Connected to a non-public address ({peer}); refused.")
    return sock


class PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to one address checked beforehand, whatever DNS says now."""

    def __init__(self, host: str, port: int, address: str, timeout: float, allow_private: bool):
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.limit = timeout
        self.allow_private = allow_private

    def connect(self) -> None:
        self.sock = _connect(self.address, self.port, self.limit, self.allow_private)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float, allow_private: bool):
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.address = address
        self.limit = timeout
        self.allow_private = allow_private

    def connect(self) -> None:
        sock = _connect(self.address, self.port, self.limit, self.allow_private)
        # The name, not the address: SNI and the certificate are checked against it.
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    allow_http: bool,
    allow_private: bool,
) -> Result:
    started = time.monotonic()
    deadline = started + timeout

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        parts = check_form(url, allow_http=allow_http)
        host = parts.hostname
        assert host is not None
        port = default_port(parts)
        address = public_addresses(host, port, allow_private=allow_private)[0]
    except UnsafeURLError as exc:
        return Result(ok=False, error=f"Refused: {exc}", duration_ms=took())
    kind = PinnedHTTPSConnection if parts.scheme == "https" else PinnedHTTPConnection
    connection = kind(host, port, address, timeout, allow_private)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.request("POST", path, body=body, headers={"User-Agent": USER_AGENT, **headers})
        response = connection.getresponse()
        chunks, size = [], 0
        while size < READ_LIMIT:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("read")
            if connection.sock is not None:
                connection.sock.settimeout(left)
            chunk = response.read1(READ_LIMIT - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        kept = b"".join(chunks)[:KEEP].decode("utf-8", errors="replace")
        if time.monotonic() > deadline:
            raise TimeoutError("read")
        ok = 200 <= response.status < 300
        error = (
            None
            if ok
            else f"HTTP {response.status} (a 2xx was expected; redirects are not followed)"
        )
        return Result(ok=ok, status=response.status, body=kept, error=error, duration_ms=took())
    except UnsafeURLError as exc:
        return Result(ok=False, error=f"Refused: {exc}", duration_ms=took())
    except TimeoutError:
        return Result(ok=False, error=f"No answer within {timeout:g} s.", duration_ms=took())
    except (OSError, http.client.HTTPException) as exc:
        return Result(ok=False, error=f"{type(exc).__name__}: {exc}"[:500], duration_ms=took())
    finally:
        connection.close()
