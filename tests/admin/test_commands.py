"""`admin.pex create-staff` and the development launcher's first superadmin."""

from __future__ import annotations

import io
import re
import uuid

import pytest

from nectar.admin.commands import DEV_SUPERADMIN_EMAIL, seed_superadmin
from nectar.admin.main import main
from nectar.schema.migrate import upgrade
from nectar.shared.config import Role
from nectar.shared.passwords import verify_password
from tests.admin.conftest import StaffBrowser


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
