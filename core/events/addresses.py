"""Where a webhook may point (contract §11, no server-side request forgery): the
URL's form, and the addresses its host resolves to, checked when the webhook is saved
and again at every delivery against the address actually connected to.

``resolve`` is the one DNS lookup (a test replaces it to play a rebinding name). It
has a deadline of its own (``LOOKUP_SECONDS``): the system's resolver may wait far
longer on a name server that does not answer, and a lookup runs in a request (a
webhook being saved) or holds a delivery thread.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as LookupTimeout
from urllib.parse import SplitResult, quote, urlsplit

MAX_URL_LENGTH = 2048

# The request line carries the path and query as they are written, and http.client
# sends printable ASCII only: a space or a control character is refused (InvalidURL),
# anything else non-ASCII cannot be encoded. Percent-encoded, they are sendable. (A
# host may be non-ASCII: it is sent IDNA-encoded.)
_UNSENDABLE = re.compile(r"[^\x21-\x7e]")
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class UnsafeURLError(ValueError):
    """A URL a webhook may not use; the message says why."""


LOOKUP_SECONDS = 5.0
LOOKUP_THREADS = 8  # lookups at once in a process; more wait their turn (and deadline)
_lookups: tuple[int, ThreadPoolExecutor] | None = None
_lookups_made = threading.Lock()


def _lookup_pool() -> ThreadPoolExecutor:
    """This process's lookup threads (made again in a forked child, which has none)."""
    global _lookups
    with _lookups_made:
        if _lookups is None or _lookups[0] != os.getpid():
            _lookups = (os.getpid(), ThreadPoolExecutor(LOOKUP_THREADS, "dns-lookup"))
        return _lookups[1]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (one lookup), within LOOKUP_SECONDS: the
    lookup runs in a thread, which a resolver that never answers keeps only until its
    own timeout, while the caller goes on at the deadline."""
    lookup = _lookup_pool().submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=LOOKUP_SECONDS)
    except LookupTimeout:
        raise UnsafeURLError(
            f"The host {host!r} did not resolve within {LOOKUP_SECONDS:g} s."
        ) from None
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURLError(f"The host {host!r} does not resolve ({exc}).") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(address: str) -> bool:
    """A globally routed unicast address: not loopback, private (RFC 1918, IPv6 ULA),
    link-local (169.254/16 and its metadata services, fe80::/10), CGNAT (100.64/10),
    multicast, unspecified or reserved. IPv4 written as IPv6 is judged as IPv4."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            ip = mapped
    return (
        ip.is_global
        and not ip.is_multicast
        and not ip.is_unspecified
        and not ip.is_reserved
        and not ip.is_loopback
        and not ip.is_link_local
        and not ip.is_private
    )


def check_form(url: str, *, allow_http: bool) -> SplitResult:
    """The URL's own rules: https (http only if allowed), a host, no credentials,
    at most 2,048 characters, a path and query that can be sent as written."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURLError(f"At most {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURLError(f"Not a URL: {exc}.") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise UnsafeURLError(
            "Must start with https://."
            if not allow_http
            else "Must start with https:// or http://."
        )
    if parts.username is not None or parts.password is not None:
        raise UnsafeURLError("Must not carry credentials (user:password@).")
    if not parts.hostname:
        raise UnsafeURLError("Must name a host.")
    if port == 0:
        raise UnsafeURLError("Port 0 is not a port.")
    if parts.fragment:
        raise UnsafeURLError("Must not carry a #fragment.")
    # Anywhere: urlsplit drops tabs and line breaks that the URL saved would still show.
    unsendable = _SPACE_OR_CONTROL.search(url) or _UNSENDABLE.search(request_target(parts))
    if unsendable:
        char = unsendable.group()
        raise UnsafeURLError(
            f"Must not contain {char!r}: the path and query are sent as written, so "
            f"percent-encode it ({quote(char, safe='')})."
        )
    return parts


def request_target(parts: SplitResult) -> str:
    """What a POST to the URL puts on its request line: the path, and the query."""
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def default_port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def public_addresses(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses of ``host``, all of which must be public (unless allowed)."""
    addresses = resolve(host, port)
    if not addresses:
        raise UnsafeURLError(f"The host {host!r} does not resolve.")
    if not allow_private:
        refused = [a for a in addresses if not is_public(a)]
        if refused:
            raise UnsafeURLError(
                f"The host {host!r} resolves to a non-public address ({refused[0]}); "
                "webhooks go to public addresses only."
            )
    return addresses


def check_url(url: str, *, allow_http: bool, allow_private: bool) -> None:
    """Every rule, with the host resolved now (a webhook being saved)."""
    parts = check_form(url, allow_http=allow_http)
    assert parts.hostname is not None
    public_addresses(parts.hostname, default_port(parts), allow_private=allow_private)
