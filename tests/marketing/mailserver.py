"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, and can refuse addresses."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.serving import free_port


@dataclass
class Received:
    envelope_to: list[str]
    message: EmailMessage

    @property
    def to(self) -> str:
        return self.message["To"]

    def text(self) -> str:
        return self.message.get_body(("plain",)).get_content().replace("\r\n", "\n")

    def html(self) -> str | None:
        part = self.message.get_body(("html",))
        return part.get_content().replace("\r\n", "\n") if part else None


class HeldData:
    """A message whose end of DATA the server has read but not answered yet: `arrived` is set then;
    the server answers once `release()` is called. A sender that hangs up meanwhile never got the
    250, so the message is not taken (a server takes responsibility with that reply, RFC 5321 4.1.1.4)."""

    def __init__(self):
        self.arrived = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    async def wait(self) -> None:
        self.arrived.set()
        while not self._released.is_set():  # cancelled with the session when the sender hangs up
            await asyncio.sleep(0.05)


@dataclass
class _Handler:
    refuse: dict[str, str] = field(default_factory=dict)  # address -> SMTP reply
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Called with each recipient address as it is given, before it is accepted (a test's probe).
    on_recipient: Callable[[str], None] | None = None
    crash_on: str | None = None  # this recipient makes the server hang up and stop listening
    stop_listening: Callable[[], None] | None = None
    held: HeldData | None = None  # the next message's DATA is held

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.on_recipient is not None:
            self.on_recipient(address)
        if self.crash_on and address.lower() == self.crash_on and self.stop_listening:
            self.stop_listening()
            server.transport.close()
            return "421 4.3.2 Shutting down"
        if address.lower() in self.refuse:
            return self.refuse[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.held is not None:
            held, self.held = self.held, None
            await held.wait()
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.received.append(Received(list(envelope.rcpt_tos), message))
        return "250 Message accepted"


class MailServer:
    """`start()` listens on `port` (chosen up front, so a sender can be pointed at it while it is down)."""

    def __init__(self, port: int | None = None, login: tuple[str, str] | None = None, smtputf8: bool = True):
        self.port = port or free_port()
        self.handler = _Handler()
        self.login = login
        self.smtputf8 = smtputf8  # False: a server that cannot take internationalised addresses
        self._controller: Controller | None = None

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and (
                auth_data.login.decode(),
                auth_data.password.decode(),
            )
            == self.login
        )
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 235 or 535

    def start(self) -> MailServer:
        options = {"enable_SMTPUTF8": self.smtputf8}
        if self.login:
            # Plain-text AUTH on loopback only: these tests have no certificate for STARTTLS.
            options |= {"authenticator": self._authenticate, "auth_required": True, "auth_require_tls": False}
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **options)
        self._controller.start()
        self.handler.stop_listening = self._controller.server.close
        return self

    def crash_when_sending_to(self, address: str) -> None:
        """While `address` is being given, the server drops the connection and stops listening,
        as a server that goes down mid-session does (start() brings it back)."""
        self.handler.crash_on = address.lower()

    def hold_next_message(self) -> HeldData:
        """The next message's DATA is held unanswered until the returned HeldData is released."""
        self.handler.held = HeldData()
        return self.handler.held

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        self.handler.crash_on = None

    def refuse(self, address: str, reply: str = "550 5.1.1 No such user here") -> None:
        self.handler.refuse[address.lower()] = reply

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address.lower() in (a.lower() for a in r.envelope_to)]

    def environ(self) -> dict[str, str]:
        """The SMTP_* settings that point at this server."""
        return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.port), "SMTP_SECURITY": "none",
                "MAIL_FROM": "Nectar Studio <hello@nectar.test>"}  # fmt: skip
