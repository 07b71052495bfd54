"""A real SMTP server for the tests (aiosmtpd), keeping what it receives."""

from __future__ import annotations

import email
import email.policy
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import cast
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from servers import free_port


@dataclass
class Received:
    mail_from: str | None  # aiosmtpd's Envelope: None until MAIL FROM
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def text(self) -> str:
        text: str = self.message.get_content()  # typeshed leaves get_content unannotated
        return text


class Mailbox:
    """aiosmtpd's handler: every message accepted is parsed and kept."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.changed = threading.Condition()
        self.host = "127.0.0.1"
        self.port = 0

    async def handle_DATA(  # noqa: N802 - aiosmtpd's name
        self, _server: SMTP, _session: Session, envelope: Envelope
    ) -> str:
        # The Controller's default decode_data=False: DATA's content arrives as bytes.
        content = cast(bytes, envelope.content)
        message = email.message_from_bytes(content, policy=email.policy.default)
        with self.changed:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
            self.changed.notify_all()
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        """The first ``count`` messages, once they have come (at most ``timeout`` s)."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.received) >= count, timeout)
            assert len(self.received) >= count, f"{len(self.received)} of {count} mails came"
            return self.received[:count]


LINK = re.compile(r"(\S+/password-reset\?token=\S+)")


def follow(received: Received, base_url: str = "http://localhost:5000") -> str:
    """The token of the reset link in a received mail, read as a front end at
    ``base_url`` (PUBLIC_BASE_URL) would read it."""
    links: list[str] = LINK.findall(received.text)
    assert len(links) == 1, received.text
    url = urlsplit(links[0])
    assert f"{url.scheme}://{url.netloc}" == base_url
    assert url.path == "/password-reset"
    (token,) = parse_qs(url.query, strict_parsing=True)["token"]
    return token


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    """An SMTP server on 127.0.0.1 and a free port, for the block."""
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    mailbox.port = controller.port
    try:
        yield mailbox
    finally:
        controller.stop()
