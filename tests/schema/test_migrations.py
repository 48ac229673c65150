"""Migrations go up from empty, all the way down, and up again; and they match the models."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

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
