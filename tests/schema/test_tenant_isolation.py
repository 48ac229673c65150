"""Row-level security under attack, as the real nectar_app_user role (never owner or superuser).

The tenant tables are derived from the live schema (every table with an org_id column) and from
the models; each one is attacked for reads, updates, deletes and inserts across organizations,
through raw psycopg and through the ORM. Every connection goes through PgBouncer in transaction
mode, as production's do, so consecutive transactions of one client land on server connections
other clients used: a tenant setting that outlived its transaction would show.
"""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from sqlalchemy import create_engine, delete, func, insert, select, update
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

from nectar.schema import models
from nectar.schema.access import CURRENT_ORG, SERVICE_ROLES, access_of
from nectar.shared.config import Role
from nectar.shared.database import Base, tenant_scope, tenant_transaction, user_scope
from tests.schema.tenant_rows import ROW_BUILDERS, ensure_catalog, seed_tenant

MODEL_TENANT_TABLES = {
    table.name: access_of(table).tenant_column
    for table in Base.metadata.sorted_tables
    if access_of(table).tenant_column
}
MODELS = {mapper.class_.__tablename__: mapper.class_ for mapper in Base.registry.mappers}
RLS_VIOLATION = psycopg.errors.InsufficientPrivilege


@pytest.fixture(scope="module")
def database(database, pooler):
    """The test database, reached through PgBouncer in transaction mode."""
    return database.through(pooler)


@pytest.fixture(scope="module")
def tenants(database):
    """Three organizations, each with a row in every tenant table."""
    orgs = [uuid.uuid4() for _ in range(3)]
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        ensure_catalog(conn)
        parents = {org: seed_tenant(conn, org) for org in orgs}
    return orgs, parents


def _tenant_tables_in_database(conn) -> dict[str, str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attname = 'org_id' "
        "AND NOT a.attisdropped"
    ).fetchall()
    return {name: "org_id" for (name,) in rows}


def test_the_tenant_tables_of_the_schema_are_those_the_models_declare(database):
    with database.connect("postgres") as conn:
        found = _tenant_tables_in_database(conn)
    declared = {name: column for name, column in MODEL_TENANT_TABLES.items() if column == "org_id"}
    assert found == declared, "a table has org_id without declaring tenant_column, or the reverse"
    assert set(MODEL_TENANT_TABLES) == set(
        ROW_BUILDERS
    ), "every tenant table needs a row builder in tenant_rows.py"


@pytest.mark.parametrize("table", sorted(MODEL_TENANT_TABLES))
def test_every_tenant_table_forces_rls_with_a_policy_on_the_transaction_setting(database, table):
    column = MODEL_TENANT_TABLES[table]
    with database.connect("postgres") as conn:
        enabled, forced = conn.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s::regclass", (table,)
        ).fetchone()
        assert enabled and forced, f"{table}: row-level security must be enabled and forced"
        policies = {
            name: (qual, with_check, cmd, roles)
            for name, qual, with_check, cmd, roles in conn.execute(
                "SELECT policyname, qual, with_check, cmd, roles FROM pg_policies WHERE tablename = %s",
                (table,),
            )
        }
        assert "tenant_isolation" in policies, f"{table} has no tenant_isolation policy"
        qual, with_check, cmd, _roles = policies.pop("tenant_isolation")
        assert cmd == "ALL"
        for expression in (qual, with_check):
            assert "current_setting('nectar.org_id'::text, true)" in expression
            assert "NULLIF" in expression and f"{column} = ( SELECT" in expression
        readers = {
            f"{reader}_reads": str(SERVICE_ROLES[reader])
            for reader in access_of(MODELS[table].__table__).readers
        }
        for name, (qual, with_check, cmd, roles) in policies.items():
            # Any other policy only reads: what a signed-in user's is, or (for the one service
            # that reads the table, and only its role) every organization's rows.
            assert cmd == "SELECT" and with_check is None, f"{table}.{name} must be read-only"
            if name in readers:
                assert roles == [readers[name]], f"{table}.{name} admits {roles}"
            else:
                assert "current_setting('nectar.user_id'::text, true)" in qual, f"{table}.{name}"
        not_null = conn.execute(
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s",
            (table, column),
        ).fetchone()[0]
        assert not_null, f"{table}.{column} must be NOT NULL"
        leading = conn.execute(
            "SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = %s::regclass AND a.attname = %s",
            (table, column),
        ).fetchone()[0]
        assert leading >= 1, f"{table} needs an index that leads with {column}"


def test_the_policy_reads_the_setting_once_per_query(database, tenants):
    """The sub-select makes the setting an InitPlan: evaluated once, usable as an index condition."""
    orgs, _ = tenants
    with database.connect(Role.APP) as conn, tenant_transaction(conn, orgs[0]):
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN SELECT * FROM workflow_runs").fetchall())
    assert "InitPlan" in plan
    assert CURRENT_ORG.startswith("(SELECT NULLIF(current_setting(")


