"""Admin binary commands that work across tenants as nectar_admin."""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nectar.admin import audit
from nectar.admin.staff import service as staff_service
from nectar.schema.models.staff import STAFF_ROLES
from nectar.shared.cli import Command
from nectar.shared.config import ConfigError, Service, load_settings
from nectar.shared.database import check_connection
from nectar.shared.encryption import DecryptionFailed, key_ring

# Every column encrypted under NECTAR_ENCRYPTION_KEYS: (table, column, the column naming the key
# that encrypted it, if the table keeps one). A column left out here would be unreadable once the
# old key is dropped: staff TOTP seeds were, and locked every staff member out.
ENCRYPTED_COLUMNS = (
    ("integration_connections", "credentials_ciphertext", "key_id"),
    ("alert_rules", "secret_ciphertext", "key_id"),
    ("staff_users", "totp_secret_ciphertext", None),
)


def _rotate(args: argparse.Namespace) -> int:
    """Re-encrypts every stored secret with the newest key of NECTAR_ENCRYPTION_KEYS, all or nothing."""
    settings = load_settings(Service.ADMIN)
    keys = key_ring(settings)
    engine = create_engine(settings.database_url)
    rotated: dict[str, int] = {}
    with engine.begin() as conn:
        for table, column, key_column in ENCRYPTED_COLUMNS:  # constants: no input reaches the SQL text
            rows = conn.execute(
                text(f"SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL FOR UPDATE")  # noqa: S608
            ).all()
            naming_key = f", {key_column} = :k" if key_column else ""
            for row_id, ciphertext in rows:
                try:
                    new, key_id = keys.rotate(bytes(ciphertext))
                except DecryptionFailed as failed:  # the transaction rolls back: nothing changes
                    raise ConfigError(
                        f"{table}.{column} of {row_id}: {failed}; nothing was re-encrypted"
                    ) from None
                conn.execute(
                    text(f"UPDATE {table} SET {column} = :c{naming_key} WHERE id = :id"),  # noqa: S608
                    {"c": new, "k": key_id, "id": row_id},
                )
            rotated[f"{table}.{column}"] = len(rows)
    engine.dispose()
    print(
        f"re-encrypted {sum(rotated.values())} secret(s) with key {keys.current_id} "
        f"({', '.join(f'{name}: {count}' for name, count in rotated.items())})"
    )
    return 0


rotate_credentials_command = Command(
    help="re-encrypt stored credentials with the newest NECTAR_ENCRYPTION_KEYS key (run after adding one)",
    run=_rotate,
)


def _create_staff(args: argparse.Namespace) -> int:
    """Creates a staff account and prints its password once (generated unless --password-stdin)."""
    settings = load_settings(Service.ADMIN)
    check_connection(settings.database_url)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        generated = False
    else:
        password, generated = staff_service.generate_password(), True
    engine = create_engine(settings.database_url)
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            member = staff_service.create_staff(session, args.email, args.role, password, args.name)
            audit.record_by(
                session,
                actor="admin.pex create-staff",
                action="staff.created",
                target=f"staff:{member.id}",
                after={"email": member.email, "role": member.role, "display_name": member.display_name},
            )
    except staff_service.StaffError as error:
        raise ConfigError(str(error)) from None
    except IntegrityError:
        raise ConfigError(f"a staff account with email {args.email} already exists") from None
    finally:
        engine.dispose()
    print(f"created {member.role} {member.email}")
    if generated:
        print(f"password (shown once): {password}")
    if member.role == "superadmin":
        print("two-factor authentication must be set up at the first sign-in")
    return 0


def _configure_create_staff(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--email", required=True)
    parser.add_argument("--role", required=True, choices=STAFF_ROLES)
    parser.add_argument("--name", help="display name")
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of stdin"
    )


create_staff_command = Command(
    help="create a staff account (superadmin, support or read_only); prints a generated password once",
    run=_create_staff,
    configure=_configure_create_staff,
)

DEV_SUPERADMIN_EMAIL = "superadmin@example.com"


def seed_superadmin(database_url) -> tuple[str, str] | None:
    """For the development launcher: a superadmin with a generated password when there is none yet
    (idempotent). Returns (email, password) when it made one; the password exists nowhere else."""
    engine = create_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext('nectar.seed_superadmin'))"))
            if staff_service.has_superadmin(session):
                return None
            password = staff_service.generate_password()
            member = staff_service.create_staff(
                session, DEV_SUPERADMIN_EMAIL, "superadmin", password, "Development superadmin"
            )
            audit.record_by(
                session,
                actor="dev launcher",
                action="staff.created",
                target=f"staff:{member.id}",
                after={"email": member.email, "role": member.role},
            )
            return member.email, password
    finally:
        engine.dispose()
