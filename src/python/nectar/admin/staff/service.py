"""Staff accounts: creation, throttled sign-in, server-side sessions, and TOTP second factor.

Separate from customer accounts (core's users): other table, other sessions, other cookie.
Functions take the database session and return or raise; views and the CLI turn that into output.
"""

from __future__ import annotations

import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyotp
import segno
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from nectar.schema.models import StaffSession, StaffUser
from nectar.schema.models.staff import STAFF_ROLES
from nectar.shared import signin, throttle
from nectar.shared.encryption import KeyRing
from nectar.shared.passwords import hash_password, password_problem
from nectar.shared.rejection import InputRejected
from nectar.shared.sessions import SessionStore

ACCOUNT_LIMIT = throttle.Limit(events=5, window_seconds=900)
ADDRESS_LIMIT = throttle.Limit(events=20, window_seconds=900)
PASSWORDS = signin.PasswordSignIn(
    StaffUser, "admin.login", account_limits=(("account", ACCOUNT_LIMIT),), address_limit=ADDRESS_LIMIT
)
# Staff sessions are short-lived: a back-office tab left open overnight should not stay signed in.
SESSIONS = SessionStore(
    StaffSession,
    StaffUser,
    "staff_id",
    idle_limit=timedelta(minutes=30),
    absolute_limit=timedelta(hours=12),
    last_seen_resolution=timedelta(minutes=1),
)
TOTP_LIMIT = throttle.Limit(events=5, window_seconds=300)
TOTP_ISSUER = "Nectar Studio admin"
GENERATED_PASSWORD_BYTES = 18  # 24 URL-safe characters


SignInRefused = signin.SignInRefused  # what sign_in raises


def normalize_email(raw: str) -> str:
    try:
        return signin.normalize_email(raw)
    except signin.InvalidEmail as error:
        raise InputRejected(str(error), field="email") from None


def find_staff(session: Session, email: str) -> StaffUser | None:
    return PASSWORDS.find(session, email)


def generate_password() -> str:
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


def create_staff(
    session: Session, email: str, role: str, password: str, display_name: str | None = None
) -> StaffUser:
    email = normalize_email(email)
    if role not in STAFF_ROLES:
        raise InputRejected(f"role must be one of {', '.join(STAFF_ROLES)}, not {role!r}", field="role")
    problem = password_problem(password)
    if problem:
        raise InputRejected(f"password: {problem}", field="password")
    if find_staff(session, email) is not None:
        raise InputRejected(f"a staff account with email {email} already exists", field="email")
    staff = StaffUser(
        id=uuid.uuid4(),
        email=email,
        role=role,
        password_hash=hash_password(password),
        display_name=(display_name or "").strip()[:200] or None,
    )
    session.add(staff)
    session.flush()
    return staff


def has_superadmin(session: Session) -> bool:
    return bool(
        session.scalar(
            select(func.count())
            .select_from(StaffUser)
            .where(StaffUser.role == "superadmin", StaffUser.is_active)
        )
    )


def sign_in(session: Session, email: str, password: str, address: str | None) -> StaffUser:
    """Checks credentials under per-email and per-address limits (PASSWORDS). Raises SignInRefused.
    Commits the attempt's count before checking the password; commit the sign-in after calling."""
    return PASSWORDS.sign_in(session, email, password, address)


def needs_second_factor(staff: StaffUser) -> bool:
    """TOTP is checked at sign-in for whoever enrolled, and superadmins must enrol."""
    return staff.totp_enabled_at is not None or staff.role == "superadmin"


def start_session(
    session: Session, staff: StaffUser, address: str | None, user_agent: str | None
) -> StaffSession:
    return SESSIONS.start(session, staff, address, user_agent, totp_verified=False)


@dataclass(frozen=True)
class LiveSession:
    row: StaffSession
    staff: StaffUser

    @property
    def second_factor_done(self) -> bool:
        return self.row.totp_verified or not needs_second_factor(self.staff)


