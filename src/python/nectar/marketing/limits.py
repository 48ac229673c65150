"""Rate limits on the public forms, counted in PostgreSQL (nectar.shared.throttle) so they hold across
every process. Each form limits per email address (no mail-bombing a stranger through us) and per
client address (no flooding from one host)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.orm import Session

from nectar.shared import throttle
from nectar.shared.database import db


class RateLimited(Exception):
    """Too many attempts; `str()` is the message for the person, `retry_after` the seconds to wait."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class FormLimits:
    name: str
    per_email: throttle.Limit
    per_address: throttle.Limit

    def check(self, session: Session, email: str, address: str | None) -> None:
        """Counts one attempt for the email and the client address; raises RateLimited when either is
        over its limit. The counts are part of the session's transaction: commit them even when this
        raises, or a refused attempt would not count."""
        now = time.time()
        email_count = throttle.hit(
            session, f"marketing.{self.name}.email:{email.lower()}", self.per_email, now
        )
        address_count = (
            throttle.hit(session, f"marketing.{self.name}.address:{address}", self.per_address, now)
            if address
            else 0
        )
        if address_count > self.per_address.events:
            wait = self.per_address.seconds_left(now)
            raise RateLimited(
                f"Too many submissions from your network. Please try again in {_minutes(wait)}.", wait
            )
        if email_count > self.per_email.events:
            wait = self.per_email.seconds_left(now)
            raise RateLimited(
                f"We have had several requests for this email address already. Please try again in {_minutes(wait)}.",
                wait,
            )


def refused(limited: RateLimited, page: str):
    """The answer to a form refused by a limit: its page with the reason, 429 and Retry-After. The
    refused attempt counts too, so the request's counters are committed."""
    db.session.commit()
    return page, 429, {"Retry-After": str(limited.retry_after)}


def _minutes(seconds: int) -> str:
    minutes = max(1, -(-seconds // 60))
    return "a minute" if minutes == 1 else f"{minutes} minutes"


CONTACT = FormLimits(
    "contact",
    per_email=throttle.Limit(events=5, window_seconds=3600),
    per_address=throttle.Limit(events=10, window_seconds=600),
)
NEWSLETTER = FormLimits(
    "newsletter",
    per_email=throttle.Limit(events=3, window_seconds=3600),
    per_address=throttle.Limit(events=20, window_seconds=3600),
)
