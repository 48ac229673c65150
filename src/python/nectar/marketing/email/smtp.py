"""Sending through an SMTP server configured by the environment, one connection per flush.

The settings (SMTP_HOST, SMTP_PORT, SMTP_USERNAME, SMTP_PASSWORD, SMTP_SECURITY, MAIL_FROM) are
nectar.shared.config.SmtpSettings, read with every other variable there.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formataddr, formatdate, getaddresses

from nectar.shared.config import SmtpSettings
from nectar.shared.mail import SENDER_NAME_HEADER, html_part, one_line

TIMEOUT_SECONDS = 30
# Set by the sender; a stored header may not replace them.
RESERVED_HEADERS = {"from", "to", "cc", "bcc", "subject", "date", "message-id", "content-type",
                    "content-transfer-encoding", "mime-version", "sender", "return-path"}  # fmt: skip


class SmtpConnection:
    """One logged-in SMTP session. `open` connects and logs in; `send` needs an open session and
    raises smtplib/OSError exceptions for the caller to judge."""

    def __init__(self, settings: SmtpSettings):
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> SmtpConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._smtp is not None

    def open(self) -> None:
        """Connects and logs in, unless already open; raises what connecting or logging in raised."""
        if self._smtp is None:
            self._smtp = self._connect()

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                s.host, s.port, timeout=TIMEOUT_SECONDS, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=TIMEOUT_SECONDS)
        try:
            smtp.ehlo()
            if s.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if s.username:
                smtp.login(s.username, s.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: EmailMessage) -> None:
        if self._smtp is None:
            raise smtplib.SMTPServerDisconnected("not connected: open() first")
        try:
            self._smtp.send_message(message)
        except smtplib.SMTPServerDisconnected:
            self._smtp = None
            raise
        except (smtplib.SMTPException, UnicodeError):
            # After a refused message the session can continue; reset it for the next one (a
            # server that hung up instead leaves the connection closed: the next send reopens it).
            self._reset()
            raise
        except OSError:
            self.close()
            raise

    def _reset(self) -> None:
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None


def build_message(
    settings: SmtpSettings,
    message_id: str,
    to: str,
    subject: str,
    body_text: str,
    body_html: str | None,
    headers: Mapping[str, str],
) -> EmailMessage:
    """The MIME message for one outbox row. Its Message-ID comes from the row, so a retried send is
    recognisably the same message. A stored sender name (mail sent for an organization) replaces
    MAIL_FROM's display name; the address is always MAIL_FROM's."""
    headers = dict(headers or {})
    sender_name = headers.pop(SENDER_NAME_HEADER, None)
    message = EmailMessage()
    if sender_name:
        address = getaddresses([settings.mail_from])[0][1]
        message["From"] = formataddr((one_line(sender_name, 120), address))
    else:
        message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = f"<{message_id}@{settings.from_domain}>"
    for name, value in headers.items():
        if name.lower() not in RESERVED_HEADERS:
            message[name] = value
    message.set_content(body_text)
    # Messages queued before every Email had an HTML part get theirs here.
    message.add_alternative(body_html or html_part(body_text), subtype="html")
    return message
