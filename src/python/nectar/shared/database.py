"""The database handle every service shares, and the one way to act as an organization.

Row-level security compares each tenant row's `org_id` with the transaction-local setting
`nectar.org_id`. `tenant_scope` sets it at the start of every transaction of a session, with
`set_config(..., true)`, so it dies with the transaction and a pooled connection never carries a
tenant into the next request. No scope means no rows: the policies match nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.orm import DeclarativeBase, Session

from nectar.shared.config import ConfigError

TENANT_SETTING = "nectar.org_id"
SET_TENANT_SQL = "SELECT set_config('nectar.org_id', %s, true)"

# Stable constraint names, so Alembic migrations can name what they create and drop.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)


@contextmanager
def tenant_scope(session: Session, org_id: uuid.UUID | str) -> Iterator[Session]:
    """Runs the block as organization `org_id`: every transaction the session begins is scoped to it.

    Leaving the block restores the previous scope, in the open transaction too, so code after it
    cannot keep acting as `org_id`.
    """
    previous = session.info.get("org_id")
    session.info["org_id"] = str(uuid.UUID(str(org_id)))
    try:
        if session.in_transaction():
            _set_tenant(session.connection(), session.info["org_id"])
        yield session
    except BaseException:
        # The transaction failed or is being abandoned: its rollback discards the setting.
        _restore_scope(session, previous)
        raise
    _restore_scope(session, previous)
    if session.in_transaction():
        connection = session.connection()
        status = connection.connection.dbapi_connection.info.transaction_status
        if status != psycopg.pq.TransactionStatus.INERROR:  # a failed transaction is rolled back anyway
            _set_tenant(connection, previous or "")


def _restore_scope(session: Session, previous: str | None) -> None:
    if previous is None:
        session.info.pop("org_id", None)
    else:
        session.info["org_id"] = previous


def current_org_id(session: Session) -> uuid.UUID | None:
    org = session.info.get("org_id")
    return uuid.UUID(org) if org else None


@event.listens_for(Session, "after_begin")
def _scope_new_transaction(session: Session, _transaction, connection: Connection) -> None:
    org = session.info.get("org_id")
    if org:
        _set_tenant(connection, org)


def _set_tenant(connection: Connection, org: str) -> None:
    connection.execute(text("SELECT set_config('nectar.org_id', :org, true)"), {"org": org})


@contextmanager
def tenant_transaction(conn: psycopg.Connection, org_id: uuid.UUID | str) -> Iterator[psycopg.Connection]:
    """The same scope for a raw psycopg connection: one transaction as organization `org_id`."""
    org = str(uuid.UUID(str(org_id)))
    with conn.transaction():
        conn.execute(SET_TENANT_SQL, (org,))
        yield conn


def engine_options(service: str) -> dict:
    """Pool settings every service uses: small pools, dead connections detected, slow peers bounded."""
    return {
        "pool_pre_ping": True,
        "pool_size": 5,
        "max_overflow": 5,
        "pool_recycle": 1800,
        "connect_args": {"connect_timeout": 5, "application_name": f"nectar-{service}"},
    }


def check_connection(url: URL, timeout: int = 5) -> None:
    """Connects once; raises ConfigError with a one-line reason when the database cannot be reached."""
    try:
        with psycopg.connect(_libpq_dsn(url), connect_timeout=timeout) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        where = f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"
        raise ConfigError(f"cannot reach the database at {where} as {url.username}: {reason}") from None


def _libpq_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
