"""Accounts: sign-up, sign-in with throttling, browser sessions, email verification, password reset.

Functions take the database session and return or raise; views turn that into pages. Everything
here touches only global tables (users, user_sessions) and the outbox, so it needs no tenant scope.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nectar.schema.models import User, UserSession
from nectar.shared import signin, throttle
from nectar.shared.mail import Email, queue_email
from nectar.shared.passwords import hash_password, password_problem
from nectar.shared.rejection import InputRejected
from nectar.shared.sessions import SessionStore
from nectar.shared.tokens import TokenInvalid, fingerprint, make_token, read_token

VERIFY_MAX_AGE = 2 * 24 * 3600  # verification and sign-up links
SIGNUP_PURPOSE = "signup"
RESET_MAX_AGE = 3600

# A short lockout after a burst of failures, a hard hourly cap per account, and one per address.
ACCOUNT_BURST = throttle.Limit(events=5, window_seconds=300)
ACCOUNT_HOURLY = throttle.Limit(events=100, window_seconds=3600)
ADDRESS_LIMIT = throttle.Limit(events=50, window_seconds=900)
PASSWORDS = signin.PasswordSignIn(
    User,
    "core.login",
    account_limits=(("account", ACCOUNT_BURST), ("account-hour", ACCOUNT_HOURLY)),
    address_limit=ADDRESS_LIMIT,
    locked_advice="or reset your password.",
)
SESSIONS = SessionStore(
    UserSession, User, "user_id", idle_limit=timedelta(days=30), last_seen_resolution=timedelta(minutes=5)
)


SignInRefused = signin.SignInRefused  # what sign_in raises


def normalize_email(raw: str) -> str:
    try:
        return signin.normalize_email(raw)
    except signin.InvalidEmail as error:
        raise InputRejected(str(error), field="email") from None


def find_user(session: Session, email: str) -> User | None:
    return PASSWORDS.find(session, email)


@dataclass(frozen=True)
class SignUpLinks:
    """Where sign-up emails point: `finish(token)` to the page that creates the account, and the
    sign-in and forgotten-password pages for an address that has an account already."""

    finish: Callable[[str], str]
    sign_in: str
    forgot_password: str


def request_signup(session: Session, email: str, links: SignUpLinks) -> None:
    """Starts a sign-up by email, and answers the same whether or not the address has an account:
    nobody learns which addresses do (no account probing). A new address gets a link to finish
    signing up (the account is made there, with its password, once the link proved the inbox); an
    address with an account gets a note that someone tried, with links to sign in or reset the
    password. Both do the same work: one count, one lookup, one email queued (or, past the per-address
    limit, none either way). Raises InputRejected only for what is not an email address."""
    from flask import current_app

    email = normalize_email(email)
    if not email_allowed(session, "signup", email):
        return
    if find_user(session, email) is None:
        token = make_token(current_app.secret_key, SIGNUP_PURPOSE, {"email": email})
        message = Email(
            to=email,
            subject="Finish signing up for Nectar Studio",
            body_text=(
                "Someone, we hope you, asked to create a Nectar Studio account for this address.\n\n"
                f"Choose your name and password here within 48 hours:\n\n{links.finish(token)}\n\n"
                "If it was not you, ignore this message: no account is made without this link."
            ),
            category="account.signup",
        )
    else:
        message = Email(
            to=email,
            subject="Someone tried to sign up with your email",
            body_text=(
                "Someone, perhaps you, tried to create a Nectar Studio account for this address, which "
                "has one already. No new account was made, and yours is unchanged.\n\n"
                f"Sign in here:\n\n{links.sign_in}\n\n"
                f"Forgot the password? Choose a new one here:\n\n{links.forgot_password}\n\n"
                "If it was not you, you can ignore this message."
            ),
            category="account.signup_existing",
        )
    queue_email(session, message)


def signup_email(session: Session, secret_key: str, token: str) -> str:
    """The address a sign-up link was sent to. Raises TokenInvalid when the link is forged, expired,
    or its address has an account by now (the link was used, or the account made another way)."""
    email = read_token(secret_key, SIGNUP_PURPOSE, token, VERIFY_MAX_AGE)["email"]
    if find_user(session, email) is not None:
        raise TokenInvalid(f"{email} has an account already. Sign in, or reset its password.")
    return email


def create_verified_account(session: Session, email: str, password: str, display_name: str | None) -> User:
    """An account made from an emailed link (a sign-up link, an invitation): the link proved the
    address, so it is verified. Raises InputRejected for a weak password or a taken address."""
    problem = password_problem(password)
    if problem:
        raise InputRejected(problem, field="password")
    taken = InputRejected(f"{email} has an account already. Sign in, or reset its password.", field="email")
    if find_user(session, email) is not None:
        raise taken
    user = User(
        id=uuid.uuid4(),
        email=email,
        password_hash=hash_password(password),
        display_name=display_name or None,
        email_verified_at=datetime.now(UTC),
    )
    try:
        with session.begin_nested():  # the same address, made meanwhile by another request
            session.add(user)
    except IntegrityError:
        raise taken from None
    return user


EMAIL_PER_ADDRESS = throttle.Limit(events=3, window_seconds=3600)


def email_allowed(session: Session, kind: str, email: str) -> bool:
    """At most a few account emails of one kind per address and hour: no mail-bombing through us."""
    return (
        throttle.hit(session, f"core.mail.{kind}:{email.lower()}", EMAIL_PER_ADDRESS)
        <= EMAIL_PER_ADDRESS.events
    )


def send_verification(session: Session, user: User, verify_link) -> None:
    from flask import current_app

    if not email_allowed(session, "verify", user.email):
        return

    token = make_token(current_app.secret_key, "verify-email", {"uid": str(user.id), "email": user.email})
    queue_email(
        session,
        Email(
            to=user.email,
            subject="Confirm your email for Nectar Studio",
            body_text=(
                "Confirm this email address for your Nectar Studio account by opening this link within "
                f"48 hours:\n\n{verify_link(token)}\n\nIf you do not know why you got this, ignore it."
            ),
            category="account.verify",
        ),
    )


def verify_email(session: Session, secret_key: str, token: str) -> User:
    data = read_token(secret_key, "verify-email", token, VERIFY_MAX_AGE)
    user = session.get(User, uuid.UUID(data["uid"]))
    if user is None or user.email != data["email"]:
        raise TokenInvalid("This link is not valid any more.")
    if user.email_verified_at is None:
        user.email_verified_at = datetime.now(UTC)
    return user


def sign_in(session: Session, email: str, password: str, address: str | None) -> User:
    """Checks credentials under the throttles (PASSWORDS). Raises SignInRefused. Commits the
    attempt's count before checking the password; commit the sign-in after calling."""
    return PASSWORDS.sign_in(session, email, password, address)


