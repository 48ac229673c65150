"""`admin.pex create-staff` and the development launcher's first superadmin."""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from nectar.admin import commands
from nectar.admin.app import create_app
from nectar.admin.commands import DEV_SUPERADMIN_EMAIL, seed_superadmin
from nectar.admin.main import main
from nectar.admin.staff import service as staff_service
from nectar.schema.migrate import upgrade
from nectar.shared.config import Role, Service
from nectar.shared.database import db
from nectar.shared.encryption import parse_keys
from nectar.shared.passwords import verify_password
from tests.admin.conftest import ADMIN_TOKEN, STAFF_PASSWORD, StaffBrowser


@pytest.fixture
def admin_environment(database, monkeypatch):
    for name, value in database.environ().items():
        monkeypatch.setenv(name, value)


def _stored(database, email):
    with database.connect(Role.ADMIN) as conn:
        return conn.execute(
            "SELECT role, display_name, password_hash FROM staff_users WHERE email = %s", (email,)
        ).fetchone()


def test_create_staff_prints_a_generated_password_once_that_signs_in(
    admin_environment, admin_app, database, capsys, audit_rows
):
    email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    assert main(["create-staff", "--email", email, "--role", "superadmin", "--name", "Ops Lead"]) == 0
    out = capsys.readouterr().out
    password = re.search(r"password \(shown once\): (\S+)", out).group(1)
    assert f"created superadmin {email}" in out and "two-factor authentication must be set up" in out
    role, name, password_hash = _stored(database, email)
    assert (role, name) == ("superadmin", "Ops Lead") and password not in password_hash
    assert verify_password(password_hash, password)
    assert audit_rows("staff.created")[-1]["actor"] == "admin.pex create-staff"

    # The first sign-in goes straight to TOTP enrolment.
    browser = StaffBrowser(admin_app)
    assert (
        browser.post("/login", {"email": email, "password": password}).headers["Location"] == "/account/totp"
    )


def test_create_staff_reads_a_password_from_stdin(admin_environment, database, capsys, monkeypatch):
    email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    monkeypatch.setattr("sys.stdin", io.StringIO("a password typed by the operator\n"))
    assert main(["create-staff", "--email", email, "--role", "read_only", "--password-stdin"]) == 0
    out = capsys.readouterr().out
    assert "shown once" not in out and f"created read_only {email}" in out
    assert verify_password(_stored(database, email)[2], "a password typed by the operator")


