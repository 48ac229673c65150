"""The roles hold exactly the privileges docs/architecture.md gives them, checked in the live database."""

import psycopg
import pytest

from nectar.schema import models  # noqa: F401 - registers every table
from nectar.schema.access import access_of
from nectar.shared.config import Role
from nectar.shared.database import Base

SERVICE_ROLES = (Role.APP, Role.MARKETING, Role.ADMIN)


def _privileges(conn, role: str) -> dict[str, set[str]]:
    rows = conn.execute(
        "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
        "WHERE grantee = %s AND table_schema = 'public'",
        (role,),
    ).fetchall()
    granted: dict[str, set[str]] = {}
    for table, privilege in rows:
        granted.setdefault(table, set()).add(privilege)
    return granted


def test_every_table_grants_exactly_what_its_model_declares(database):
    expected: dict[str, dict[str, set[str]]] = {str(role): {} for role in SERVICE_ROLES}
    for table in Base.metadata.sorted_tables:
        for role, verbs in access_of(table).privileges().items():
            expected[str(role)][table.name] = set(verbs)
    for role in SERVICE_ROLES:
        expected[str(role)]["alembic_version"] = {"SELECT"}
    with database.connect("postgres") as conn:
        for role in SERVICE_ROLES:
            granted = {
                t: p for t, p in _privileges(conn, str(role)).items() if not t.startswith("procrastinate_")
            }
            assert granted == expected[str(role)], f"{role} privileges drifted from the models"


@pytest.mark.parametrize("role", SERVICE_ROLES)
def test_every_service_can_use_the_job_queue(database, role):
    with database.connect("postgres") as conn:
        assert _privileges(conn, str(role))["procrastinate_jobs"] == {"SELECT", "INSERT", "UPDATE", "DELETE"}


def test_the_app_role_is_no_superuser_cannot_bypass_rls_and_owns_nothing(database):
    with database.connect(Role.APP) as conn:
        assert conn.execute(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (False, False, False, False)
        owned = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE pg_get_userbyid(c.relowner) = current_user AND n.nspname = 'public'"
        ).fetchall()
        assert owned == []


def test_the_owner_owns_every_table(database):
    with database.connect("postgres") as conn:
        owners = dict(
            conn.execute("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall()
        )
    assert set(owners.values()) == {"nectar_owner"}
    assert {table.name for table in Base.metadata.sorted_tables} <= set(owners)


@pytest.mark.parametrize("table", ["users", "memberships", "organizations", "workflows", "api_keys"])
def test_marketing_cannot_read_core_tables(database, table):
    with database.connect(Role.MARKETING) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names


def test_core_cannot_read_marketing_tables(database):
    with database.connect(Role.APP) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM leads")


def test_admin_reads_every_table(database):
    with database.connect(Role.ADMIN) as conn:
        for table in Base.metadata.sorted_tables:
            conn.execute(f"SELECT count(*) FROM {table.name}")  # noqa: S608 - names from the schema


@pytest.mark.parametrize("role", SERVICE_ROLES)
def test_the_audit_log_is_append_only_for_every_role(database, role):
    with database.connect("postgres", autocommit=True) as conn:
        conn.execute("INSERT INTO audit_log (actor, action) VALUES ('test', 'seeded')")
    with database.connect(role) as conn:
        for statement in ("UPDATE audit_log SET action = 'changed'", "DELETE FROM audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()


@pytest.mark.parametrize("role", SERVICE_ROLES)
def test_no_service_role_can_change_the_schema(database, role):
    with database.connect(role) as conn:
        for statement in (
            "CREATE TABLE intruder (id int)",
            "ALTER TABLE users ADD COLUMN intruder int",
            "DROP TABLE leads",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()


@pytest.mark.parametrize("role", SERVICE_ROLES)
def test_a_role_is_refused_on_every_table_it_holds_no_grant_on(database, role):
    for table in Base.metadata.sorted_tables:
        granted = access_of(table).privileges().get(role, ())
        if "SELECT" in granted:
            continue
        with database.connect(role) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT 1 FROM {table.name} LIMIT 1")  # noqa: S608 - names from the schema
