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
from nectar.shared.rejection import InputRejected

# Every column encrypted under NECTAR_ENCRYPTION_KEYS: (table, column, the column naming the key
# that encrypted it, if the table keeps one, and the table's key columns). A column left out here
# would be unreadable once the old key is dropped: staff TOTP seeds were, and locked every staff
# member out.
ENCRYPTED_COLUMNS = (
    ("integration_connections", "credentials_ciphertext", "key_id", ("id",)),
    ("alert_rules", "secret_ciphertext", "key_id", ("id",)),
    ("staff_users", "totp_secret_ciphertext", None, ("id",)),
    ("organization_secrets", "value_ciphertext", "key_id", ("org_id", "name")),
)


ROTATION_BATCH = 500  # rows re-encrypted and committed at a time


def _rotate(args: argparse.Namespace) -> int:
    """Re-encrypts every stored secret with the newest key of NECTAR_ENCRYPTION_KEYS. Everything is
    checked first (a secret no configured key decrypts stops it before any change); then each
    column is re-encrypted in committed batches, showing progress, so a large table is never
    locked whole and a run that stops half-way is simply run again."""
    settings = load_settings(Service.ADMIN)
    keys = key_ring(settings)
    engine = create_engine(settings.database_url)
    try:
        for table, column, _, row_key in ENCRYPTED_COLUMNS:
            with engine.connect() as conn:
                for *row_id, ciphertext in _batch(conn, table, column, row_key, after=None, limit=None):
                    try:
                        keys.decrypt(bytes(ciphertext))
                    except DecryptionFailed as failed:
                        which = "/".join(str(part) for part in row_id)
                        raise ConfigError(
                            f"{table}.{column} of {which}: {failed}; nothing was re-encrypted"
                        ) from None
        rotated = {
            f"{table}.{column}": _rotate_column(engine, keys, table, column, key_column, row_key)
            for table, column, key_column, row_key in ENCRYPTED_COLUMNS
        }
    finally:
        engine.dispose()
    print(
        f"re-encrypted {sum(rotated.values())} secret(s) with key {keys.current_id} "
        f"({', '.join(f'{name}: {count}' for name, count in rotated.items())})"
    )
    return 0


def _batch(conn, table: str, column: str, row_key: tuple[str, ...], *, after, limit, lock=False) -> list:
    """(*key, ciphertext) of the rows of `table` holding a secret in `column`, in key order from
    after the key `after` (table and columns are constants: no input reaches the SQL text)."""
    keys = ", ".join(row_key)
    statement = f"SELECT {keys}, {column} FROM {table} WHERE {column} IS NOT NULL"  # noqa: S608
    params = {f"a{n}": value for n, value in enumerate(after or ())}
    if after is not None:
        statement += f" AND ({keys}) > ({', '.join(f':{name}' for name in params)})"
    statement += (
        f" ORDER BY {keys}" + (f" LIMIT {int(limit)}" if limit else "") + (" FOR UPDATE" if lock else "")
    )
    return conn.execute(text(statement), params).all()


def _rotate_column(
    engine, keys, table: str, column: str, key_column: str | None, row_key: tuple[str, ...]
) -> int:
    naming_key = f", {key_column} = :k" if key_column else ""
    matching = " AND ".join(f"{name} = :r{n}" for n, name in enumerate(row_key))
    with engine.connect() as conn:
        counting = f"SELECT count(*) FROM {table} WHERE {column} IS NOT NULL"  # noqa: S608 - constants
        total = conn.execute(text(counting)).scalar()
    done, after = 0, None
    while True:
        with engine.begin() as conn:
            rows = _batch(conn, table, column, row_key, after=after, limit=ROTATION_BATCH, lock=True)
            for *row_id, ciphertext in rows:
                new, key_id = keys.rotate(bytes(ciphertext))
                conn.execute(
                    text(f"UPDATE {table} SET {column} = :c{naming_key} WHERE {matching}"),  # noqa: S608
                    {"c": new, "k": key_id, **{f"r{n}": value for n, value in enumerate(row_id)}},
                )
        if not rows:
            return done
        done, after = done + len(rows), tuple(rows[-1][:-1])
        print(f"{table}.{column}: {done:,} of {total:,}", file=sys.stderr, flush=True)


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
    except InputRejected as error:
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