@pytest.mark.parametrize(
    "arguments, stdin, message",
    [
        (["--email", "not-an-email", "--role", "support"], "", "admin: error: "),
        (["--email", "{existing}", "--role", "support"], "", "already exists"),
        (["--email", "{new}", "--role", "support", "--password-stdin"], "short\n", "at least 12 characters"),
    ],
)
def test_create_staff_errors_are_one_line(
    admin_environment, database, capsys, monkeypatch, arguments, stdin, message
):
    existing = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    assert main(["create-staff", "--email", existing, "--role", "support"]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    new = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    arguments = [a.format(existing=existing, new=new) for a in arguments]
    assert main(["create-staff", *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _stored(database, new) is None


def test_an_unknown_role_is_refused_by_the_command_line(admin_environment, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["create-staff", "--email", "x@example.com", "--role", "owner"])
    assert exited.value.code == 2 and "invalid choice: 'owner'" in capsys.readouterr().err


@pytest.fixture
def empty_database(pg_server, database):
    """A freshly migrated database with no staff at all, like a first development start."""
    name = f"{database.name}_seed"
    pg_server.drop_database(name)
    pg_server.create_database(name)
    upgrade(pg_server.url(Role.OWNER, name))
    yield pg_server.url(Role.ADMIN, name)
    pg_server.drop_database(name)


def test_the_dev_launcher_seeds_one_superadmin_once(empty_database):
    import psycopg

    email, password = seed_superadmin(empty_database)
    assert email == DEV_SUPERADMIN_EMAIL and len(password) >= 20
    assert seed_superadmin(empty_database) is None, "idempotent: a superadmin exists"
    url = empty_database
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database
    ) as conn:
        rows = conn.execute("SELECT email, role, password_hash, totp_enabled_at FROM staff_users").fetchall()
        audit = conn.execute("SELECT actor, action FROM audit_log").fetchall()
    assert [(r[0], r[1], r[3]) for r in rows] == [(DEV_SUPERADMIN_EMAIL, "superadmin", None)]
    assert verify_password(rows[0][2], password)
    assert audit == [("dev launcher", "staff.created")]


KEY_A, KEY_B = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def _totp_staff(database, keys) -> tuple[str, str]:
    """A staff member enrolled in TOTP, the seed encrypted under `keys`: (email, seed)."""
    email = f"rotating-{uuid.uuid4().hex[:8]}@staff.example.com"
    engine = create_engine(database.url(Role.ADMIN))
    with Session(engine) as session, session.begin():
        member = staff_service.create_staff(session, email, "superadmin", STAFF_PASSWORD, "Rotating")
        secret = staff_service.begin_totp_enrolment(keys, member)
        member.totp_enabled_at = datetime.now(UTC)
    engine.dispose()
    return email, secret


def test_rotating_keys_keeps_staff_able_to_sign_in_with_totp(
    database, settings_for, core_url, monkeypatch, capsys
):
    """The documented rotation: a new key first, rotate-credentials, then the old key dropped."""
    keys_a = parse_keys(f"a:{KEY_A}")
    email, secret = _totp_staff(database, keys_a)
    for _ in range(2):
        _totp_staff(database, keys_a)
    for name, value in database.environ(NECTAR_ENCRYPTION_KEYS=f"b:{KEY_B},a:{KEY_A}").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(commands, "ROTATION_BATCH", 2)  # several batches, each committed and shown
    assert main(["rotate-credentials"]) == 0
    said = capsys.readouterr()
    assert "with key b" in said.out and re.search(
        r"staff_users\.totp_secret_ciphertext: [1-9]", said.out
    ), said
    progress = re.findall(r"staff_users\.totp_secret_ciphertext: (\d+) of (\d+)", said.err)
    assert len(progress) >= 2 and progress[-1][0] == progress[-1][1], said.err
    only_b = create_app(
        settings_for(
            Service.ADMIN,
            NECTAR_ENCRYPTION_KEYS=f"b:{KEY_B}",
            CORE_ADMIN_TOKEN=ADMIN_TOKEN,
            CORE_API_URL=core_url,
        )
    )
    try:
        signed_in = StaffBrowser(only_b, token_page="/login").sign_in(email, STAFF_PASSWORD, secret)
        assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/", signed_in.headers
    finally:
        with only_b.app_context():
            db.engine.dispose()


def test_a_secret_no_key_decrypts_stops_the_rotation_with_one_line_and_changes_nothing(
    database, monkeypatch, capsys
):
    lost = Fernet.generate_key().decode()
    email, _secret = _totp_staff(database, parse_keys(f"lost:{lost}"))
    with database.connect(Role.ADMIN) as conn:
        before = conn.execute(
            "SELECT totp_secret_ciphertext FROM staff_users WHERE email = %s", (email,)
        ).fetchone()
    for name, value in database.environ(NECTAR_ENCRYPTION_KEYS=f"b:{KEY_B},a:{KEY_A}").items():
        monkeypatch.setenv(name, value)
    try:
        assert main(["rotate-credentials"]) != 0
        error = capsys.readouterr().err
        assert (
            "nothing was re-encrypted" in error
            and "Traceback" not in error
            and len(error.strip().splitlines()) == 1
        )
        with database.connect(Role.ADMIN) as conn:
            after = conn.execute(
                "SELECT totp_secret_ciphertext FROM staff_users WHERE email = %s", (email,)
            ).fetchone()
        assert after == before
    finally:
        with database.connect(Role.ADMIN) as conn:
            conn.execute("DELETE FROM staff_users WHERE email = %s", (email,))
            conn.commit()