# --- raw psycopg -----------------------------------------------------------------------------------


def _count(conn, table: str, column: str, org) -> int:
    return conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = %s", (org,)).fetchone()[
        0
    ]  # noqa: S608


@pytest.mark.parametrize("table", sorted(MODEL_TENANT_TABLES))
def test_raw_sql_as_org_a_cannot_see_change_or_delete_org_b(database, tenants, table):
    (org_a, org_b, _), parents = tenants
    column = MODEL_TENANT_TABLES[table]
    with database.connect(Role.APP) as conn:
        with tenant_transaction(conn, org_a):
            visible = {row[0] for row in conn.execute(f"SELECT {column} FROM {table}")}  # noqa: S608
            assert visible == {org_a}
            assert _count(conn, table, column, org_b) == 0
            assert (
                conn.execute(f"UPDATE {table} SET {column} = {column} WHERE {column} = %s", (org_b,)).rowcount
                == 0
            )  # noqa: S608
            assert (
                conn.execute(f"DELETE FROM {table} WHERE {column} = %s", (org_b,)).rowcount == 0
            )  # noqa: S608
    with database.connect(Role.ADMIN) as admin:
        assert _count(admin, table, column, org_b) >= 1, "org B's rows must survive org A's attempts"


@pytest.mark.parametrize("table", sorted(MODEL_TENANT_TABLES))
def test_raw_sql_as_org_a_cannot_write_org_b_ids(database, tenants, table):
    (org_a, org_b, _), parents = tenants
    column = MODEL_TENANT_TABLES[table]
    with database.connect(Role.APP) as conn:
        with pytest.raises(RLS_VIOLATION, match="row-level security"), tenant_transaction(conn, org_a):
            ROW_BUILDERS[table](conn, org_b, parents[org_b])
        with pytest.raises(RLS_VIOLATION, match="row-level security"), tenant_transaction(conn, org_a):
            conn.execute(f"UPDATE {table} SET {column} = %s", (org_b,))  # noqa: S608


@pytest.mark.parametrize("table", sorted(MODEL_TENANT_TABLES))
def test_raw_sql_without_an_org_sees_nothing_and_writes_nothing(database, tenants, table):
    (org_a, _, _), parents = tenants
    column = MODEL_TENANT_TABLES[table]
    with database.connect(Role.APP) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0  # noqa: S608
        assert conn.execute(f"UPDATE {table} SET {column} = {column}").rowcount == 0  # noqa: S608
        assert conn.execute(f"DELETE FROM {table}").rowcount == 0  # noqa: S608
        conn.rollback()
        # An empty setting (what a finished transaction leaves behind) matches nothing either.
        conn.execute("SELECT set_config('nectar.org_id', '', false)")
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0  # noqa: S608
        conn.rollback()
        with pytest.raises(RLS_VIOLATION, match="row-level security"):
            ROW_BUILDERS[table](conn, org_a, parents[org_a])


def test_a_reference_cannot_cross_tenants(database, tenants):
    """Foreign-key checks ignore RLS, so same-tenant keys stop org A pointing at org B's rows."""
    (org_a, org_b, _), parents = tenants
    with database.connect(Role.APP) as conn, pytest.raises(psycopg.errors.ForeignKeyViolation):
        with tenant_transaction(conn, org_a):
            conn.execute(
                "INSERT INTO endpoints (org_id, method, path, workflow_id) VALUES (%s, 'POST', '/steal', %s)",
                (org_a, parents[org_b]["workflow"]),
            )


def test_admin_sees_every_tenant(database, tenants):
    orgs, _ = tenants
    with database.connect(Role.ADMIN) as conn:
        for table, column in MODEL_TENANT_TABLES.items():
            seen = {row[0] for row in conn.execute(f"SELECT DISTINCT {column} FROM {table}")}  # noqa: S608
            assert set(orgs) <= seen, f"admin must see every organization's {table}"


def test_marketing_is_refused_on_every_core_table(database):
    core_tables = [
        t.name
        for t in Base.metadata.sorted_tables
        if access_of(t).service == "core" and Role.MARKETING not in access_of(t).privileges()
    ]
    assert "users" in core_tables and "workflows" in core_tables
    with database.connect(Role.MARKETING) as conn:
        for table in core_tables:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT 1 FROM {table} LIMIT 1")  # noqa: S608
            conn.rollback()


# --- the ORM ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_engine(database):
    engine = create_engine(database.url(Role.APP), pool_size=2, max_overflow=0)
    yield engine
    engine.dispose()


def _model_and_column(table: str):
    model = MODELS[table]
    return model, getattr(model, MODEL_TENANT_TABLES[table])


