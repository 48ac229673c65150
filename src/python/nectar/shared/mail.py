"""Queueing email: every service writes to the outbox table; marketing's worker sends it.

Queueing is part of the caller's transaction, so a message exists exactly when the change that
caused it was committed.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
import uuid
from dataclasses import dataclass, field

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Email:
    """One message for the outbox. Every message has a text part and an HTML part: without a
    `body_html` of its own (a campaign has one), the HTML part is the text, escaped, its links
    made clickable (text_as_html)."""

    to: str
    subject: str
    body_text: str
    category: str
    body_html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    dedupe_key: str | None = None
    campaign_id: uuid.UUID | None = None  # the newsletter campaign it is part of, if any

    def __post_init__(self) -> None:
        if self.body_html is None:
            object.__setattr__(self, "body_html", html_part(self.body_text))


# An address in running text: it ends at white space or at what cannot be in one unescaped, and
# sentence punctuation just after it is not part of it.
_LINK = re.compile(r"""https?://[^\s<>"']+""")
_TRAILING = ".,;:!?)]}"


def text_as_html(text: str) -> str:
    """Plain text as HTML: escaped, http(s) addresses made links, blank lines between paragraphs,
    single line breaks kept: what the text part says, the HTML part says."""
    paragraphs = [part for part in re.split(r"\n\s*\n", text.strip()) if part.strip()]
    return "\n".join(
        f"<p>{'<br>'.join(linked_text(line) for line in part.splitlines())}</p>" for part in paragraphs
    )


def linked_text(text: str) -> str:
    """`text` escaped for HTML, its http(s) addresses made links; line breaks stay as they are."""
    out, last = [], 0
    for match in _LINK.finditer(text):
        address = match.group(0).rstrip(_TRAILING)
        out.append(html.escape(text[last : match.start()], quote=False))
        escaped = html.escape(address, quote=True)
        out.append(f'<a href="{escaped}">{escaped}</a>')
        last = match.start() + len(address)
    out.append(html.escape(text[last:], quote=False))
    return "".join(out)


def html_part(text: str) -> str:
    """The HTML part of a message whose text part is `text`: a whole document."""
    return f'<!doctype html><html><head><meta charset="utf-8"></head><body>{text_as_html(text)}</body></html>'


# RFC 8058: what a mail client POSTs to the List-Unsubscribe address for a one-click unsubscribe.
ONE_CLICK = "List-Unsubscribe=One-Click"
# A stored header the sender turns into the From display name (the address stays MAIL_FROM's), so
# mail sent for an organization reads "Acme via Nectar Studio" in the inbox. Never sent as it is.
SENDER_NAME_HEADER = "X-Nectar-Sender-Name"


def unsubscribe_headers(url: str) -> dict[str, str]:
    """RFC 2369 and RFC 8058 headers: mail clients show an unsubscribe button that POSTs to `url`."""
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": ONE_CLICK}


def one_line(text: str, limit: int) -> str:
    """Text someone chose, made fit for a subject or a header: line breaks and control characters
    become spaces, invisible formatting characters (bidirectional overrides among them) go, spaces
    collapse, and at most `limit` characters remain (cut with "…")."""
    kept = []
    for char in str(text):
        kind = unicodedata.category(char)
        if kind in ("Cc", "Zl", "Zp"):
            kept.append(" ")
        elif kind != "Cf":
            kept.append(char)
    flat = " ".join("".join(kept).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def quoted(text: str, limit: int) -> str:
    """`one_line(text, limit)` in quotation marks: how mail shows a name someone else chose."""
    return f"“{one_line(text, limit)}”"


# psycopg's parameter style, so raw connections (the endpoint hot path) can send it too.
OUTBOX_INSERT_SQL = (
    "INSERT INTO email_outbox (id, to_address, subject, body_text, body_html, headers, category, dedupe_key, "
    "campaign_id) VALUES (%(id)s, %(to)s, %(subject)s, %(body_text)s, %(body_html)s, CAST(%(headers)s AS jsonb), "
    "%(category)s, %(dedupe_key)s, %(campaign_id)s)"
)
# The same, when a message with the same dedupe_key may be queued already (a resumed batch): the
# first one stays and this one is dropped. No conflict target: naming one needs SELECT on its
# column, which core (insert-only) lacks; the id is new, so dedupe_key is the only one that clashes.
OUTBOX_INSERT_ONCE_SQL = OUTBOX_INSERT_SQL + " ON CONFLICT DO NOTHING"


def outbox_params(email: Email) -> dict:
    """The parameters of OUTBOX_INSERT_SQL for `email`, with a new id."""
    return {
        "id": uuid.uuid4(),
        "to": email.to,
        "subject": email.subject,
        "body_text": email.body_text,
        "body_html": email.body_html,
        "headers": json.dumps(email.headers),
        "category": email.category,
        "dedupe_key": email.dedupe_key,
        "campaign_id": email.campaign_id,
    }


def queue_email(session: Session, email: Email) -> uuid.UUID:
    """Adds `email` to the outbox in the session's transaction and returns its id.

    No RETURNING: core may insert into the outbox but not read it (least privilege).
    """
    params = outbox_params(email)
    session.connection().exec_driver_sql(OUTBOX_INSERT_SQL, params)
    return params["id"]


def queue_email_once(session: Session, email: Email) -> bool:
    """Like queue_email for a message with a dedupe_key: True if it was added, False if a message
    with that key was queued before (one statement, safe under concurrency)."""
    assert email.dedupe_key, "queue_email_once needs a dedupe_key"
    return session.connection().exec_driver_sql(OUTBOX_INSERT_ONCE_SQL, outbox_params(email)).rowcount == 1
