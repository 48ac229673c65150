"""Migrations go up from empty, all the way down, and up again; and they match the models."""

import uuid

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import IntegrityError

from nectar.schema import models  # noqa: F401 - registers every table
from nectar.schema.migrate import alembic_config, downgrade, head_revision, upgrade
from nectar.schema.migrations.env_filters import include_name
from nectar.shared.config import Role
from nectar.shared.database import Base
from tests.conftest import DatabaseUnderTest
from tests.schema.tenant_rows import ensure_catalog, seed_tenant


@pytest.fixture
def empty_database(pg_server, request):
    name = f"nectar_migrations_{request.node.name[:20].lower()}"
    pg_server.drop_database(name)
    pg_server.create_database(name)
    yield pg_server.url(Role.OWNER, name)
    pg_server.drop_database(name)


def _tables(url) -> set[str]:
    engine = create_engine(url)
    try:
        return {name for name in inspect(engine).get_table_names() if not name.startswith("procrastinate_")}
    finally:
        engine.dispose()


def test_upgrade_from_empty_downgrade_to_base_and_upgrade_again(empty_database):
    model_tables = {table.name for table in Base.metadata.sorted_tables}
    upgrade(empty_database)
    assert _tables(empty_database) == model_tables | {"alembic_version"}
    downgrade(empty_database, "base")
    assert _tables(empty_database) == {"alembic_version"}
    upgrade(empty_database)
    assert _tables(empty_database) == model_tables | {"alembic_version"}


def test_the_migrated_schema_matches_the_models(database):
    engine = create_engine(database.url(Role.OWNER))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_name": include_name}
            )
            assert context.get_current_revision() == head_revision()
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_a_foreign_key_migration_checks_every_existing_row(empty_database):
    """0010 replaces a run's three references with one to its workflow's version. Row-level
    security is forced on the owner, so unless the migration lifts it, the check of existing rows
    sees none and accepts a run whose version belongs to another workflow."""
    upgrade(empty_database, "0009")
    tables = ("organizations", "workflows", "workflow_versions", "workflow_runs")
    engine = create_engine(empty_database)
    try:
        with engine.begin() as conn:
            for table in tables:
                conn.exec_driver_sql(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
            org = conn.exec_driver_sql(
                "INSERT INTO organizations (name, slug) VALUES ('M', 'm') RETURNING id"
            ).scalar()
            versions = []
            for name in ("a", "b"):
                workflow = conn.exec_driver_sql(
                    "INSERT INTO workflows (org_id, name) VALUES (%s, %s) RETURNING id", (org, name)
                ).scalar()
                version = conn.exec_driver_sql(
                    "INSERT INTO workflow_versions (org_id, workflow_id, version, definition) "
                    "VALUES (%s, %s, 1, '{}') RETURNING id",
                    (org, workflow),
                ).scalar()
                versions.append((workflow, version))
            (workflow_a, _), (_, version_b) = versions
            conn.exec_driver_sql(  # allowed by 0009's keys: the version is the organization's
                "INSERT INTO workflow_runs (org_id, workflow_id, version_id, trigger) VALUES (%s, %s, %s, 'http')",
                (org, workflow_a, version_b),
            )
            for table in tables:
                conn.exec_driver_sql(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    finally:
        engine.dispose()
    with pytest.raises(IntegrityError, match="fk_workflow_runs_org_id_workflow_versions"):
        upgrade(empty_database, "0010")


def _row_counts(conn) -> dict[str, int]:
    """Rows of each table the database has at its revision (the models may know later ones)."""
    return {
        table.name: conn.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0]  # noqa: S608
        for table in Base.metadata.sorted_tables
        if conn.execute("SELECT to_regclass(%s)", (table.name,)).fetchone()[0] is not None
    }


def _primary_key(conn, table: str) -> list[str]:
    return conn.execute(
        "SELECT ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, o) "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o) "
        "FROM pg_constraint c WHERE c.conrelid = %s::regclass AND c.contype = 'p'",
        (table,),
    ).fetchone()[0]


def test_the_citus_keys_migration_keeps_every_row_and_guarantee_up_and_down(empty_database, pg_server):
    """0031 remakes ten tenant tables' primary keys and the foreign keys that point at them. On a
    database with rows in every table, going up and coming down keeps every row, and the keys
    still refuse a reference across organizations and still cascade."""
    before = ScriptDirectory.from_config(alembic_config()).get_revision("0031").down_revision
    upgrade(empty_database, before)
    migrated = DatabaseUnderTest(pg_server, empty_database.database)
    orgs = [uuid.uuid4(), uuid.uuid4()]
    with migrated.connect(Role.ADMIN, autocommit=True) as conn:
        ensure_catalog(conn)
        parents = {org: seed_tenant(conn, org) for org in orgs}
        for org in orgs:
            conn.execute(
                "INSERT INTO workflow_schedules (workflow_id, organization_id, cron, next_run_at) "
                "VALUES (%s, %s, '* * * * *', now())",
                (parents[org]["workflow"], org),
            )
        seeded = _row_counts(conn)
        assert _primary_key(conn, "workflow_runs") == ["id"]

    upgrade(empty_database, "0031")
    org_a, org_b = orgs
    with migrated.connect(Role.ADMIN, autocommit=True) as conn:
        assert _row_counts(conn) == seeded
        assert _primary_key(conn, "workflow_runs") == ["org_id", "id"]
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO workflow_run_events (org_id, run_id, name, source) VALUES (%s, %s, 'x', 'api')",
                (org_a, parents[org_b]["run"]),
            )
        # A schedule whose workflow is gone: nothing cascades to it now; going down removes it.
        conn.execute(
            "INSERT INTO workflow_schedules (workflow_id, organization_id, cron, next_run_at) "
            "VALUES (%s, %s, '* * * * *', now())",
            (uuid.uuid4(), org_a),
        )

    downgrade(empty_database, before)
    with migrated.connect(Role.ADMIN, autocommit=True) as conn:
        assert _row_counts(conn) == seeded
        assert _primary_key(conn, "workflow_runs") == ["id"]

    upgrade(empty_database, "0031")
    with migrated.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute("DELETE FROM organizations WHERE id = %s", (org_b,))
        left = _row_counts(conn)
        assert left["workflow_schedules"] == 1 and left["workflow_run_events"] == 1
        assert (
            conn.execute("SELECT count(*) FROM workflow_runs WHERE org_id = %s", (org_a,)).fetchone()[0] == 1
        )
