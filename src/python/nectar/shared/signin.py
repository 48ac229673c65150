"""Signing in with an email and a password, under limits on failed attempts: one mechanism for every
service with accounts (core's customers, admin's staff), each with its own table and limits."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from nectar.shared import throttle
from nectar.shared.bad_input import MAX_EMAIL_LENGTH
from nectar.shared.passwords import hash_password, needs_rehash, verify_password

WRONG_CREDENTIALS = "Wrong email or password."


class InvalidEmail(ValueError):
    """Not an email address; `str()` says why, for people."""


class SignInRefused(Exception):
    """Wrong credentials, an inactive account, or a lockout. The message is safe to show: it never
    says which part was wrong. `locked` tells a lockout (429) from wrong credentials (401)."""

    def __init__(self, message: str, locked: bool = False):
        super().__init__(message)
        self.locked = locked


def normalize_email(raw: str) -> str:
    """The address in its one stored form. Raises InvalidEmail."""
    if len(raw) > MAX_EMAIL_LENGTH:  # refused before the validator, which slows down on huge input
        raise InvalidEmail(f"An email address is at most {MAX_EMAIL_LENGTH} characters.")
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise InvalidEmail(str(error)) from None


@dataclass(frozen=True)
class PasswordSignIn:
    """Password sign-in for the accounts of one mapped class (`email`, `password_hash`, `is_active`
    and `last_login_at` columns). Failures count per account in `account_limits` (the first, a short
    burst, starts over after a successful sign-in) and per client address in `address_limit`."""

    account: type
    name: str  # the counters' key prefix, e.g. "core.login"
    account_limits: tuple[tuple[str, throttle.Limit], ...]  # (counter name, limit), burst first
    address_limit: throttle.Limit
    locked_advice: str = ""  # what the lockout message adds, e.g. "or reset your password."

    def find(self, session: Session, email: str):
        """The account with this (normalized) email, or None."""
        return session.scalar(select(self.account).where(self.account.email == email))

    def sign_in(self, session: Session, email: str, password: str, address: str | None):
        """The account whose credentials these are. Raises SignInRefused.

        The attempt is counted, and the counts checked, before the password is: in one statement per
        counter, committed at once (so no row lock is held while the password hash is computed, and
        neither a rollback nor a crash forgets the attempt). Concurrent attempts each get their own
        count, so no more of them reach a password check than a limit allows. A successful sign-in
        is taken back from the counts (they count failures); the caller commits it."""
        try:
            email = normalize_email(email)
        except InvalidEmail:
            email = email.strip().lower()[:MAX_EMAIL_LENGTH]
        now = time.time()
        counters = self._counters(email, address)
        refused_by = throttle.take(session, counters, now)
        session.commit()
        if refused_by is not None:
            raise SignInRefused(self._locked_message(refused_by[1], now), locked=True)
        account = self.find(session, email)
        # Always verify (against a dummy hash when there is no account), so timing reveals nothing.
        password_ok = verify_password(account.password_hash if account else None, password)
        if account is None or not account.is_active or not password_ok:
            raise SignInRefused(WRONG_CREDENTIALS)
        burst, *others = counters
        throttle.clear(session, burst[0])  # a burst of failures starts over after a success
        throttle.give_back(session, others, now)
        if needs_rehash(account.password_hash):
            account.password_hash = hash_password(password)
        account.last_login_at = datetime.now(UTC)
        return account

    def _counters(self, email: str, address: str | None) -> list[tuple[str, throttle.Limit]]:
        counters = [
            (f"{self.name}.{counter}:{email.lower()}", limit) for counter, limit in self.account_limits
        ]
        if address:
            counters.append((f"{self.name}.address:{address}", self.address_limit))
        return counters

    def _locked_message(self, limit: throttle.Limit, now: float) -> str:
        minutes = -(-limit.seconds_left(now) // 60)
        advice = f"; try again then, {self.locked_advice}" if self.locked_advice else "."
        return (
            f"Too many failed sign-in attempts. Sign-in is locked for {minutes} "
            f"minute{'s' if minutes != 1 else ''}{advice}"
        )
