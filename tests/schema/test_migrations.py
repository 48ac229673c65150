"""Migrations go up from empty, all the way down, and up again; and they match the models."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import IntegrityError

from nectar.schema import models  # noqa: F401 - registers every table
from nectar.schema.migrate import downgrade, head_revision, upgrade
from nectar.schema.migrations.env_filters import include_name
from nectar.shared.config import Role
from nectar.shared.database import Base


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