def load_session(session: Session, session_id: str | None) -> LiveSession | None:
    """The live session and its staff member, or None when unknown, revoked, idle or too old, or
    when the member was deactivated."""
    found = SESSIONS.load(session, session_id)
    return None if found is None else LiveSession(*found)


# --- TOTP ---------------------------------------------------------------------------------------


def totp_secret(keys: KeyRing, staff: StaffUser) -> str | None:
    if staff.totp_secret_ciphertext is None:
        return None
    return keys.decrypt(bytes(staff.totp_secret_ciphertext)).decode()


def begin_totp_enrolment(keys: KeyRing, staff: StaffUser) -> str:
    """A new secret, stored encrypted but not active until a code from it is confirmed. Returns it."""
    if staff.totp_enabled_at is not None:
        raise InputRejected("Two-factor authentication is already on.")
    secret = pyotp.random_base32()
    staff.totp_secret_ciphertext, _ = keys.encrypt(secret.encode())
    staff.totp_last_step = None
    return secret


def provisioning_uri(secret: str, staff: StaffUser) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=staff.email, issuer_name=TOTP_ISSUER)


def provisioning_qr(uri: str) -> str:
    """The otpauth `uri` as a QR code for an authenticator app to scan: a PNG in a data: address,
    made here (the CSP allows data: images; nothing leaves for a QR service)."""
    return segno.make(uri, error="m").png_data_uri(scale=5, border=4)


def check_totp(session: Session, keys: KeyRing, staff: StaffUser, code: str) -> None:
    """Accepts a code from the member's secret (one step of clock drift either way), once: a code
    or an older one is refused after it was used, also when two requests bring it at the same moment.
    Attempts are throttled (the count is committed here); commit after calling."""
    counter = (f"admin.totp:{staff.id}", TOTP_LIMIT)
    now = time.time()
    # Counted before the code is checked and checked by the count it returns, so concurrent guesses
    # never get more checks than the limit; committed at once, so no rollback forgets it.
    refused = throttle.take(session, [counter], now)
    session.commit()
    if refused is not None:
        raise InputRejected("Too many wrong codes. Wait a few minutes and try again.", field="code")
    secret = totp_secret(keys, staff)
    code = "".join(code.split())
    step = _matching_step(secret, code, now) if secret and code.isdigit() else None
    if step is None or not _claim_step(session, staff, step):
        raise InputRejected(
            "That code is not right (or was already used). Enter the current one.", field="code"
        )
    throttle.clear(session, counter[0])


def _claim_step(session: Session, staff: StaffUser, step: int) -> bool:
    """Records `step` as used unless it or a later one already is. One conditional UPDATE: a second
    request with the same code waits for the first's row lock, then finds the step taken."""
    claimed = session.execute(
        update(StaffUser)
        .where(
            StaffUser.id == staff.id,
            or_(StaffUser.totp_last_step.is_(None), StaffUser.totp_last_step < step),
        )
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        return False
    set_committed_value(staff, "totp_last_step", step)
    return True


def _matching_step(secret: str, code: str, now: float) -> int | None:
    totp = pyotp.TOTP(secret)
    current = totp.timecode(datetime.fromtimestamp(now, UTC))
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def confirm_totp_enrolment(session: Session, keys: KeyRing, staff: StaffUser, code: str) -> None:
    if staff.totp_secret_ciphertext is None:
        raise InputRejected("Start the set-up again: there is no pending secret.", field="code")
    check_totp(session, keys, staff, code)
    staff.totp_enabled_at = datetime.now(UTC)


def disable_totp(session: Session, keys: KeyRing, staff: StaffUser, code: str) -> None:
    if staff.role == "superadmin":
        raise InputRejected("Superadmins must keep two-factor authentication on.")
    if staff.totp_enabled_at is None:
        raise InputRejected("Two-factor authentication is not on.")
    check_totp(session, keys, staff, code)
    staff.totp_secret_ciphertext = None
    staff.totp_enabled_at = None
    staff.totp_last_step = None