@pytest.mark.parametrize("table", sorted(MODEL_TENANT_TABLES))
def test_orm_in_tenant_scope_sees_and_changes_only_its_own_rows(app_engine, tenants, table):
    (org_a, org_b, _), _parents = tenants
    model, column = _model_and_column(table)
    with Session(app_engine) as session, tenant_scope(session, org_a):
        assert set(session.scalars(select(column).distinct())) == {org_a}
        assert session.execute(update(model).where(column == org_b).values({column: column})).rowcount == 0
        assert session.execute(delete(model).where(column == org_b)).rowcount == 0
        session.rollback()
        # Each new transaction of the session is scoped again.
        assert session.scalar(select(func.count()).select_from(model).where(column == org_b)) == 0


@pytest.mark.parametrize("table", sorted(MODEL_TENANT_TABLES))
def test_orm_cannot_move_a_row_to_another_tenant(app_engine, tenants, table):
    (org_a, org_b, _), _parents = tenants
    model, column = _model_and_column(table)
    with Session(app_engine) as session, tenant_scope(session, org_a):
        with pytest.raises(ProgrammingError, match="row-level security"):
            session.execute(update(model).values({column: org_b}))
            session.flush()


def test_orm_insert_for_another_tenant_is_rejected(app_engine, tenants):
    (org_a, org_b, _), _parents = tenants
    with Session(app_engine) as session, tenant_scope(session, org_a):
        with pytest.raises(ProgrammingError, match="row-level security"):
            session.execute(insert(models.Workflow).values(org_id=org_b, name="intruder"))


def test_orm_without_a_scope_sees_nothing(app_engine, tenants):
    with Session(app_engine) as session:
        for table in MODEL_TENANT_TABLES:
            model, _column = _model_and_column(table)
            assert session.scalar(select(func.count()).select_from(model)) == 0


def test_a_pooled_connection_never_carries_a_tenant_over(app_engine, tenants):
    """1,200 transactions from 4 threads over a pool of 2 connections, alternating tenants and
    sometimes none: every transaction sees only its own organization's rows."""
    orgs, _ = tenants
    wrong: list[str] = []
    transactions = 0
    lock = threading.Lock()

    def worker(offset: int) -> None:
        nonlocal transactions
        for i in range(300):
            org = None if (i + offset) % 5 == 0 else orgs[(i + offset) % len(orgs)]
            with Session(app_engine) as session:
                if org is None:
                    seen = set(session.scalars(select(models.Workflow.org_id)))
                    problem = seen and f"unscoped transaction saw {seen}"
                else:
                    with tenant_scope(session, org):
                        seen = set(session.scalars(select(models.Workflow.org_id)))
                    problem = seen != {org} and f"scoped to {org} saw {seen}"
            with lock:
                transactions += 1
                if problem:
                    wrong.append(problem)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert transactions == 1200
    assert wrong == []
    assert app_engine.pool.size() == 2


def test_leaving_a_scope_ends_it_inside_the_same_transaction(app_engine, tenants):
    (org_a, org_b, _), _parents = tenants
    with Session(app_engine) as session:
        with tenant_scope(session, org_a):
            assert session.scalar(select(func.count()).select_from(models.Workflow)) >= 1
            with tenant_scope(session, org_b):
                assert set(session.scalars(select(models.Workflow.org_id))) == {org_b}
            assert set(session.scalars(select(models.Workflow.org_id))) == {org_a}
        assert session.scalar(select(func.count()).select_from(models.Workflow)) == 0


def test_a_malformed_org_id_is_refused_before_any_query(app_engine):
    with Session(app_engine) as session, pytest.raises(ValueError):
        with tenant_scope(session, "not-a-uuid"):
            pass


def test_a_user_scope_reads_only_that_users_memberships_and_organizations(app_engine, tenants):
    (org_a, org_b, org_c), parents = tenants
    user_a = parents[org_a]["user"]
    with Session(app_engine) as session, user_scope(session, user_a):
        assert set(session.scalars(select(models.Membership.org_id))) == {org_a}
        assert set(session.scalars(select(models.Organization.id))) == {org_a}
        # Reading is all a user scope grants: no tenant table opens up, no write passes.
        assert session.scalar(select(func.count()).select_from(models.Workflow)) == 0
        assert session.execute(update(models.Organization).values(name="renamed")).rowcount == 0
        with pytest.raises(ProgrammingError, match="row-level security"):
            session.execute(insert(models.Membership).values(org_id=org_b, user_id=user_a, role="owner"))


def test_user_and_tenant_scopes_combine_without_widening(app_engine, tenants):
    (org_a, org_b, _), parents = tenants
    with Session(app_engine) as session, user_scope(session, parents[org_a]["user"]):
        with tenant_scope(session, org_b):
            # Org B's own rows, plus user A's own membership (in org A): never another user's in A.
            seen = {(m.org_id, m.user_id) for m in session.scalars(select(models.Membership))}
            assert seen == {(org_b, parents[org_b]["user"]), (org_a, parents[org_a]["user"])}
