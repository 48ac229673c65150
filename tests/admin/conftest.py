"""Admin test helpers: the app on the test database (talking to a real core app served over HTTP
on a free port), staff accounts, and a browser signed in as staff through the real sign-in form (and
TOTP for superadmins)."""

from __future__ import annotations

import time
import uuid

import pyotp
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from nectar.admin.app import create_app
from nectar.admin.staff import service as staff_service
from nectar.core.app import create_app as create_core_app
from nectar.shared.config import Role, Service
from nectar.shared.encryption import key_ring
from tests.browser import Browser
from tests.serving import served

SERVICE_TOKEN = "test-service-token-0123456789abcdef-0123456789"  # marketing's credential
ADMIN_TOKEN = "test-admin-token-0123456789abcdef-0123456789abc"  # admin's
STAFF_PASSWORD = "staff password long enough 42"


@pytest.fixture(scope="module")
def core_app(settings_for):
    app = create_core_app(
        settings_for(Service.CORE, CORE_SERVICE_TOKEN=SERVICE_TOKEN, CORE_ADMIN_TOKEN=ADMIN_TOKEN)
    )
    yield app
    _dispose(app)


@pytest.fixture(scope="module")
def core_url(core_app):
    """Core served by a real HTTP server in a thread, as admin's contract calls reach it."""
    with served(core_app) as url:
        yield url


@pytest.fixture(scope="module")
def admin_app(settings_for, core_url):
    app = create_app(settings_for(Service.ADMIN, CORE_ADMIN_TOKEN=ADMIN_TOKEN, CORE_API_URL=core_url))
    yield app
    _dispose(app)


def _dispose(app) -> None:
    from nectar.shared.database import db

    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="module")
def staff_member(admin_app, database):
    """Creates a staff account: `staff_member(role, totp=None) -> (email, password, totp_secret|None)`.
    Superadmins get TOTP enrolled by default (their first sign-in would otherwise stop at enrolment);
    pass totp=False for one that has not enrolled yet."""
    engine = create_engine(database.url(Role.ADMIN))
    keys = key_ring(admin_app.config["NECTAR_SETTINGS"])

    def make(role: str = "support", *, totp: bool | None = None, email: str | None = None):
        email = email or f"staff-{uuid.uuid4().hex[:10]}@staff.example.com"
        enrol = role == "superadmin" if totp is None else totp
        secret = None
        with Session(engine) as session, session.begin():
            member = staff_service.create_staff(session, email, role, STAFF_PASSWORD, f"Staff {role}")
            if enrol:
                secret = staff_service.begin_totp_enrolment(keys, member)
                from datetime import UTC, datetime

                member.totp_enabled_at = datetime.now(UTC)
        return email, STAFF_PASSWORD, secret

    yield make
    engine.dispose()


def totp_code(secret: str, steps_ahead: int = 0) -> str:
    """The code for now (or one step later: each code is accepted once, so a second TOTP action in
    the same 30 seconds uses the next step's code, which the one-step drift allowance accepts)."""
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead)


class StaffBrowser(Browser):
    email: str
    password: str
    totp_secret: str | None
    role: str

    def sign_in(self, email: str, password: str, totp_secret: str | None = None):
        response = self.post("/login", {"email": email, "password": password})
        if totp_secret and response.status_code == 302 and response.headers["Location"] == "/login/totp":
            response = self.post("/login/totp", {"code": totp_code(totp_secret)})
        return response


@pytest.fixture
def staff_browser(admin_app, staff_member):
    """`staff_browser(role="superadmin") -> StaffBrowser` signed in through the real forms."""

    def make(role: str = "superadmin") -> StaffBrowser:
        email, password, secret = staff_member(role)
        browser = StaffBrowser(admin_app, token_page="/login")
        response = browser.sign_in(email, password, secret)
        assert response.status_code == 302, response.get_data(as_text=True)
        assert response.headers["Location"] == "/", response.headers["Location"]
        browser.email, browser.password, browser.totp_secret, browser.role = email, password, secret, role
        return browser

    return make


@pytest.fixture
def audit_rows(database):
    """`audit_rows(action=None) -> list[dict]`: the audit log as stored, oldest first."""

    def rows(action: str | None = None) -> list[dict]:
        with database.connect(Role.ADMIN) as conn:
            cursor = conn.execute(
                "SELECT id, actor, actor_id, action, target, before, after, host(address) AS address, created_at "
                "FROM audit_log WHERE %s::text IS NULL OR action = %s ORDER BY id",
                (action, action),
            )
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    return rows


@pytest.fixture
def outbox_to(database):
    """`outbox_to(address, category) -> body`: the newest queued email of that kind to an address."""

    def latest(to: str, category: str) -> str:
        with database.connect(Role.ADMIN) as conn:
            row = conn.execute(
                "SELECT body_text FROM email_outbox WHERE to_address = %s AND category = %s "
                "ORDER BY created_at DESC LIMIT 1",
                (to, category),
            ).fetchone()
        assert row is not None, f"no {category} email to {to}"
        return row[0]

    return latest