def end_all_sessions(session: Session, user_id: uuid.UUID) -> None:
    """Signs the user out everywhere."""
    SESSIONS.end_all(session, user_id)


def request_password_reset(session: Session, email: str, reset_link) -> None:
    """Queues a reset email when the account exists; says nothing either way (no account probing).
    The address is counted whether or not it has an account, so both cases do the same work up to
    the email."""
    from flask import current_app

    try:
        email = normalize_email(email)
    except InputRejected:
        return
    if not email_allowed(session, "reset", email):
        return
    user = find_user(session, email)
    if user is None or not user.is_active:
        return
    token = make_token(
        current_app.secret_key, "reset-password", {"uid": str(user.id), "fp": _reset_binding(user)}
    )
    queue_email(
        session,
        Email(
            to=user.email,
            subject="Reset your Nectar Studio password",
            body_text=(
                "Someone asked to reset the password of your Nectar Studio account.\n\n"
                f"Choose a new password within an hour here:\n\n{reset_link(token)}\n\n"
                "The link works once. If it was not you, ignore this message; your password is unchanged."
            ),
            category="account.reset",
        ),
    )


def send_set_password(session: Session, user: User, reset_link) -> None:
    """For an account made for someone (by staff, or after a paid checkout): choose a password."""
    from flask import current_app

    token = make_token(
        current_app.secret_key, "reset-password", {"uid": str(user.id), "fp": _reset_binding(user)}
    )
    queue_email(
        session,
        Email(
            to=user.email,
            subject="Your Nectar Studio account is ready",
            body_text=(
                "An account on Nectar Studio was created for you.\n\n"
                f"Choose your password here (the link works once, for an hour):\n\n{reset_link(token)}\n\n"
                "After an hour, use 'Forgot password' on the sign-in page for a new link."
            ),
            category="account.set_password",
        ),
    )


def _reset_binding(user: User) -> str:
    """What a reset link is bound to: the password hash and the address it was sent to, so a new
    password or a changed email makes every earlier link useless."""
    return fingerprint(f"{user.password_hash or ''}|{user.email}")


def user_for_reset(session: Session, secret_key: str, token: str) -> User:
    data = read_token(secret_key, "reset-password", token, RESET_MAX_AGE)
    user = session.get(User, uuid.UUID(data["uid"]))
    # Bound to the password hash and address: once either changes, every earlier reset link is dead.
    if user is None or not user.is_active or _reset_binding(user) != data["fp"]:
        raise TokenInvalid("This link has already been used or is no longer valid. Ask for a new one.")
    return user


def reset_password(session: Session, secret_key: str, token: str, new_password: str) -> User:
    user = user_for_reset(session, secret_key, token)
    problem = password_problem(new_password)
    if problem:
        raise InputRejected(problem, field="password")
    user.password_hash = hash_password(new_password)
    if user.email_verified_at is None:
        user.email_verified_at = datetime.now(UTC)  # the reset link reached the inbox
    end_all_sessions(session, user.id)
    return user
